package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/txstream/txstream/synth"
)

// statusConsumer is a consumer daemon process with its HTTP server on a
// free loopback port (--http 127.0.0.1:0, address read from
// TXSTREAM_HTTP_ADDR_FILE).
type statusConsumer struct {
	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	HTTP    string // host:port
	logPath string
}

// startStatusConsumer starts the consumer against broker with its own data
// and checkpoint directories; extra flags are appended. It is stopped
// (SIGTERM, then SIGKILL) when the test ends.
func startStatusConsumer(t testing.TB, bins *Binaries, broker string, extra ...string) *statusConsumer {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "http.addr")
	c := &statusConsumer{t: t, done: make(chan struct{}), logPath: filepath.Join(dir, "consumer.log")}
	args := []string{"--brokers", broker, "--topic", "transactions", "--group", "it-status",
		"--instance-id", "it-status-0", "--data-dir", filepath.Join(dir, "data"), "--checkpoint-dir", filepath.Join(dir, "ckpt"),
		"--http", "127.0.0.1:0", "--log-format", "json", "--checkpoint-interval", "1s", "--commit-interval", "300ms",
		"--session-timeout", "10s"}
	args = append(args, extra...)
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bins.Path("consumer"), args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append(os.Environ(), "TXSTREAM_HTTP_ADDR_FILE="+addrFile)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); logf.Close(); close(c.done) }()
	t.Cleanup(func() {
		c.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("consumer log (tail):\n%s", tail(c.Logs(), 4000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			c.HTTP = strings.TrimSpace(string(b))
			break
		}
		select {
		case <-c.done:
			t.Fatalf("consumer exited during start-up (%v):\n%s", c.cmd.ProcessState, tail(c.Logs(), 4000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer did not write its HTTP address within 30s:\n%s", tail(c.Logs(), 4000))
		}
	}
	if !strings.Contains(c.Logs(), `"msg":"http listening"`) || !strings.Contains(c.Logs(), c.HTTP) {
		t.Errorf("the consumer did not log its HTTP address at info")
	}
	return c
}

// URL is the base URL of the consumer's HTTP server.
func (c *statusConsumer) URL() string { return "http://" + c.HTTP }

// Logs returns the consumer's output so far.
func (c *statusConsumer) Logs() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Stop sends SIGTERM and waits (SIGKILL after timeout).
func (c *statusConsumer) Stop(timeout time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Wait waits for the process to exit and returns its exit code.
func (c *statusConsumer) Wait(timeout time.Duration) (int, bool) {
	select {
	case <-c.done:
		return c.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// getJSON fetches url and decodes the JSON answer into v (if not nil).
func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %d, not JSON: %v\n%s", url, resp.StatusCode, err, body)
		}
	}
	return resp.StatusCode
}

// metricValues scrapes /metrics and returns the unlabelled samples.
func metricValues(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out
}

type partitionsAnswer struct {
	InputPartitions int `json:"input_partitions"`
	Partitions      []struct {
		Partition int32  `json:"partition"`
		Committed int64  `json:"committed_offset"`
		Lag       int64  `json:"lag"`
		Status    string `json:"status"`
	} `json:"partitions"`
	Totals struct {
		RecordsIn  int64 `json:"records_in"`
		RecordsOut int64 `json:"records_out"`
		DLQ        int64 `json:"records_dlq"`
		Duplicates int64 `json:"duplicates"`
		Lag        int64 `json:"lag"`
	} `json:"totals"`
}

// genCSV writes `rows` synthetic rows with the producer's generator.
func genCSV(t testing.TB, bins *Binaries, rows int, extra ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "rows.csv")
	args := append([]string{"gen", "--rows", strconv.Itoa(rows), "--seed", "1", "--out", out}, extra...)
	if r := runBinary(t, 60*time.Second, bins.Path("producer"), args...); r.Code != 0 {
		t.Fatalf("producer gen: exit %d\n%s", r.Code, r.Stderr)
	}
	return out
}

// produce publishes a CSV file to the input topic.
func produce(t testing.TB, bins *Binaries, broker, file string, extra ...string) {
	t.Helper()
	args := append([]string{"--brokers", broker, "--topic", "transactions", "--file", file, "--progress", "off"}, extra...)
	if r := runBinary(t, 60*time.Second, bins.Path("producer"), args...); r.Code != 0 {
		t.Fatalf("producer: exit %d\n%s", r.Code, tail(r.Stderr, 3000))
	}
}

// TestHTTPAPIAgainstConsumer runs a real consumer over 1000 generated rows
// and checks the API and metrics against what the input must give.
func TestHTTPAPIAgainstConsumer(t *testing.T) {
	bins := buildBinaries(t)
	broker := startBroker(t, "", "--topics", "transactions", "--partitions", "3")
	csv := genCSV(t, bins, 1000, "--dup-fraction", "0.03", "--bad-fraction", "0.02", "--accounts", "12")
	want, err := synth.ExpectedFile(csv)
	if err != nil {
		t.Fatal(err)
	}
	produce(t, bins, broker.Addr, csv)
	c := startStatusConsumer(t, bins, broker.Addr)
	base := c.URL()

	// The producer rejects invalid rows; every other row is an input record.
	wantIn := int64(want.Rows - want.Bad)
	var pa partitionsAnswer
	deadline := time.Now().Add(45 * time.Second)
	for {
		if code := getJSON(t, base+"/api/v1/partitions", &pa); code != 200 {
			t.Fatalf("partitions: %d", code)
		}
		if pa.Totals.RecordsIn >= wantIn && pa.Totals.Lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records_in %d of %d after 45s", pa.Totals.RecordsIn, wantIn)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if pa.Totals.RecordsIn != wantIn || pa.Totals.RecordsOut != int64(want.Valid) ||
		pa.Totals.DLQ != int64(want.Conflicts) || pa.Totals.Duplicates != int64(want.Duplicates) {
		t.Errorf("totals %+v, want in %d out %d dlq %d dup %d", pa.Totals, wantIn, want.Valid, want.Conflicts, want.Duplicates)
	}
	if pa.InputPartitions != 3 || len(pa.Partitions) != 3 {
		t.Errorf("input_partitions %d, %d partitions; want 3 owned of 3", pa.InputPartitions, len(pa.Partitions))
	}
	var committed int64
	for _, p := range pa.Partitions {
		committed += p.Committed
	}
	if committed != wantIn {
		t.Errorf("committed offsets sum to %d, want %d (one record per row)", committed, wantIn)
	}

	m := metricValues(t, base)
	for name, v := range map[string]int64{
		"txstream_records_in_total": wantIn, "txstream_records_out_total": int64(want.Valid),
		"txstream_records_dlq_total": int64(want.Conflicts), "txstream_records_duplicate_total": int64(want.Duplicates),
		"txstream_restarts_total": 0, "txstream_lag_records": 0, "txstream_partitions_owned": 3, "txstream_input_partitions": 3,
		`txstream_job_state{state="RUNNING"}`: 1, `txstream_job_state{state="RESTARTING"}`: 0,
	} {
		if got, ok := m[name]; !ok || got != float64(v) {
			t.Errorf("%s = %v (present %v), want %d", name, got, ok, v)
		}
	}
	kafkaMetrics := false
	for name := range m {
		if strings.HasPrefix(name, "txstream_kafka_") {
			kafkaMetrics = true
		}
	}
	if !kafkaMetrics {
		t.Errorf("no txstream_kafka_* client metrics: kprom hooks not installed")
	}

	// Interactive queries: every account's committed count and total.
	for _, id := range want.SortedAccounts() {
		var acc struct {
			AccountID string `json:"account_id"`
			Count     int64  `json:"count"`
			Total     string `json:"total"`
			Partition int32  `json:"partition"`
		}
		if code := getJSON(t, base+"/api/v1/state/accounts/"+id, &acc); code != 200 {
			t.Errorf("account %s: %d", id, code)
			continue
		}
		var got apd.Decimal
		if _, _, err := got.SetString(acc.Total); err != nil {
			t.Errorf("account %s total %q: %v", id, acc.Total, err)
			continue
		}
		exp := want.Accounts[id]
		if acc.Count != exp.Count || got.Cmp(&exp.Total) != 0 {
			t.Errorf("account %s: count %d total %s, want %d %s", id, acc.Count, acc.Total, exp.Count, exp.Total.Text('f'))
		}
	}
	var e map[string]any
	if code := getJSON(t, base+"/api/v1/state/accounts/NO-SUCH-ACCOUNT", &e); code != 404 || e["error"] == nil {
		t.Errorf("unknown account: %d %v", code, e)
	}

	var job struct {
		State    string         `json:"state"`
		Attempt  int            `json:"attempt"`
		Settings map[string]any `json:"settings"`
	}
	if getJSON(t, base+"/api/v1/job", &job); job.State != "RUNNING" || job.Attempt != 1 || job.Settings["topic"] != "transactions" {
		t.Errorf("job = %+v", job)
	}
	if code := getJSON(t, base+"/readyz", nil); code != 200 {
		t.Errorf("readyz: %d", code)
	}
	var ck struct {
		Counts struct{ Completed int } `json:"counts"`
	}
	deadline = time.Now().Add(15 * time.Second)
	for getJSON(t, base+"/api/v1/checkpoints", &ck); ck.Counts.Completed == 0; getJSON(t, base+"/api/v1/checkpoints", &ck) {
		if time.Now().After(deadline) {
			t.Fatalf("no completed snapshot after 15s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := getJSON(t, base+"/api/v1/nope", &e); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
	// A graceful cancel: the process drains and exits 0.
	resp, err := httpClient.Post(base+"/api/v1/job/cancel", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	code, ok := c.Wait(30 * time.Second)
	if !ok {
		t.Fatalf("consumer still running 30s after POST /api/v1/job/cancel")
	}
	if code != 0 || !strings.Contains(c.Logs(), "CANCELED") {
		t.Errorf("after cancel: exit %d, want 0 and state CANCELED", code)
	}
}
