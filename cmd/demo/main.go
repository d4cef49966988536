// Command demo tells txstream's story end to end on one machine: a Kafka
// broker, a producer feeding CSV transactions, and the consumer failing,
// restarting from its checkpoint and still producing every transaction
// exactly once; then a job that keeps failing until its restart strategy
// gives up (Flink's checkpointing tutorial). Run it with `make demo`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

var (
	bold  = "\033[1m"
	dim   = "\033[2m"
	green = "\033[32m"
	red   = "\033[31m"
	cyan  = "\033[36m"
	reset = "\033[0m"
)

type demo struct {
	bin, work, data string
	fast            bool
	broker          string
	httpAddr        string
	mu              sync.Mutex
	procs           []*exec.Cmd
	out             io.Writer
}

func main() {
	fast := flag.Bool("fast", false, "shorter delays (for tests): same story, less waiting")
	work := flag.String("work", ".demo", "working directory, recreated on each run (a non-empty directory the demo did not create is refused)")
	data := flag.String("data", "testdata/transactions.csv", "CSV transactions to feed")
	httpAddr := flag.String("http", "127.0.0.1:8081", "consumer status page address during scenario 1")
	flag.Parse()
	if fi, err := os.Stdout.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		bold, dim, green, red, cyan, reset = "", "", "", "", "", ""
	}
	exe, err := os.Executable()
	if err != nil {
		fatal(err)
	}
	d := &demo{bin: filepath.Dir(exe), work: *work, data: *data, fast: *fast, httpAddr: *httpAddr, out: os.Stdout}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := d.run(ctx)
	d.killAll()
	os.Exit(code)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) step(n int, title string) {
	d.say("\n%s%s== %d. %s%s", bold, cyan, n, title, reset)
}

// workMarker marks a working directory as the demo's own, which a later
// run may delete.
const workMarker = ".txstream-demo"

// recreateWork empties the working directory: only one that is absent,
// empty or marked as the demo's, never a directory -work happened to name.
func recreateWork(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("-work %s: %w", dir, err)
	case len(ents) > 0:
		if _, err := os.Stat(filepath.Join(dir, workMarker)); err != nil {
			return fmt.Errorf("-work %s: not empty and not a demo working directory (no %s in it); name a new or empty directory", dir, workMarker)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, workMarker), []byte("txstream demo working directory: `demo` deletes it at its next run\n"), 0o640)
}

func (d *demo) run(ctx context.Context) int {
	expected, err := synth.ExpectedFile(d.data)
	if err != nil {
		fatal(fmt.Errorf("reading %s: %w", d.data, err))
	}
	if err := recreateWork(d.work); err != nil {
		fatal(err)
	}
	d.say("%stxstream demo%s: exactly-once stateful stream processing with checkpoints, on one machine.", bold, reset)
	d.say("Everything runs under %s and is stopped at the end (also on Ctrl-C).", d.work)
	d.say("%sTerms: a Kafka topic is a log of records, split into partitions; an offset is a record's position in its", dim)
	d.say("partition; a checkpoint is a saved copy of the consumer's state with the offsets it reflects; exactly-once")
	d.say("means every transaction shows up in the output once, even when the consumer crashes and replays.%s", reset)

	d.step(1, "Start a Kafka broker")
	d.say("A development broker (franz-go's kfake speaking the Kafka protocol) stands in for a Kafka cluster.")
	if err := d.startBroker(ctx); err != nil {
		d.say("%scannot start the broker: %v%s", red, err, reset)
		return 1
	}
	d.say("broker ready at %s", d.broker)

	d.step(2, "Scenario 1: a transient fault, recovered exactly-once")
	d.say("The consumer checkpoints its state every %s. A deliberately injected bug throws at the 5th record it", d.checkpointInterval())
	d.say("processes (in its first attempt only). The restart strategy waits, restores the last checkpoint, replays")
	d.say("what came after it without output, and carries on. The producer sends the first 10 rows slowly,")
	d.say("like the Flink tutorial, then the rest of %s quickly.", d.data)
	ok, err := d.scenario1(ctx, expected)
	if err != nil {
		d.say("%sscenario 1 failed: %v%s", red, err, reset)
		return 1
	}

	d.step(3, "Scenario 2: a persistent fault, the job ends FAILED")
	d.say("Same bug, every attempt. fixed-delay restart strategy: 3 restarts, %s apart, then FAILED and a", d.delay())
	d.say("non-zero exit code so that systemd or Kubernetes can take over.")
	code, outCount, err := d.scenario2(ctx)
	if err != nil {
		d.say("%sscenario 2 failed: %v%s", red, err, reset)
		return 1
	}

	d.step(4, "The checkpoint directory")
	d.say("Like the tutorial's `ls /tmp/flink-checkpoints`: each snapshot holds a partition's state and the offset it reflects.")
	d.say("%s$ consumer checkpoints list %s%s", dim, filepath.Join(d.work, "checkpoints"), reset)
	list := exec.CommandContext(ctx, filepath.Join(d.bin, "consumer"), "checkpoints", "list", filepath.Join(d.work, "checkpoints"))
	list.Stdout, list.Stderr = d.out, d.out
	_ = list.Run()

	d.step(5, "Summary")
	mark := func(b bool) string {
		if b {
			return green + "YES" + reset
		}
		return red + "NO" + reset
	}
	d.say("scenario 1: every transaction exactly once, totals exact: %s", mark(ok))
	d.say("scenario 2: job FAILED after 3 restarts, exit code %d (3 = FAILED): %s; output committed after the failure: %d", code, mark(code == 3), outCount)
	if ok && code == 3 && outCount == 0 {
		d.say("%sdemo passed%s", green, reset)
		return 0
	}
	d.say("%sdemo FAILED%s", red, reset)
	return 1
}

func (d *demo) delay() time.Duration {
	if d.fast {
		return time.Second
	}
	return 5 * time.Second
}

func (d *demo) startBroker(ctx context.Context) error {
	addrFile := filepath.Join(d.work, "broker.addr")
	logf, err := os.Create(filepath.Join(d.work, "broker.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.bin, "devbroker"), "--addr", "127.0.0.1:0", "--addr-file", addrFile,
		"--data-dir", filepath.Join(d.work, "broker"), "--topics", "transactions", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := d.start(cmd); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil {
			d.broker = strings.TrimSpace(string(b))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("broker did not report its address within 15 s (see " + logf.Name() + ")")
}

func (d *demo) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.mu.Lock()
	d.procs = append(d.procs, cmd)
	d.mu.Unlock()
	return nil
}

func (d *demo) killAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.procs {
		if c.Process != nil && c.ProcessState == nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		}
	}
	for _, c := range d.procs {
		if c.ProcessState != nil {
			continue
		}
		done := make(chan struct{})
		go func(c *exec.Cmd) { _ = c.Wait(); close(done) }(c)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
	}
}

// consumer starts the consumer with the demo's settings and streams the
// interesting events of its JSON log, rewritten for people.
// The returned channel is closed when the process has exited and its log
// has been narrated; the exit code is then in *code.
func (d *demo) consumer(ctx context.Context, name, ckDir string, running chan<- struct{}, extra ...string) (<-chan struct{}, *int, error) {
	args := []string{"--brokers", d.broker, "--log-format", "json",
		"--data-dir", filepath.Join(d.work, name, "data"),
		"--checkpoint-dir", filepath.Join(d.work, ckDir),
		"--instance-id", name, "--commit-interval", "1s", "--checkpoint-interval", d.checkpointInterval().String(),
		"--restart-delay", d.delay().String()}
	args = append(args, extra...)
	cmd := exec.Command(filepath.Join(d.bin, "consumer"), args...)
	logf, err := os.Create(filepath.Join(d.work, name+".log"))
	if err != nil {
		return nil, nil, err
	}
	pr, pw := io.Pipe()
	cmd.Stdout = logf
	cmd.Stderr = io.MultiWriter(logf, pw)
	if err := d.start(cmd); err != nil {
		return nil, nil, err
	}
	narrated := make(chan struct{})
	go func() {
		defer close(narrated)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if running != nil && strings.Contains(sc.Text(), `"to":"RUNNING"`) {
				close(running)
				running = nil
			}
			if line := narrate(sc.Bytes()); line != "" {
				d.say("   %sconsumer%s %s", dim, reset, line)
			}
		}
	}()
	code := new(int)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		*code = cmd.ProcessState.ExitCode()
		_ = pw.Close()
		<-narrated
		logf.Close()
		close(done)
	}()
	return done, code, nil
}

// narrate turns the consumer's structured log into the demo's commentary.
func narrate(b []byte) string {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	msg, _ := m["msg"].(string)
	str := func(k string) string { v, _ := m[k].(string); return v }
	num := func(k string) int64 { v, _ := m[k].(float64); return int64(v) }
	switch {
	case strings.HasPrefix(msg, "job ") && strings.Contains(msg, "->"):
		to := str("to")
		color := green
		if to == "RESTARTING" || to == "FAILED" {
			color = red
		}
		s := fmt.Sprintf("%sjob %s -> %s%s%s", bold, str("from"), color, to, reset)
		if c := str("cause"); c != "" {
			s += fmt.Sprintf(" (attempt %d: %s)", num("attempt"), c)
		}
		return s
	case msg == "recovering partition" && str("from") == "empty" && num("replay_records") == 0:
		return ""
	case msg == "recovering partition":
		return fmt.Sprintf("partition %d: restore %s, committed offset %d, replay %d record(s) without output",
			num("partition"), str("from"), num("committed"), num("replay_records"))
	case msg == "snapshot published":
		return fmt.Sprintf("%scheckpoint: partition %d at offset %d (%d bytes written)%s", dim, num("partition"), num("offset"), num("bytes_written"), reset)
	case msg == "idle, finishing":
		return "input is idle: final checkpoint, then exit"
	case msg == "job FAILED":
		return fmt.Sprintf("%sgave up: %s (exit code %d)%s", red, str("error"), num("exit_code"), reset)
	case msg == "http listening":
		return fmt.Sprintf("status page: http://%s/", str("addr"))
	}
	return ""
}

// produce feeds a CSV file through the producer binary.
func (d *demo) produce(ctx context.Context, file string, rate string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "producer"), "--brokers", d.broker, "--topic", "transactions",
		"--file", file, "--rate", rate, "--log-format", "json")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("producer: %v: %s", err, lastLine(out))
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// splitCSV writes the header plus rows [from, to) of the data file.
func (d *demo) splitCSV(name string, from, to int) (string, error) {
	b, err := os.ReadFile(d.data)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if to < 0 || to > len(lines)-1 {
		to = len(lines) - 1
	}
	path := filepath.Join(d.work, name)
	body := lines[0] + "\n" + strings.Join(lines[1+from:1+to], "\n") + "\n"
	return path, os.WriteFile(path, []byte(body), 0o640)
}

func (d *demo) scenario1(ctx context.Context, exp *synth.Result) (bool, error) {
	first, err := d.splitCSV("first.csv", 0, 10)
	if err != nil {
		return false, err
	}
	rest, err := d.splitCSV("rest.csv", 10, -1)
	if err != nil {
		return false, err
	}
	httpAddr := d.httpAddr
	if ln, err := net.Listen("tcp", httpAddr); err == nil {
		ln.Close()
	} else {
		httpAddr = "127.0.0.1:0"
	}
	running := make(chan struct{})
	done, code, err := d.consumer(ctx, "job1", "checkpoints", running, "--fail-at-record", "5", "--fail-times", "1",
		"--exit-when-idle", d.idle().String(), "--http", httpAddr)
	if err != nil {
		return false, err
	}
	// Feed it only once it runs, so that the 5th record comes after its
	// first checkpoints, as in the tutorial.
	select {
	case <-running:
	case <-done:
		return false, fmt.Errorf("consumer exited with code %d before running (log: %s)", *code, filepath.Join(d.work, "job1.log"))
	case <-ctx.Done():
		return false, ctx.Err()
	}
	firstRate := "1"
	if d.fast {
		firstRate = "2"
	}
	if err := d.produce(ctx, first, firstRate); err != nil {
		return false, err
	}
	d.say("   %sproducer%s sent the first 10 rows; now the remaining %d", dim, reset, exp.Rows-10)
	if err := d.produce(ctx, rest, "2000"); err != nil {
		return false, err
	}
	if err := d.sendBadRecords(ctx); err != nil {
		return false, err
	}
	d.say("   %sanother client%s sent 3 malformed records straight to the topic (as kcat might)", dim, reset)
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-done:
	}
	if *code != 0 {
		return false, fmt.Errorf("consumer exited with code %d (log: %s)", *code, filepath.Join(d.work, "job1.log"))
	}

	got, err := readOutput(ctx, d.broker, "transactions-out", "transactions-dlq")
	if err != nil {
		return false, err
	}
	return d.compare(exp, got), nil
}

func (d *demo) checkpointInterval() time.Duration {
	if d.fast {
		return time.Second
	}
	return 2 * time.Second
}

func (d *demo) idle() time.Duration {
	if d.fast {
		return 3 * time.Second
	}
	return 6 * time.Second
}

func (d *demo) sendBadRecords(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.broker), kgo.DefaultProduceTopic("transactions"))
	if err != nil {
		return err
	}
	defer cl.Close()
	bad := []string{"TX-BAD-1,ACC-001,twelve euros,2024-01-01T12:00:00Z", ",ACC-002,5.00,2024-01-01T12:00:01Z", "TX-BAD-3,ACC-003"}
	for _, v := range bad {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("bad"), Value: []byte(v)}).FirstErr(); err != nil {
			return err
		}
	}
	return nil
}

// readOutput reads what a read_committed consumer of the output topics
// sees, until it has been quiet for a while, into synth's output checker.
func readOutput(ctx context.Context, broker, outTopic, dlqTopic string) (*synth.OutputChecker, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(outTopic, dlqTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	c := synth.NewOutputChecker()
	for quiet := 0; quiet < 2; {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n := 0
		var perr error
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if r.Topic == dlqTopic {
				// The consumer names a dead letter's input record in
				// txstream-source-{topic,partition,offset} headers.
				var src []string
				for _, h := range r.Headers {
					if strings.HasPrefix(h.Key, "txstream-source-") {
						src = append(src, string(h.Value))
					}
				}
				c.AddDeadLetter(strings.Join(src, "/"))
				return
			}
			if err := c.AddOutput(r.Value); err != nil && perr == nil {
				perr = err
			}
		})
		if perr != nil {
			return nil, perr
		}
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return c, nil
}

// compare checks the output against the expected result (synth's oracle)
// and prints expected and actual side by side.
func (d *demo) compare(exp *synth.Result, got *synth.OutputChecker) bool {
	// The producer rejected the file's bad rows before Kafka; the three
	// malformed records of sendBadRecords went straight to the topic.
	rep := got.Check(exp, synth.CheckOptions{BadRowsFiltered: true, ExtraDeadLetters: 3})
	d.say("")
	d.say("   %-28s %12s %12s", "", "expected", "actual")
	row := func(name string, e, a any, good bool) {
		m := green + "ok" + reset
		if !good {
			m = red + "MISMATCH" + reset
		}
		d.say("   %-28s %12v %12v  %s", name, e, a, m)
	}
	row("output records", exp.Valid, rep.Records, rep.Records == exp.Valid)
	row("transaction ids output twice", 0, len(rep.Repeated), len(rep.Repeated) == 0)
	row("running aggregates wrong", 0, rep.WrongRunning, rep.WrongRunning == 0)
	row("dead-letter records", rep.WantDeadLetters, rep.DeadLetters, rep.DeadLetters == rep.WantDeadLetters)
	d.say("   %s(the producer rejected %d bad rows before Kafka; the consumer dropped %d exact duplicates)%s", dim, exp.Bad, exp.Duplicates, reset)
	d.say("")
	d.say("   %-10s %22s %22s", "account", "expected count / total", "actual count / total")
	for _, a := range rep.Accounts {
		m := green + "ok" + reset
		if !a.OK {
			m = red + "MISMATCH" + reset
		}
		total := a.Total
		if total == "" {
			total = "-"
		}
		d.say("   %-10s %8d / %12s %8d / %12s  %s", a.Account, a.WantCount, a.WantTotal, a.Count, total, m)
	}
	for _, p := range rep.Problems {
		d.say("   %s%s%s", red, p, reset)
	}
	return rep.OK()
}

func (d *demo) scenario2(ctx context.Context) (int, int, error) {
	done, code, err := d.consumer(ctx, "job2", "checkpoints-job2", nil, "--group", "demo-failing", "--output-topic", "failing-out",
		"--dlq-topic", "failing-dlq", "--fail-at-record", "5", "--restart-attempts", "3", "--http", "")
	if err != nil {
		return 0, 0, err
	}
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-done:
	}
	got, err := readOutput(ctx, d.broker, "failing-out", "failing-dlq")
	if err != nil {
		return 0, 0, err
	}
	d.say("   the failing job's committed output: %d records (nothing after the failure point)", got.Records())
	return *code, got.Records(), nil
}
