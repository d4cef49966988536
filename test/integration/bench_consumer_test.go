package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
	"github.com/txstream/txstream/test/kafkatest"
)

// consumerBenchRows sizes the end-to-end benchmark (1M rows over 100k
// accounts, the size docs/BENCHMARKS.md reports); BENCH_ROWS overrides for
// quick runs.
func consumerBenchRows() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROWS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// BenchmarkConsumerEndToEnd measures, in one run, against each broker of
// BENCH_BROKERS ("kfake", "kafka" or "kfake,kafka"; by default devbroker,
// and real Apache Kafka too where it can run here, see kafkatest.Available):
//
//	(a) the consumer with the exactly-once Kafka sink,
//	(b) the consumer with the stdout sink to /dev/null,
//	(c) a baseline that consumes and re-produces the same records in
//	    transactions with no parsing and no state (the ceiling here),
//
// from process start to every input offset committed by the group (polled
// with kadm, independently of the consumer's logs): records/s, and CPU per
// record, the user+sys time of the consumer process at that moment (start-up
// included) over the records, which a shared machine distorts far less than
// wall time (for (c), the benchmark process's own rusage over the run); then
// peak RSS, snapshot pause, commit latency, recovery time after kill -9 and
// replay speed: a consumer that took no snapshot is killed after committing
// every record and restarted, and replays them all without output
// (records/s from its "partition recovered" log lines).
//
// BENCH_CONSUMER_BASE=<path of another consumer binary> also runs (a) with
// that build, for a before/after comparison in the same run. The two take
// turns going first (run -count with an even number): on Apache Kafka the
// first consumer to read the freshly produced input is slower (an A/A run
// of one build in both places measured 10-30% fewer records/s and ~5% more
// CPU in the first place), so a fixed order would favour the base.
//
//	go test -run '^$' -bench ConsumerEndToEnd -benchtime 1x ./test/integration/
func BenchmarkConsumerEndToEnd(b *testing.B) {
	if benchRounds == nil {
		benchRounds = map[string]int{}
	}
	bins := buildBinaries(b)
	rows := consumerBenchRows()
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = rows, rows/10, 99
	cfg.BadFraction, cfg.DupFraction = 0.001, 0.005
	var buf bytes.Buffer
	if _, err := synth.Generate(cfg, &buf); err != nil {
		b.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(buf.Bytes(), "\n"), []byte("\n"))[1:]
	for _, kind := range benchBrokers(b) {
		b.Run("broker="+kind, func(b *testing.B) {
			benchConsumerOn(b, bins, kind, lines, cfg.Accounts)
		})
	}
}

// benchBrokers is the broker kinds BENCH_BROKERS asks for.
func benchBrokers(b *testing.B) []string {
	env := os.Getenv("BENCH_BROKERS")
	if env == "" {
		if ok, why := kafkatest.Available(); !ok {
			b.Logf("devbroker only: real Kafka cannot run here (%s)", why)
			return []string{brokerKfake}
		}
		return []string{brokerKfake, brokerKafka}
	}
	var kinds []string
	for _, k := range strings.Split(env, ",") {
		switch k = strings.TrimSpace(k); k {
		case brokerKfake, brokerKafka:
			kinds = append(kinds, k)
		default:
			b.Fatalf("BENCH_BROKERS=%q: want kfake, kafka or both, comma-separated", env)
		}
	}
	return kinds
}

func benchConsumerOn(b *testing.B, bins *Binaries, kind string, lines [][]byte, accounts int) {
	dir := b.TempDir()
	var broker *Broker
	if kind == brokerKafka {
		broker = startKafka(b, filepath.Join(dir, "broker"), "--topics", "transactions")
		b.Logf("Apache Kafka %s", broker.kafka.Version)
	} else {
		broker = startDevbroker(b, filepath.Join(dir, "broker"), "--topics", "transactions")
	}
	ctx := context.Background()
	t0 := time.Now()
	if err := produceRaw(ctx, broker.Addr, lines, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("pre-produced %d rows over %d accounts in %v", len(lines), accounts, time.Since(t0).Round(time.Millisecond))
	total := int64(len(lines))
	consumer := bins.Path("consumer")
	base := os.Getenv("BENCH_CONSUMER_BASE")

	for i := 0; i < b.N; i++ {
		sfx := strconv.Itoa(i)
		var ab benchRun
		runBase := func() {
			ab = runBenchConsumer(b, base, broker, dir, "bench-base"+sfx, total, "--sink", "kafka", "--output-topic", "bench-out-base"+sfx, "--dlq-topic", "bench-dlq-base"+sfx)
		}
		benchRounds[kind]++
		baseFirst := base != "" && benchRounds[kind]%2 == 0
		if baseFirst {
			runBase()
		}
		// (a) exactly-once Kafka sink
		a := runBenchConsumer(b, consumer, broker, dir, "bench-a"+sfx, total, "--sink", "kafka", "--output-topic", "bench-out-a"+sfx, "--dlq-topic", "bench-dlq-a"+sfx)
		if base != "" && !baseFirst {
			runBase()
		}
		// (b) stdout sink to /dev/null
		s := runBenchConsumer(b, consumer, broker, dir, "bench-b"+sfx, total, "--sink", "stdout", "--output-topic", "bench-out-b"+sfx, "--dlq-topic", "bench-dlq-b"+sfx)
		// (c) transactional pass-through baseline
		c, cCPU := runBaseline(b, broker.Addr, "bench-c"+sfx, total)

		perRec := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(total) }
		rate := func(d time.Duration) float64 { return float64(total) / d.Seconds() }
		b.ReportMetric(rate(a.elapsed), "eos_rec/s")
		b.ReportMetric(perRec(a.cpu), "eos_cpu_us/rec")
		b.ReportMetric(rate(s.elapsed), "stdout_rec/s")
		b.ReportMetric(perRec(s.cpu), "stdout_cpu_us/rec")
		b.ReportMetric(rate(c), "baseline_rec/s")
		b.ReportMetric(perRec(cCPU), "baseline_cpu_us/rec")
		b.ReportMetric(c.Seconds()/a.elapsed.Seconds(), "eos/baseline")
		// The machine's ceiling for (a): its cores divided by the CPU the
		// consumer and the broker together spend per record. No schedule
		// of the same work runs faster than that here.
		ceiling := float64(runtime.NumCPU()) * 1e6 / (perRec(a.cpu) + perRec(a.brokerCPU))
		b.ReportMetric(perRec(a.brokerCPU), "eos_broker_cpu_us/rec")
		b.ReportMetric(ceiling/rate(c), "eos_ceiling/baseline")
		b.ReportMetric(float64(a.peakRSS)/(1<<20), "eos_peak_rss_MiB")
		b.ReportMetric(ms(percentile(a.pauses, 0.5)), "pause_p50_ms")
		b.ReportMetric(ms(percentile(a.pauses, 1)), "pause_max_ms")
		b.ReportMetric(ms(percentile(a.commits, 0.5)), "commit_p50_ms")
		b.ReportMetric(ms(percentile(a.commits, 0.99)), "commit_p99_ms")
		if base != "" {
			b.ReportMetric(rate(ab.elapsed), "base_eos_rec/s")
			b.ReportMetric(perRec(ab.cpu), "base_eos_cpu_us/rec")
			b.ReportMetric(float64(ab.peakRSS)/(1<<20), "base_eos_peak_rss_MiB")
			b.Logf("(a) with %s (ran %s): %.0f rec/s, %.2f us CPU/record, peak RSS %.0f MiB", base, map[bool]string{true: "first", false: "second"}[baseFirst], rate(ab.elapsed), perRec(ab.cpu), float64(ab.peakRSS)/(1<<20))
		}

		rp := measureReplay(b, consumer, broker.Addr, dir, "bench-replay"+sfx, total)
		b.ReportMetric(rp.rate(), "replay_rec/s")
		rec := measureRecovery(b, consumer, broker.Addr, dir, "bench-recovery"+sfx, lines)
		b.ReportMetric(rec.Seconds(), "recovery_s")
		b.Logf("%s: (a) eos %.0f rec/s in %v, %.2f us CPU/record (broker %.2f; ceiling on %d cores %.0f rec/s = %.2f x (c)); (b) stdout %.0f rec/s, %.2f us CPU/record; (c) baseline %.0f rec/s, %.2f us CPU/record; (a)/(c) = %.2f; peak RSS %.0f MiB; snapshot pause p50 %.1f ms max %.1f ms (%d snapshots); commit p50 %.1f ms p99 %.1f ms; replay %.0f rec/s (%d records in %v); recovery %v",
			kind, rate(a.elapsed), a.elapsed.Round(time.Millisecond), perRec(a.cpu), perRec(a.brokerCPU), runtime.NumCPU(), ceiling, ceiling/rate(c), rate(s.elapsed), perRec(s.cpu), rate(c), perRec(cCPU), c.Seconds()/a.elapsed.Seconds(),
			float64(a.peakRSS)/(1<<20), ms(percentile(a.pauses, 0.5)), ms(percentile(a.pauses, 1)), len(a.pauses),
			ms(percentile(a.commits, 0.5)), ms(percentile(a.commits, 0.99)), rp.rate(), rp.records, rp.took.Round(time.Millisecond), rec.Round(time.Millisecond))
	}
}

// benchRounds counts the rounds of BenchmarkConsumerEndToEnd per broker
// kind across -count, so that (a) and the base take turns going first.
var benchRounds map[string]int

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

type benchRun struct {
	elapsed time.Duration
	cpu     time.Duration // user+sys of the process when the group had committed every record
	// brokerCPU is the broker's user+sys over the same span (its own
	// process, so the kadm polling is in it too: a few requests per
	// 50 ms).
	brokerCPU time.Duration
	peakRSS   int64
	pauses    []time.Duration
	commits   []time.Duration
}

// runBenchConsumer starts a consumer in its own group and waits until the
// group has committed every input offset.
func runBenchConsumer(b *testing.B, consumer string, brk *Broker, dir, group string, total int64, extra ...string) benchRun {
	b.Helper()
	broker := brk.Addr
	args := []string{"--brokers", broker, "--group", group, "--instance-id", group, "--log-format", "json", "--log-level", "debug",
		"--http", "", "--data-dir", filepath.Join(dir, "data-"+group), "--checkpoint-dir", filepath.Join(dir, "ck-"+group)}
	args = append(args, extra...)
	cmd := exec.Command(consumer, args...)
	logPath := filepath.Join(dir, group+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd.Stdout, cmd.Stderr = devnull, logf
	if strings.Contains(strings.Join(extra, " "), "stdout") {
		null, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		defer null.Close()
		cmd.Stdout = null
	}
	brokerCPU0, brokerErr := processCPU(brk.Pid())
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var run benchRun
	if err := waitCommitted(broker, group, total, 10*time.Minute, func() { run.peakRSS = max(run.peakRSS, peakRSS(cmd.Process.Pid)) }); err != nil {
		b.Fatalf("%s: %v; log %s", group, err, logPath)
	}
	run.elapsed = time.Since(start)
	if run.cpu, err = processCPU(cmd.Process.Pid); err != nil {
		b.Fatal(err)
	}
	if brokerErr == nil {
		if c, err := processCPU(brk.Pid()); err == nil {
			run.brokerCPU = c - brokerCPU0
		}
	}
	run.peakRSS = max(run.peakRSS, peakRSS(cmd.Process.Pid))
	// Let a snapshot or two land, then drain gracefully.
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	run.pauses, run.commits = parseConsumerLog(b, logPath)
	return run
}

// waitCommitted polls the group's committed offsets until they cover total
// records (offsets are 0-based and the topic holds only those records).
func waitCommitted(broker, group string, total int64, timeout time.Duration, tick func()) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(timeout)
	var sum int64
	for time.Now().Before(deadline) {
		tick()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		offs, err := adm.FetchOffsets(ctx, group)
		cancel()
		if err == nil {
			sum = 0
			offs.Each(func(o kadm.OffsetResponse) {
				if o.Topic == "transactions" && o.At > 0 {
					sum += o.At
				}
			})
			if sum >= total {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("group %s committed %d of %d records within %v", group, sum, total, timeout)
}

// peakRSS reads VmHWM (peak resident set) of a process, in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func parseConsumerLog(b *testing.B, path string) (pauses, commits []time.Duration) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		sec := func(k string) time.Duration { v, _ := m[k].(float64); return time.Duration(v * float64(time.Second)) }
		switch m["msg"] {
		case "snapshot published":
			pauses = append(pauses, sec("pause"))
		case "epoch committed":
			commits = append(commits, sec("latency"))
		}
	}
	return pauses, commits
}

// runBaseline consumes the input in a group and re-produces every record
// unchanged in one transaction per second, committing offsets in it: the
// same Kafka work as the exactly-once sink without parsing or state. It
// returns the wall time and the CPU time (user+sys) the benchmark process
// spent meanwhile.
func runBaseline(b *testing.B, broker, group string, total int64) (time.Duration, time.Duration) {
	b.Helper()
	start, cpu0 := time.Now(), selfCPU()
	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(broker), kgo.ConsumerGroup(group), kgo.ConsumeTopics("transactions"),
		kgo.TransactionalID(group), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.DefaultProduceTopic("bench-out-c"), kgo.AllowAutoTopicCreation())
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	ctx := context.Background()
	var done int64
	for done < total {
		if err := sess.Begin(); err != nil {
			b.Fatal(err)
		}
		epochEnd := time.Now().Add(time.Second)
		for time.Now().Before(epochEnd) && done < total {
			pctx, cancel := context.WithDeadline(ctx, epochEnd)
			fs := sess.PollRecords(pctx, 10000)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				sess.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value}, nil)
				done++
			})
		}
		committed, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			b.Fatal(err)
		}
		if !committed {
			b.Fatal("baseline epoch aborted")
		}
	}
	return time.Since(start), selfCPU() - cpu0
}

// selfCPU is the user+sys CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// replayRun is the replay of a restarted consumer: records replayed (all
// partitions) and the time the replays took, summed.
type replayRun struct {
	records int64
	took    time.Duration
}

func (r replayRun) rate() float64 {
	if r.took <= 0 {
		return 0
	}
	return float64(r.records) / r.took.Seconds()
}

// measureReplay runs a consumer that takes no snapshot (a checkpoint
// interval of an hour) until its group has committed every record, kills
// it with SIGKILL and restarts it: with no snapshot, recovery replays every
// committed record of each partition without output, from the log start.
// The replay figures come from the restarted consumer's log: the records
// of its "partition recovered" lines, over the wall time from the first
// "recovering partition" line to the last "partition recovered" one
// (partitions replay in parallel).
func measureReplay(b *testing.B, consumer, broker, dir, group string, total int64) replayRun {
	b.Helper()
	args := []string{"--brokers", broker, "--group", group, "--instance-id", group, "--log-format", "json",
		"--http", "", "--data-dir", filepath.Join(dir, "data-"+group), "--checkpoint-dir", filepath.Join(dir, "ck-"+group),
		"--output-topic", "out-" + group, "--dlq-topic", "dlq-" + group, "--checkpoint-interval", "1h"}
	first := exec.Command(consumer, args...)
	if err := first.Start(); err != nil {
		b.Fatal(err)
	}
	if err := waitCommitted(broker, group, total, 10*time.Minute, func() {}); err != nil {
		_ = first.Process.Kill()
		b.Fatal(err)
	}
	_ = first.Process.Kill()
	_ = first.Wait()
	second := exec.Command(consumer, args...)
	var log lockedBuffer
	second.Stderr = &log
	if err := second.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = second.Process.Kill(); _ = second.Wait() }()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		var r replayRun
		parts := 0
		var first, last time.Time
		for _, line := range strings.Split(log.String(), "\n") {
			var m struct {
				Msg      string `json:"msg"`
				TS       string `json:"ts"` // zap's ISO 8601 encoder
				Replayed int64  `json:"replayed"`
			}
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", m.TS)
			if err != nil {
				continue
			}
			switch m.Msg {
			case "recovering partition":
				if first.IsZero() || ts.Before(first) {
					first = ts
				}
			case "partition recovered":
				parts++
				r.records += m.Replayed
				if ts.After(last) {
					last = ts
				}
			}
		}
		if r.records >= total {
			if first.IsZero() {
				b.Fatal("replay: no \"recovering partition\" line with a time in the consumer's log")
			}
			r.took = last.Sub(first)
			return r
		}
		if parts >= 3 {
			b.Fatalf("replay: %d partitions recovered with %d records replayed, want %d", parts, r.records, total)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("replay: the restarted consumer did not recover its partitions within 10 minutes")
	return replayRun{}
}

// measureRecovery runs a consumer over fresh input until it has committed
// and snapshotted, kills it with SIGKILL, restarts it, and returns the time
// from the restart to its first commit of new input.
func measureRecovery(b *testing.B, consumer, broker, dir, group string, lines [][]byte) time.Duration {
	b.Helper()
	args := []string{"--brokers", broker, "--group", group, "--instance-id", group, "--log-format", "json",
		"--http", "", "--data-dir", filepath.Join(dir, "data-"+group), "--checkpoint-dir", filepath.Join(dir, "ck-"+group),
		"--output-topic", "out-" + group, "--dlq-topic", "dlq-" + group, "--checkpoint-interval", "1s"}
	first := exec.Command(consumer, args...)
	var log1 lockedBuffer
	first.Stderr = &log1
	if err := first.Start(); err != nil {
		b.Fatal(err)
	}
	half := int64(len(lines) / 2)
	if err := waitCommitted(broker, group, half, 10*time.Minute, func() {}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(log1.String(), "snapshot published") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = first.Process.Kill()
	_ = first.Wait()
	committed, err := groupCommitted(broker, group)
	if err != nil {
		b.Fatal(err)
	}
	if committed >= int64(len(lines)) {
		b.Skip("the first run finished before the kill; no recovery to measure")
	}
	restart := time.Now()
	second := exec.Command(consumer, args...)
	if err := second.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = second.Process.Kill(); _ = second.Wait() }()
	if err := waitCommitted(broker, group, committed+1, 5*time.Minute, func() {}); err != nil {
		b.Fatal(err)
	}
	return time.Since(restart)
}

func groupCommitted(broker, group string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		return 0, err
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.At > 0 {
			sum += o.At
		}
	})
	return sum, nil
}
