package integration

// Interop with Apache Kafka's own command-line tools, from the broker's
// jars (test/kafka/kafka.sh console-consumer, consumer-groups), against a
// real Kafka broker: the consumer is killed (SIGKILL) while an epoch's
// transaction holds output records, so the output topic keeps that aborted
// transaction; restarted, it processes everything and exits when idle.
// kafka-console-consumer with --isolation-level read_committed must then
// print exactly the committed output (each valid transaction once, the
// oracle's totals) and none of the aborted records, which a
// read_uncommitted run does print; kafka-consumer-groups --describe must
// show the group's committed offsets at the input's end offsets, lag 0.

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
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

func TestKafkaToolsInterop(t *testing.T) {
	bins := buildBinaries(t)
	consumer, producer := bins.Path("consumer"), bins.Path("producer")
	k := kafkatest.Start(t, kafkatest.Options{Partitions: 3}) // skips where real Kafka cannot run
	dir := t.TempDir()
	csv, exp := depGenerate(t, dir, synth.Config{Rows: 6000, Accounts: 40, ZipfS: 1.1, Seed: 61,
		BadFraction: 0.01, DupFraction: 0.01, Epoch: synth.DefaultEpoch, Interval: time.Second})
	const in, out, dlq, group = "kt-in", "kt-out", "kt-dlq", "kt"
	depCreateTopics(t, k.Addr, 3, in, out, dlq)
	if r := depRun(t, 120*time.Second, producer, depEnv(), "--brokers", k.Addr, "--topic", in, "--file", csv); r.Code != 0 {
		t.Fatalf("producer exited %d\n%s", r.Code, tail(r.Stderr, 3000))
	}

	adm := newKadm(t, k.Addr)
	state := t.TempDir()
	// A long commit interval: the first epoch's transaction holds output
	// records for seconds, long enough to be killed with it open.
	args := depConsumerArgs(k.Addr, state, in, out, dlq, group)
	args = setFlag(args, "--commit-interval", "3s")
	p := depStart(t, "consumer-1", consumer, depEnv(), args...)
	waitOpenTxn(t, adm, out, p, 90*time.Second)
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	// Still open after the kill: the next start of the member aborts it.
	if !hasOpenTxn(t, adm, out) {
		t.Fatalf("the output topic has no open transaction after the SIGKILL (it committed just before)")
	}
	t.Logf("killed the consumer with a transaction open on %s", out)

	p2 := depStart(t, "consumer-2", consumer, depEnv(), append(args, "--exit-when-idle", "3s")...)
	if code := p2.Wait(180 * time.Second); code != 0 {
		t.Fatalf("consumer exited %d", code)
	}

	// kafka-console-consumer, read_committed: exactly the committed output.
	committed, n := consoleConsume(t, k, out, "read_committed")
	if n != committed.Records {
		t.Errorf("kafka-console-consumer says it processed %d messages, printed %d", n, committed.Records)
	}
	depCheckOutput(t, committed, exp)
	// read_uncommitted also prints the aborted transaction's records: the
	// log holds them, and read_committed left them out.
	all, _ := consoleConsume(t, k, out, "read_uncommitted")
	if all.Records <= committed.Records {
		t.Errorf("read_uncommitted printed %d records, read_committed %d: no aborted records in the log, so the test showed nothing",
			all.Records, committed.Records)
	}
	t.Logf("kafka-console-consumer: %d records read_committed (%d distinct valid transactions, as the oracle), %d read_uncommitted (aborted ones included)",
		committed.Records, len(committed.ByID), all.Records)

	// kafka-consumer-groups --describe: committed offsets at the input's
	// end offsets, lag 0.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, in)
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets of %s: %v %v", in, err, ends.Error())
	}
	rows := consumerGroupsDescribe(t, k, group)
	seen := 0
	for _, r := range rows {
		if r.topic != in {
			continue
		}
		seen++
		end, ok := ends.Lookup(in, r.partition)
		if !ok {
			t.Errorf("kafka-consumer-groups shows %s/%d, which has no end offset", in, r.partition)
			continue
		}
		if r.current != end.Offset || r.logEnd != end.Offset || r.lag != 0 {
			t.Errorf("kafka-consumer-groups: %s/%d current offset %d, log end %d, lag %d; want %d, %d, 0",
				in, r.partition, r.current, r.logEnd, r.lag, end.Offset, end.Offset)
		}
	}
	if seen != 3 {
		t.Errorf("kafka-consumer-groups shows %d partitions of %s for group %s, want 3:\n%+v", seen, in, group, rows)
	}
	t.Logf("kafka-consumer-groups --describe --group %s: %d partitions of %s at their end offsets, lag 0", group, seen, in)
}

// setFlag replaces the value of flag in args (or appends it).
func setFlag(args []string, flag, value string) []string {
	out := append([]string{}, args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = value
			return out
		}
	}
	return append(out, flag, value)
}

// newKadm is an admin client of the broker at addr, closed when the test ends.
func newKadm(t testing.TB, addr string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// hasOpenTxn reports whether an open transaction holds records of topic
// that read_committed readers cannot see yet (a high watermark past the
// last stable offset).
func hasOpenTxn(t testing.TB, adm *kadm.Client, topic string) bool {
	t.Helper()
	return openIn(txnOffsets(t, adm, topic)) > 0
}

// waitOpenTxn waits until topic has an open transaction with records in
// it (failing if p exits first or after timeout).
func waitOpenTxn(t testing.TB, adm *kadm.Client, topic string, p *depProc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !hasOpenTxn(t, adm, topic) {
		if p.Exited() {
			t.Fatalf("%s exited (code %d) before an open transaction was seen on %s", p.name, p.code, topic)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no open transaction on %s within %v", topic, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kafkaTool runs one of test/kafka/kafka.sh's tool commands with the
// broker's version; it returns stdout and stderr.
func kafkaTool(t *testing.T, k *kafkatest.Broker, timeout time.Duration, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{kafkatest.Script()}, args...)...)
	cmd.Env = append(os.Environ(), "TXSTREAM_KAFKA_VERSION="+k.Version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kafka.sh %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 3000))
	}
	return stdout.String(), stderr.String()
}

var processedRE = regexp.MustCompile(`Processed a total of (\d+) messages`)

// consoleConsume reads topic from the beginning with kafka-console-consumer
// at the given isolation level until nothing arrives for 5 s; it returns
// the records and the count the tool reports.
func consoleConsume(t *testing.T, k *kafkatest.Broker, topic, isolation string) (*depOutput, int) {
	t.Helper()
	stdout, stderr := kafkaTool(t, k, 120*time.Second, "console-consumer", "--bootstrap-server", k.Addr,
		"--topic", topic, "--from-beginning", "--isolation-level", isolation, "--timeout-ms", "5000")
	m := processedRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("kafka-console-consumer did not report a count:\n%s", tail(stderr, 3000))
	}
	n, _ := strconv.Atoi(m[1])
	got := newDepOutput()
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			got.add([]byte(l))
		}
	}
	return got, n
}

type groupRow struct {
	topic                string
	partition            int32
	current, logEnd, lag int64
}

// consumerGroupsDescribe runs kafka-consumer-groups --describe and parses
// its table (GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...).
func consumerGroupsDescribe(t *testing.T, k *kafkatest.Broker, group string) []groupRow {
	t.Helper()
	stdout, stderr := kafkaTool(t, k, 120*time.Second, "consumer-groups", "--bootstrap-server", k.Addr,
		"--describe", "--group", group)
	var rows []groupRow
	header := false
	for _, l := range strings.Split(stdout, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && f[0] == "GROUP" && f[3] == "CURRENT-OFFSET" && f[5] == "LAG" {
			header = true
			continue
		}
		if !header || len(f) < 6 || f[0] != group {
			continue
		}
		p, e1 := strconv.ParseInt(f[2], 10, 32)
		cur, e2 := strconv.ParseInt(f[3], 10, 64)
		end, e3 := strconv.ParseInt(f[4], 10, 64)
		lag, e4 := strconv.ParseInt(f[5], 10, 64)
		if e1 != nil || e2 != nil || e3 != nil || e4 != nil {
			t.Fatalf("kafka-consumer-groups: cannot parse %q", l)
		}
		rows = append(rows, groupRow{topic: f[1], partition: int32(p), current: cur, logEnd: end, lag: lag})
	}
	if !header {
		t.Fatalf("kafka-consumer-groups --describe printed no offsets table:\n%s\n%s", tail(stdout, 2000), tail(stderr, 2000))
	}
	return rows
}
