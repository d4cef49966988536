package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txstream/txstream/synth"
	"github.com/txstream/txstream/txcsv"
)

// These tests run the whole command in-process against kfake, franz-go's
// in-process Kafka implementation (the devbroker process is exercised by
// test/integration).

func startKfake(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

type runResult struct {
	code   int
	stdout string
	stderr string
}

func runCmd(t *testing.T, stdin io.Reader, sigs chan os.Signal, args ...string) runResult {
	t.Helper()
	var out, errb bytes.Buffer
	if sigs == nil {
		sigs = make(chan os.Signal, 2)
	}
	code := Run(args, Env{Stdin: stdin, Stdout: &out, Stderr: &errb, Signals: sigs})
	return runResult{code, out.String(), errb.String()}
}

// consume reads the whole topic (n records expected) and checks that no
// more exist.
func consume(t *testing.T, addr, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before the timeout", len(recs), n)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		recs = append(recs, fs.Records()...)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != int64(n) || len(recs) != n {
		t.Fatalf("topic holds %d records, consumed %d, want %d", total, len(recs), n)
	}
	return recs
}

func sampleFile() string { return filepath.Join("..", "testdata", "transactions.csv") }

func TestRunProducesSampleFile(t *testing.T) {
	_, addr := startKfake(t)
	rej := filepath.Join(t.TempDir(), "rejects.csv")
	r := runCmd(t, nil, nil, "--brokers", addr, "--file", sampleFile(), "--rejects", rej, "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	exp, err := synth.ExpectedFile(sampleFile())
	if err != nil {
		t.Fatal(err)
	}
	recs := consume(t, addr, "transactions", exp.Valid+exp.Duplicates)
	schema := txcsv.MustSchema(txcsv.DefaultColumns...)
	for _, rec := range recs {
		row, err := schema.ParseLine(rec.Value, 0)
		if err != nil {
			t.Fatalf("record %q does not parse: %v", rec.Value, err)
		}
		if string(rec.Key) != row.AccountID {
			t.Fatalf("key %q for account %q", rec.Key, row.AccountID)
		}
		if len(rec.Headers) != 1 || rec.Headers[0].Key != txcsv.HeaderColumns || string(rec.Headers[0].Value) != schema.Header() {
			t.Fatalf("headers %v", rec.Headers)
		}
	}
	b, _ := os.ReadFile(rej)
	if n := strings.Count(string(b), "\n"); n != exp.Bad+1 {
		t.Errorf("rejects file has %d lines, want %d", n, exp.Bad+1)
	}
}

func TestRunCreateTopic(t *testing.T) {
	_, addr := startKfake(t)
	r := runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\nt2,2\n"), nil,
		"--brokers", addr, "--file", "-", "--topic", "made", "--create-topic-partitions", "5", "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(addr))
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(context.Background(), "made")
	if err != nil || len(td["made"].Partitions) != 5 {
		t.Fatalf("topic: %v %v", td, err)
	}
	consume(t, addr, "made", 2)
	// Existing topic: left alone, still exit 0.
	r = runCmd(t, strings.NewReader("transaction_id,amount\nt3,3\n"), nil,
		"--brokers", addr, "--file", "-", "--topic", "made", "--create-topic-partitions", "2", "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("second run: exit %d", r.code)
	}
}

// A broker that refuses the writes: exit 1, nothing acknowledged.
func TestRunDeliveryFailure(t *testing.T) {
	c, addr := startKfake(t)
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	r := runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\nt2,2\n"), nil,
		"--brokers", addr, "--file", "-", "--log-level", "error")
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want %d", r.code, ExitFailure)
	}
}

// With --follow, SIGINT is the normal end: what was read is delivered and
// the exit code is 0.
func TestRunFollowInterrupt(t *testing.T) {
	_, addr := startKfake(t)
	path := filepath.Join(t.TempDir(), "feed.csv")
	appendFile(t, path, "transaction_id,amount\nt1,1\n")
	sigs := make(chan os.Signal, 2)
	done := make(chan runResult, 1)
	go func() {
		done <- runCmd(t, nil, sigs, "--brokers", addr, "--file", path, "--follow", "--follow-poll", "5ms", "--log-level", "error")
	}()
	consume(t, addr, "transactions", 1)
	appendFile(t, path, "t2,2\nt3,3\n")
	consume(t, addr, "transactions", 3)
	sigs <- syscall.SIGINT
	select {
	case r := <-done:
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("producer did not stop after SIGINT")
	}
}

// Without --follow, an interrupt before the end of the input exits 130
// after delivering what was read.
func TestRunInterruptStdin(t *testing.T) {
	_, addr := startKfake(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	sigs := make(chan os.Signal, 2)
	done := make(chan runResult, 1)
	go func() {
		done <- runCmd(t, pr, sigs, "--brokers", addr, "--file", "-", "--log-level", "error")
	}()
	io.WriteString(pw, "transaction_id,amount\nt1,1\nt2,2\n")
	consume(t, addr, "transactions", 2)
	sigs <- syscall.SIGINT // the read of the pipe is blocked: the producer finishes without it
	select {
	case r := <-done:
		if r.code != ExitInterrupted {
			t.Fatalf("exit %d, want %d", r.code, ExitInterrupted)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("producer did not stop after SIGINT")
	}
}

func TestRunSettingsSources(t *testing.T) {
	_, addr := startKfake(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "producer.yaml")
	os.WriteFile(cfgFile, []byte("topic: from-file\nlog-level: error\nbrokers: 127.0.0.1:1\n"), 0o644)
	t.Setenv("TXSTREAM_BROKERS", addr) // env beats the file
	r := runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\n"), nil, "--config", cfgFile, "--file", "-")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	consume(t, addr, "from-file", 1)
	// A flag beats the environment.
	t.Setenv("TXSTREAM_TOPIC", "from-env")
	r = runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\n"), nil, "--config", cfgFile, "--file", "-", "--topic", "from-flag")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	consume(t, addr, "from-flag", 1)
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--file", "-", "--follow"},
		{"--file", "x", "--compression", "brotli"},
		{"--file", "x", "--rate", "-1"},
		{"--file", "x", "--rate", "NaN"},
		{"--file", "x", "--rate", "+Inf"},
		{"--file", "x", "--rate", "1e-12"},
		{"--file", "x", "--create-topic-partitions", "4294967296"},
		{"--file", "x", "--max-line-bytes", "1"},
		{"--file", "x", "--progress", "sometimes"},
		{"--file", "x", "--brokers", "nohost"},
		{"--file", "x", "extra-arg"},
		{"--no-such-flag"},
		{"gen", "--rows", "-5"},
		{"gen", "--bad-fraction", "2"},
		{"gen", "--epoch", "yesterday"},
		{"expect"},
	} {
		r := runCmd(t, nil, nil, args...)
		if r.code != ExitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, r.code, ExitUsage, r.stderr)
		}
	}
	if r := runCmd(t, nil, nil, "--help"); r.code != 0 || !strings.Contains(r.stderr, "TXSTREAM_BROKERS") {
		t.Errorf("--help: %d %q", r.code, r.stderr)
	}
}

// --rejects naming the input file is refused before it is opened (which
// would truncate the input), and the input is untouched.
func TestRunRejectsIsTheInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	data, err := os.ReadFile(sampleFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	alias := filepath.Join(dir, "alias.csv")
	if err := os.Symlink(in, alias); err != nil {
		t.Fatal(err)
	}
	for _, rej := range []string{in, alias, filepath.Join(dir, ".", "in.csv")} {
		r := runCmd(t, nil, nil, "--dry-run", "--file", in, "--rejects", rej)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "is the input file") {
			t.Errorf("--rejects %s: exit %d, want %d (%s)", rej, r.code, ExitUsage, r.stderr)
		}
	}
	if got, _ := os.ReadFile(in); !bytes.Equal(got, data) {
		t.Fatalf("the input changed: %d bytes, was %d", len(got), len(data))
	}
	if r := runCmd(t, nil, nil, "--dry-run", "--log-level", "error", "--file", in, "--rejects", filepath.Join(dir, "rej.csv")); r.code != 0 {
		t.Fatalf("a separate rejects file: exit %d (%s)", r.code, r.stderr)
	}
}

func TestRunDryRunStrict(t *testing.T) {
	r := runCmd(t, nil, nil, "--dry-run", "--file", sampleFile(), "--log-level", "error")
	if r.code != 0 {
		t.Fatalf("dry run: exit %d", r.code)
	}
	r = runCmd(t, nil, nil, "--dry-run", "--strict", "--file", sampleFile(), "--log-level", "error")
	if r.code != ExitFailure {
		t.Fatalf("strict dry run: exit %d", r.code)
	}
	r = runCmd(t, strings.NewReader("account_id,amount\n"), nil, "--dry-run", "--file", "-", "--log-level", "error")
	if r.code != ExitFailure {
		t.Fatalf("bad header: exit %d", r.code)
	}
}

func TestRunNoBroker(t *testing.T) {
	r := runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\n"), nil,
		"--brokers", "127.0.0.1:1", "--connect-timeout", "300ms", "--file", "-", "--log-level", "error")
	if r.code != ExitFailure {
		t.Fatalf("exit %d", r.code)
	}
}

func TestGenAndExpect(t *testing.T) {
	args := []string{"gen", "--rows", "500", "--accounts", "7", "--seed", "3", "--bad-fraction", "0.05", "--dup-fraction", "0.05"}
	a := runCmd(t, nil, nil, args...)
	b := runCmd(t, nil, nil, args...)
	if a.code != 0 || a.stdout != b.stdout || !strings.HasPrefix(a.stdout, synth.Header+"\n") {
		t.Fatalf("gen: %d %q", a.code, a.stderr)
	}
	if !strings.Contains(a.stderr, "500 rows (") {
		t.Errorf("gen report %q", a.stderr)
	}
	var direct bytes.Buffer
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed, cfg.BadFraction, cfg.DupFraction = 500, 7, 3, 0.05, 0.05
	synth.Generate(cfg, &direct)
	if direct.String() != a.stdout {
		t.Error("gen output differs from synth.Generate with the same config")
	}

	out := filepath.Join(t.TempDir(), "gen.csv")
	if r := runCmd(t, nil, nil, append(args, "--out", out)...); r.code != 0 || r.stdout != "" {
		t.Fatalf("gen --out: %d", r.code)
	}
	if b, _ := os.ReadFile(out); string(b) != a.stdout {
		t.Error("gen --out wrote other bytes")
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*tmp*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	r := runCmd(t, nil, nil, "expect", "--json", out)
	var doc struct {
		Rows, Valid, Duplicates, Bad int
		Accounts                     map[string]struct{ Count int64 }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil || doc.Rows != 500 || doc.Valid+doc.Duplicates+doc.Bad != 500 {
		t.Fatalf("expect --json: %d %s", r.code, r.stdout)
	}
	r = runCmd(t, strings.NewReader(a.stdout), nil, "expect", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "| ACC-001 |") {
		t.Fatalf("expect -: %d %s", r.code, r.stdout)
	}
}

// A broker that takes the writes and never answers: the watchdog gives up
// after --delivery-timeout (plus as much again, at most 10s) and the exit
// code says not everything was acknowledged.
func TestRunBrokerNeverAnswers(t *testing.T) {
	c, addr := startKfake(t)
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, nil, true // swallow the request
	})
	start := time.Now()
	r := runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\nt2,2\n"), nil,
		"--brokers", addr, "--file", "-", "--log-level", "error", "--delivery-timeout", "1s")
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want %d", r.code, ExitFailure)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
}

// An interrupt while waiting for an unreachable broker ends the wait.
func TestRunInterruptWhileConnecting(t *testing.T) {
	// A "broker" that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	sigs := make(chan os.Signal, 2)
	done := make(chan runResult, 1)
	go func() {
		done <- runCmd(t, strings.NewReader("transaction_id,amount\nt1,1\n"), sigs,
			"--brokers", ln.Addr().String(), "--connect-timeout", "1m", "--file", "-", "--log-level", "error")
	}()
	sigs <- syscall.SIGINT
	select {
	case r := <-done:
		if r.code != ExitInterrupted {
			t.Fatalf("exit %d, want %d", r.code, ExitInterrupted)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the producer kept waiting for the broker after SIGINT")
	}
}
