package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// findChromium returns the browser to drive: $TXSTREAM_CHROMIUM, or the
// first of Debian's chromium and the usual Chrome names on PATH. Without
// one the test is skipped, except in CI (CI set), where it fails: CI
// installs chromium (.ci/run).
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TXSTREAM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "no Chromium on PATH (install Debian's chromium: apt-get install chromium; or set TXSTREAM_CHROMIUM)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + ": required when CI is set")
	}
	t.Skip(msg)
	return ""
}

// splitCSV writes the header plus data rows [from, to) of src to a new file.
func splitCSV(t *testing.T, src string, from, to int) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := filepath.Join(t.TempDir(), "part-"+strconv.Itoa(from)+".csv")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	sc := bufio.NewScanner(in)
	for i := -1; sc.Scan(); i++ {
		if i == -1 || (i >= from && i < to) {
			w.WriteString(sc.Text() + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDashboardInBrowser drives headless Chromium against a real consumer:
// the page loads without console errors, shows RUNNING, RESTARTING after an
// injected failure and RUNNING again, and its charts have data points. The
// screenshot is saved in the test's temp dir (and, with
// TXSTREAM_UPDATE_DASHBOARD_PNG=1, copied to docs/dashboard.png).
func TestDashboardInBrowser(t *testing.T) {
	chromium := findChromium(t)
	bins := buildBinaries(t)
	broker := startBroker(t, "", "--topics", "transactions", "--partitions", "3")

	const first, total = 1500, 4500
	all := genCSV(t, bins, total, "--dup-fraction", "0.01", "--accounts", "20")
	batchA, batchB := splitCSV(t, all, 0, first), splitCSV(t, all, first, total)

	// The first batch is processed before the page opens; the failure
	// (record 3000 of the first attempt) comes with the second batch.
	produce(t, bins, broker.Addr, batchA)
	c := startStatusConsumer(t, bins, broker.Addr, "--fail-at-record", "3000", "--fail-times", "1", "--restart-delay", "3s")
	base := c.URL()
	waitRecordsIn(t, base, first, 45*time.Second)
	// A few seconds of server-side history before the page opens: a fresh
	// page must draw it at once.
	for deadline := time.Now().Add(15 * time.Second); ; {
		var ts struct{ Samples []json.RawMessage }
		getJSON(t, base+"/api/v1/timeseries", &ts)
		if len(ts.Samples) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d time-series samples after 15s", len(ts.Samples))
		}
		time.Sleep(100 * time.Millisecond)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1440, 900),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()
	ctx, cancelTimeout := context.WithTimeout(ctx, 75*time.Second)
	defer cancelTimeout()

	var (
		consoleMu sync.Mutex
		problems  []string
	)
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch {
			case m.Type == chromedp.ConsoleError || m.IsException():
				consoleMu.Lock()
				problems = append(problems, m.String())
				consoleMu.Unlock()
			case m.Type == chromedp.ConsoleWarning:
				t.Logf("browser console: %s", m)
			}
		}
	}()

	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("opening the dashboard: %v", err)
	}
	waitState := func(state string, within time.Duration) {
		t.Helper()
		expr := `document.getElementById('state').dataset.state === ` + strconv.Quote(state)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(within))); err != nil {
			got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('state').dataset.state`))
			t.Fatalf("the page did not show %s within %v (shows %q): %v", state, within, got, err)
		}
		t.Logf("page shows %s", state)
	}
	waitState("RUNNING", 15*time.Second)
	if n := evalInt(t, ctx, `+document.getElementById('chart-throughput').dataset.points || 0`); n < 2 {
		// The server keeps history: a fresh page has a chart at once.
		t.Errorf("throughput chart has %d points right after load, want history", n)
	}

	// Second batch, paced, from another goroutine while the test watches.
	prodDone := make(chan error, 1)
	go func() {
		cmd := exec.Command(bins.Path("producer"), "--brokers", broker.Addr, "--topic", "transactions",
			"--file", batchB, "--progress", "off", "--rate", "1500")
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("producer (second batch): %v\n%s", err, tail(string(out), 2000))
		}
		prodDone <- err
	}()
	waitState("RESTARTING", 20*time.Second)
	waitState("RUNNING", 20*time.Second)
	if err := <-prodDone; err != nil {
		t.Fatal(err)
	}
	if got := evalString(t, ctx, `document.getElementById('attempt').textContent`); got != "2" {
		t.Errorf("attempt shown %q, want 2", got)
	}
	waitRecordsIn(t, base, total, 45*time.Second)

	// Let the page refresh a few times so the charts carry the whole story
	// (and a snapshot after the restart).
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`+document.getElementById('chart-snapdur').dataset.points >= 4 &&
		document.getElementById('k-in').title === `+strconv.Quote(commas(total)),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Errorf("snapshot chart/records-in KPI not updated: points %d, records in %q",
			evalInt(t, ctx, `+document.getElementById('chart-snapdur').dataset.points || 0`),
			evalString(t, ctx, `document.getElementById('k-in').title`))
	}
	time.Sleep(3 * time.Second)

	checks := map[string]int{
		`+document.getElementById('chart-throughput').dataset.points || 0`:              5,
		`+document.getElementById('chart-lag').dataset.points || 0`:                     5,
		`+document.getElementById('chart-snapdur').dataset.points || 0`:                 1,
		`+document.getElementById('chart-snapbytes').dataset.points || 0`:               1,
		`document.querySelectorAll('#chart-throughput path.line').length`:               2,
		`+document.getElementById('timeline').dataset.segments || 0`:                    4, // CREATED, RUNNING, RESTARTING, RUNNING
		`document.querySelectorAll('#partitions tbody tr').length`:                      3,
		`document.querySelectorAll('#checkpoints tbody tr').length`:                     1,
		`document.querySelectorAll('#transitions li').length`:                           3,
		`document.getElementById('failure').hidden ? 0 : 1`:                             1,
		`document.getElementById('transitions').textContent.includes('RESTARTING')?1:0`: 1,
	}
	for expr, min := range checks {
		if got := evalInt(t, ctx, expr); got < min {
			t.Errorf("%s = %d, want at least %d", expr, got, min)
		}
	}
	if got := evalString(t, ctx, `document.getElementById('failure-cause').textContent`); !strings.Contains(got, "--fail-at-record") {
		t.Errorf("last failure shown as %q", got)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot: %s (%d bytes)", shot, len(png))
	if os.Getenv("TXSTREAM_UPDATE_DASHBOARD_PNG") == "1" {
		dst := bins.RepoPath("docs/dashboard.png")
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("copied to %s", dst)
	}

	consoleMu.Lock()
	defer consoleMu.Unlock()
	for _, p := range problems {
		t.Errorf("browser console: %s", p)
	}
}

func waitRecordsIn(t *testing.T, base string, want int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var pa partitionsAnswer
		getJSON(t, base+"/api/v1/partitions", &pa)
		if pa.Totals.RecordsIn >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records_in %d of %d after %v", pa.Totals.RecordsIn, want, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func evalInt(t *testing.T, ctx context.Context, expr string) int {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return int(v)
}

func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// commas formats n as en-US does (4500 -> "4,500").
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
