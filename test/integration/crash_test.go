package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

// dataset is a generated CSV and its independently computed expectation.
type dataset struct {
	path  string
	lines [][]byte // data rows, header excluded
	exp   *synth.Result
}

func genDataset(t *testing.T, rows, accounts int, seed uint64) *dataset {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = rows, accounts, seed
	cfg.BadFraction, cfg.DupFraction = 0.003, 0.01
	var buf bytes.Buffer
	if _, err := synth.Generate(cfg, &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "input.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	exp, err := synth.ExpectedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(buf.Bytes(), "\n"), []byte("\n"))
	if exp.Bad == 0 || exp.Duplicates == 0 {
		t.Fatalf("dataset has %d bad rows and %d duplicates; the test needs both", exp.Bad, exp.Duplicates)
	}
	return &dataset{path: path, lines: lines[1:], exp: exp}
}

// produceRaw publishes every data row as a bare CSV line keyed by its
// account (the second field), as an independent client such as kcat would:
// bad rows reach the topic too, so the consumer's dead-letter path is
// exercised. rate 0 = as fast as possible.
func produceRaw(ctx context.Context, _ testing.TB, broker string, lines [][]byte, rate int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("transactions"),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.MaxBufferedRecords(20000))
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	var perr error
	var mu sync.Mutex
	for i, l := range lines {
		key := []byte(nil)
		if f := bytes.Split(l, []byte(",")); len(f) > 1 {
			key = f[1]
		}
		cl.Produce(ctx, &kgo.Record{Key: key, Value: l}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				perr = err
				mu.Unlock()
			}
		})
		if rate > 0 && i%1000 == 999 {
			due := start.Add(time.Duration(i+1) * time.Second / time.Duration(rate))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return perr
}

// consumerProc is one consumer process.
type consumerProc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	code int
}

func startConsumer(t *testing.T, bins *Binaries, env []string, args ...string) *consumerProc {
	t.Helper()
	cmd := exec.Command(bins.Path("consumer"), args...)
	cmd.Env = append(os.Environ(), env...)
	return runConsumer(t, cmd)
}

// runConsumer starts cmd (a consumer command line) with its output
// captured, records its exit code (128+signal when killed) and kills it at
// the end of the test.
func runConsumer(t *testing.T, cmd *exec.Cmd) *consumerProc {
	t.Helper()
	p := &consumerProc{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *consumerProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the process to exit within d; it reports whether it did.
func (p *consumerProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// consumerArgs are the settings crash tests use: short epochs and snapshot
// intervals, so that kills land between commits and during snapshots.
func consumerArgs(broker, dir, instance string, extra ...string) []string {
	args := []string{"--brokers", broker, "--log-format", "json", "--log-level", "info",
		"--http", "", "--instance-id", instance,
		"--data-dir", filepath.Join(dir, "data-"+instance), "--checkpoint-dir", filepath.Join(dir, "checkpoints"),
		"--commit-interval", "150ms", "--checkpoint-interval", "300ms", "--restart-delay", "500ms",
		"--session-timeout", "10s"}
	return append(args, extra...)
}

// outputCheck reads transactions-out and transactions-dlq read_committed,
// as any downstream consumer would, and compares them with the expectation
// computed from the CSV alone.
type outputCheck struct {
	ids      map[string]int
	lastCnt  map[string]int64
	lastTot  map[string]string
	dlq      int
	dlqSrc   map[string]int
	outCount int
	// running is each output record's running aggregate, by transaction.
	running map[string]runningAgg
}

type runningAgg struct {
	acc   string
	count int64
	total string
}

func readAll(t *testing.T, broker string) *outputCheck {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("transactions-out", "transactions-dlq"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	o := &outputCheck{ids: map[string]int{}, lastCnt: map[string]int64{}, lastTot: map[string]string{}, dlqSrc: map[string]int{},
		running: map[string]runningAgg{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for quiet := 0; quiet < 3; {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			t.Fatal("reading the output took more than 2 minutes")
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if r.Topic == "transactions-dlq" {
				o.dlq++
				var src []string
				for _, h := range r.Headers {
					if strings.HasPrefix(h.Key, "txstream-source-") {
						src = append(src, string(h.Value))
					}
				}
				o.dlqSrc[strings.Join(src, "/")]++
				return
			}
			o.outCount++
			var v struct {
				ID    string `json:"transaction_id"`
				Acc   string `json:"account_id"`
				Count int64  `json:"account_count"`
				Total string `json:"account_total"`
			}
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("output is not JSON: %v: %s", err, r.Value)
				return
			}
			o.ids[v.ID]++
			o.running[v.ID] = runningAgg{acc: v.Acc, count: v.Count, total: v.Total}
			if v.Count > o.lastCnt[v.Acc] {
				o.lastCnt[v.Acc], o.lastTot[v.Acc] = v.Count, v.Total
			}
		})
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return o
}

func (o *outputCheck) verify(t *testing.T, exp *synth.Result) {
	t.Helper()
	twice := 0
	for id, n := range o.ids {
		if n != 1 {
			twice++
			if twice <= 5 {
				t.Errorf("transaction %s output %d times", id, n)
			}
		}
	}
	if len(o.ids) != exp.Valid || twice > 0 {
		t.Errorf("output: %d distinct transactions (%d records, %d repeated), want exactly %d once each",
			len(o.ids), o.outCount, twice, exp.Valid)
	}
	// Every output record's running aggregate, not only the final ones:
	// a lost or repeated record shows up in every later aggregate of its
	// account.
	wrong := 0
	for id, got := range o.running {
		want, ok := exp.Running[id]
		var tot apd.Decimal
		_, _, err := tot.SetString(got.total)
		if !ok || got.acc != want.Account || got.count != want.Count || err != nil || tot.Cmp(&want.Total) != 0 {
			wrong++
			if wrong <= 5 {
				t.Errorf("transaction %s: output says account %s count %d total %s, a failure-free pass gives %s %d %s (known: %v)",
					id, got.acc, got.count, got.total, want.Account, want.Count, want.Total.Text('f'), ok)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d output records carry a wrong running aggregate", wrong, len(o.running))
	}
	if want := exp.Bad + exp.Conflicts; o.dlq != want || len(o.dlqSrc) != want {
		t.Errorf("dead letters: %d records from %d distinct sources, want %d once each", o.dlq, len(o.dlqSrc), want)
	}
	bad := 0
	accounts := make([]string, 0, len(exp.Accounts))
	for a := range exp.Accounts {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	for _, a := range accounts {
		e := exp.Accounts[a]
		var got apd.Decimal
		_, _, err := got.SetString(o.lastTot[a])
		if o.lastCnt[a] != e.Count || err != nil || got.Cmp(&e.Total) != 0 {
			bad++
			if bad <= 5 {
				t.Errorf("account %s: last output count %d total %s, want %d and %s", a, o.lastCnt[a], o.lastTot[a], e.Count, e.Total.Text('f'))
			}
		}
	}
	if len(o.lastCnt) != len(exp.Accounts) {
		t.Errorf("%d accounts in the output, want %d", len(o.lastCnt), len(exp.Accounts))
	}
	if bad > 0 {
		t.Errorf("%d of %d accounts have wrong aggregates", bad, len(exp.Accounts))
	}
}

// runToIdle runs a consumer until it finishes on idle input and checks it
// exited 0.
func runToIdle(t *testing.T, bins *Binaries, args []string) *consumerProc {
	t.Helper()
	p := startConsumer(t, bins, nil, append(args, "--exit-when-idle", "3s")...)
	if !p.wait(3 * time.Minute) {
		t.Fatalf("consumer did not finish within 3 minutes; log tail:\n%s", tail(p.log.String(), 4000))
	}
	if p.code != 0 {
		t.Fatalf("consumer exited %d; log tail:\n%s", p.code, tail(p.log.String(), 4000))
	}
	return p
}

// TestCrashRecoveryExactlyOnce feeds ~200k rows live while the consumer is
// killed again and again: at random moments and at named crash points
// around the transaction commit and inside snapshot writes, in both
// snapshot modes. After a last
// run to idle, the committed output must be exactly what one failure-free
// pass computes.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	bins := buildBinaries(t)
	rows := 200_000
	if testing.Short() {
		rows = 20_000
	}
	ds := genDataset(t, rows, 1000, 42)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", "transactions")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodErr := make(chan error, 1)
	// ~45 s of live input: longer than the kill sequence, so that every
	// run has records to process and its crash point is reached.
	go func() { prodErr <- produceRaw(ctx, t, broker.Addr, ds.lines, rows/45) }()

	seed := uint64(time.Now().UnixNano())
	t.Logf("random kill schedule seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	// Named crash points: the Nth pass kills the process (SIGKILL, no
	// cleanup), so each lands exactly where docs/DESIGN.md's crash table says.
	// Armed on odd runs; runs 1, 5, 9, 13 are incremental (pool GC exists
	// only there), 3, 7, 11 full.
	points := []string{"after-sink-commit:4", "before-sink-commit:3", "snapshot-copy:5", "after-state-apply:6",
		"pool-gc:1", "after-sink-commit:9", "snapshot-publish:2"}
	kills, armed := 0, 0
	var fired []string
	for i := 0; i < 14; i++ {
		var env []string
		point := ""
		if i%2 == 1 && len(points) > 0 {
			point = points[0]
			env = []string{"TXSTREAM_TEST_CRASH=" + point}
			points = points[1:]
			armed++
		}
		// Both snapshot modes, alternating in pairs of runs: every run
		// restores what a run in the other mode wrote, and GC must keep
		// the pool files incremental snapshots share.
		mode := []string{"incremental", "full"}[(i/2)%2]
		p := startConsumer(t, bins, env, consumerArgs(broker.Addr, dir, "c1", "--checkpoint-mode", mode, "--checkpoint-gc-grace", "0")...)
		if env != nil {
			// A crash point that is never reached (e.g. no GC work yet)
			// is cut short by a kill like the others.
			if p.wait(6 * time.Second) {
				fired = append(fired, point) // it killed itself at the point
			} else {
				p.kill()
			}
		} else {
			time.Sleep(time.Duration(700+rng.IntN(1800)) * time.Millisecond)
			p.kill()
		}
		if p.code != 137 {
			t.Fatalf("run %d: consumer exited %d before being killed; log tail:\n%s", i, p.code, tail(p.log.String(), 4000))
		}
		kills++
		if strings.Contains(p.log.String(), `"level":"error"`) {
			t.Logf("run %d logged errors:\n%s", i, grepLines(p.log.String(), `"level":"error"`, 5))
		}
	}
	if err := <-prodErr; err != nil {
		t.Fatalf("producing: %v", err)
	}
	t.Logf("crash points that fired: %v (of %d armed)", fired, armed)
	if len(fired) < armed-1 {
		t.Errorf("only %d of %d crash points fired: the test no longer reaches them", len(fired), armed)
	}
	final := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	if !strings.Contains(final.log.String(), "restore snapshot") && !strings.Contains(final.log.String(), `"from":"snapshot`) {
		t.Errorf("final run did not restore any snapshot; log:\n%s", grepLines(final.log.String(), "recover", 10))
	}
	t.Logf("%d kills; verifying %d rows (%d valid, %d duplicates, %d bad)", kills, rows, ds.exp.Valid, ds.exp.Duplicates, ds.exp.Bad)
	readAll(t, broker.Addr).verify(t, ds.exp)

	// The checkpoint directory is a cache: losing it costs a full replay,
	// never correctness. Delete it, add input, and check again.
	if err := os.RemoveAll(filepath.Join(dir, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	more := genDataset(t, 5000, 1000, 43)
	for i, l := range more.lines { // new transactions: ids of their own
		more.lines[i] = bytes.Replace(l, []byte("TX-"), []byte("TY-"), 1)
	}
	if err := produceRaw(ctx, t, broker.Addr, more.lines, 0); err != nil {
		t.Fatal(err)
	}
	both := combine(t, ds, more)
	p := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	if !strings.Contains(p.log.String(), `"from":"empty"`) {
		t.Errorf("expected recovery from empty state after the checkpoint dir was deleted; log:\n%s", grepLines(p.log.String(), "recover", 10))
	}
	readAll(t, broker.Addr).verify(t, both.exp)
}

// combine computes the expectation of two datasets produced one after the
// other (the second's ids may repeat the first's exactly: seeds differ, so
// they are different transactions only if their content differs).
func combine(t *testing.T, a, b *dataset) *dataset {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("transaction_id,account_id,amount,timestamp\n")
	for _, l := range a.lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	for _, l := range b.lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "both.csv")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	exp, err := synth.ExpectedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return &dataset{path: path, exp: exp}
}

func grepLines(s, sub string, max int) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}
