package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

// BenchmarkKafkaStreamsPeer compares txstream's consumer (exactly-once
// Kafka sink) with a Kafka Streams application that computes the same
// thing (test/integration/kstreams: the same CSV rules, dedup rule and
// per-account count, exact total, min and max; exactly_once_v2, RocksDB
// state, the same commit interval), on one real Kafka broker and the same
// pre-produced input (BENCH_ROWS rows, default 1M, over rows/10 accounts,
// as BenchmarkConsumerEndToEnd). For each, from process start until its
// group has committed every input offset (kadm): records/s, CPU per record
// (user+sys of the process, from /proc/<pid>/stat when the group is done;
// the java process for Kafka Streams), peak RSS (VmHWM). Then each is
// killed with SIGKILL, rows/10 new rows are appended while both are down,
// and each is restarted: recovery is the time from the restart until its
// group's committed offsets reach the new end. Last, both outputs are
// checked record by record against synth's expectation (not timed).
//
// Skipped with one line without Java, Maven (for the first build of the
// peer, cached in ~/.cache/txstream/kstreams) or the Kafka jars (Linux
// only). BENCH_KSTREAMS_JAVA_OPTS adds JVM flags (none by default: the
// JVM's own heap and GC defaults), e.g. a flight recording;
// BENCH_KSTREAMS_CACHING=1 puts Kafka Streams' record cache in front of
// the store (off by default, as the Processor API's store builder has it).
//
//	BENCH_ROWS=100000 go test -run '^$' -bench KafkaStreamsPeer -benchtime 1x ./test/integration/
func BenchmarkKafkaStreamsPeer(b *testing.B) {
	bins := buildBinaries(b)
	classpath := kstreamsPeerClasspath(b)
	kstreamsCaching := os.Getenv("BENCH_KSTREAMS_CACHING") == "1"
	rows := consumerBenchRows()
	extra := max(rows/10, 1)
	dir := b.TempDir()
	broker := startKafka(b, filepath.Join(dir, "kafka"), "--topics", "transactions")

	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = rows+extra*b.N, max(rows/10, 1), 99
	cfg.BadFraction, cfg.DupFraction = 0.001, 0.005
	var csv bytes.Buffer
	if _, err := synth.Generate(cfg, &csv); err != nil {
		b.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(csv.Bytes(), "\n"), []byte("\n"))[1:]
	ctx := context.Background()
	t0 := time.Now()
	if err := produceRaw(ctx, broker.Addr, lines[:rows], 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("Kafka %s; pre-produced %d rows over %d accounts in %v; Kafka Streams store caching %v",
		broker.kafka.Version, rows, cfg.Accounts, time.Since(t0).Round(time.Millisecond), kstreamsCaching)
	produced := rows

	for i := 0; i < b.N; i++ {
		ts := &peerProcess{b: b, name: fmt.Sprintf("txstream-%d", i), broker: broker.Addr, dir: dir}
		ts.args = func() (string, []string) {
			return bins.Path("consumer"), []string{"--brokers", broker.Addr, "--group", ts.name, "--instance-id", ts.name,
				"--log-format", "json", "--http", "",
				"--data-dir", filepath.Join(dir, "data-"+ts.name), "--checkpoint-dir", filepath.Join(dir, "ck-"+ts.name),
				"--output-topic", ts.name + "-out", "--dlq-topic", ts.name + "-dlq"}
		}
		ks := &peerProcess{b: b, name: fmt.Sprintf("kstreams-%d", i), broker: broker.Addr, dir: dir}
		ks.args = func() (string, []string) {
			jvm := strings.Fields(os.Getenv("BENCH_KSTREAMS_JAVA_OPTS"))
			return "java", append(jvm, "-cp", classpath, "io.github.txstream.kstreams.Peer",
				"--bootstrap-servers", broker.Addr, "--application-id", ks.name, "--instance-id", ks.name,
				"--state-dir", filepath.Join(dir, "state-"+ks.name),
				"--output", ks.name+"-out", "--dlq", ks.name+"-dlq", "--caching", strconv.FormatBool(kstreamsCaching))
		}
		createTopics(b, broker.Addr, 3, ks.name+"-out", ks.name+"-dlq")

		total := int64(produced)
		tsRun := ts.runUntilCommitted(0, total)
		ts.kill()
		ksRun := ks.runUntilCommitted(0, total)
		ks.kill()

		// Recovery: rows appended while both are down, then each restarted.
		if err := produceRaw(ctx, broker.Addr, lines[produced:produced+extra], 0); err != nil {
			b.Fatal(err)
		}
		produced += extra
		tsRec := ts.runUntilCommitted(total, int64(produced))
		ts.stop()
		ksRec := ks.runUntilCommitted(total, int64(produced))
		ks.stop()

		rate := func(r peerRun) float64 { return float64(r.records) / r.elapsed.Seconds() }
		cpuPer := func(r peerRun) float64 { return float64(r.cpu.Microseconds()) / float64(r.records) }
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(rate(tsRun), "txstream_rec/s")
		b.ReportMetric(rate(ksRun), "kstreams_rec/s")
		b.ReportMetric(rate(tsRun)/rate(ksRun), "txstream/kstreams")
		b.ReportMetric(cpuPer(tsRun), "txstream_cpu_us/rec")
		b.ReportMetric(cpuPer(ksRun), "kstreams_cpu_us/rec")
		b.ReportMetric(mib(tsRun.peakRSS), "txstream_peak_rss_MiB")
		b.ReportMetric(mib(ksRun.peakRSS), "kstreams_peak_rss_MiB")
		b.ReportMetric(tsRec.elapsed.Seconds(), "txstream_recovery_s")
		b.ReportMetric(ksRec.elapsed.Seconds(), "kstreams_recovery_s")
		b.Logf("txstream: %.0f rec/s (%d in %v), %.2f µs CPU/rec, peak RSS %.0f MiB; recovery %v (%d appended; %.0f MiB)",
			rate(tsRun), tsRun.records, tsRun.elapsed.Round(time.Millisecond), cpuPer(tsRun), mib(tsRun.peakRSS),
			tsRec.elapsed.Round(time.Millisecond), extra, mib(tsRec.peakRSS))
		b.Logf("kstreams: %.0f rec/s (%d in %v), %.2f µs CPU/rec, peak RSS %.0f MiB; recovery %v (%d appended; %.0f MiB)",
			rate(ksRun), ksRun.records, ksRun.elapsed.Round(time.Millisecond), cpuPer(ksRun), mib(ksRun.peakRSS),
			ksRec.elapsed.Round(time.Millisecond), extra, mib(ksRec.peakRSS))

		// Both computed the same thing, exactly once, across the kill.
		b.StopTimer()
		exp := expectRows(b, lines[:produced])
		for _, p := range []*peerProcess{ts, ks} {
			if rep := readOutputTopics(b, broker.Addr, p.name+"-out", p.name+"-dlq").Check(exp, synth.CheckOptions{}); !rep.OK() {
				b.Errorf("%s output (logs %s):\n%s", p.name, p.logPath(), strings.Join(rep.Problems, "\n"))
			}
		}
		b.StartTimer()
	}
}

// kstreamsPeerClasspath builds the Kafka Streams peer with
// kstreams/build.sh (once; cached outside the repository) and returns its
// classpath. It skips the benchmark when Java, Maven or the jars are
// missing.
func kstreamsPeerClasspath(b *testing.B) string {
	b.Helper()
	bins := buildBinaries(b)
	if _, err := exec.LookPath("java"); err != nil {
		b.Skip("Kafka Streams peer skipped: java not found on PATH")
	}
	cmd := exec.Command("bash", bins.RepoPath("test/integration/kstreams/build.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && (exit.ExitCode() == 2 || exit.ExitCode() == 3) {
		b.Skipf("Kafka Streams peer skipped: %s", lastLine(stderr.String()))
	}
	if err != nil {
		b.Fatalf("building the Kafka Streams peer: %v\n%s", err, tail(stderr.String(), 4000))
	}
	cp, err := os.ReadFile(strings.TrimSpace(string(out)))
	if err != nil {
		b.Fatal(err)
	}
	return strings.TrimSpace(string(cp))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func createTopics(b *testing.B, broker string, partitions int32, topics ...string) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, -1, nil, topics...)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		b.Fatalf("creating %v: %v", topics, err)
	}
}

// peerProcess is one contender of BenchmarkKafkaStreamsPeer: a process
// that consumes "transactions" in the consumer group name and can be
// killed and started again with the same arguments and state directories.
type peerProcess struct {
	b      *testing.B
	name   string // group (application id), instance id, topic prefix
	broker string
	dir    string
	args   func() (path string, args []string)
	runs   int

	cmd    *exec.Cmd
	exited chan struct{}
}

type peerRun struct {
	records int64         // input records committed over the run
	elapsed time.Duration // from process start until the group committed them all
	cpu     time.Duration // user+sys of the process at that moment
	peakRSS int64
}

func (p *peerProcess) logPath() string { return filepath.Join(p.dir, p.name+".log") }

// runUntilCommitted starts the process and waits until its group, which
// has committed from input records, has committed total.
func (p *peerProcess) runUntilCommitted(from, total int64) peerRun {
	b := p.b
	b.Helper()
	path, args := p.args()
	cmd := exec.Command(path, args...)
	setDeathSignal(cmd)
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	p.runs++
	fmt.Fprintf(logf, "\n=== run %d: %s %s\n", p.runs, path, strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(p.exited)
	b.Cleanup(p.kill)
	run := peerRun{records: total - from}
	pid := cmd.Process.Pid
	err = waitCommitted(p.broker, p.name, total, 10*time.Minute, func() {
		select {
		case <-p.exited:
			b.Fatalf("%s exited before its group committed %d records: %v; log %s\n%s",
				p.name, total, cmd.ProcessState, p.logPath(), tail(readFileString(p.logPath()), 3000))
		default:
		}
		run.peakRSS = max(run.peakRSS, peakRSS(pid))
	})
	run.elapsed = time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v; log %s", p.name, err, p.logPath())
	}
	run.cpu, err = processCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	run.peakRSS = max(run.peakRSS, peakRSS(pid))
	return run
}

// kill sends SIGKILL and waits for the process to go.
func (p *peerProcess) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd = nil
}

// stop sends SIGTERM and waits up to a minute for a clean exit, then kills.
func (p *peerProcess) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		p.b.Logf("%s did not stop within a minute of SIGTERM; killed", p.name)
	}
	p.kill()
}

func readFileString(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// processCPU is the user+sys CPU time of a running process, all its
// threads (live and exited) included: fields 14 and 15 of /proc/<pid>/stat,
// the same counters getrusage reports, in clock ticks (USER_HZ, 100 on
// Linux).
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	const userHZ = 100
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}
