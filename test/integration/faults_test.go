package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/txstream/txstream/test/kafkatest"
)

// Broker fault tests: a consumer processes steadily produced input on a
// three-node Apache Kafka cluster (test/kafkatest.StartCluster: KRaft,
// every node broker and controller, replication factor 3, min ISR 2)
// while brokers are killed or restarted under it. After each scenario the
// consumer catches up, stops, a last run goes to idle, and every output
// record's running aggregate is checked against synth (exactly once).
//
// They start three JVMs per scenario and take ~10 minutes in all, so they
// run only with TXSTREAM_FAULT_TESTS=1 (make test-faults).
const (
	faultEnv      = "TXSTREAM_FAULT_TESTS"
	faultGroup    = "txstream" // the consumer's default --group
	faultInstance = "c1"
	faultTxnID    = "txstream-" + faultGroup + "-" + faultInstance // the consumer's default --transactional-id
	faultRows     = 60_000
	faultAccounts = 1000
)

// faultScenario is one fault under load, on one Kafka version.
type faultScenario struct {
	name    string
	version string        // Kafka version; "" = kafkatest.Version() (4.x)
	inputs  time.Duration // how long the input is produced (it must outlast the fault)
	extra   []string      // more consumer flags
	// netns: the cluster listens on the host end of a veth pair, the
	// consumer runs in a network namespace behind it, and the fault can
	// cut it off from single brokers (root and iproute2 needed).
	netns bool
	fault func(f *faultRun)
}

func TestBrokerFaults(t *testing.T) {
	if os.Getenv(faultEnv) != "1" {
		t.Skipf("broker fault tests (three-node Kafka cluster, ~10 min): set %s=1 or run make test-faults", faultEnv)
	}
	if os.Getenv("TXSTREAM_TEST_BROKER") == brokerKfake {
		t.Skip("TXSTREAM_TEST_BROKER=kfake: the broker fault tests need real Apache Kafka")
	}
	if ok, why := kafkatest.Available(); !ok {
		t.Skipf("broker fault tests need real Apache Kafka: %s", why)
	}
	scenarios := []faultScenario{
		{name: "input-leader-kill", inputs: 45 * time.Second, fault: faultKillInputLeader},
		{name: "output-leader-kill", inputs: 45 * time.Second, fault: faultKillOutputLeader},
		// A longer epoch, so that the kill lands in a transaction with
		// output, offsets and progress records in it.
		{name: "txn-coordinator-kill", inputs: 45 * time.Second, extra: []string{"--commit-interval", "1s"}, fault: faultKillTxnCoordinator},
		{name: "rolling-restart", inputs: 80 * time.Second, fault: faultRollingRestart},
		// Kafka 3.9: transactions v1 (no KIP-890 server-side defence).
		{name: "txn-coordinator-kill-kafka3.9", version: "3.9.2", inputs: 45 * time.Second, extra: []string{"--commit-interval", "1s"}, fault: faultKillTxnCoordinator},
		{name: "rolling-restart-kafka3.9", version: "3.9.2", inputs: 80 * time.Second, fault: faultRollingRestart},
		// The consumer, not the broker, is cut off: from its group
		// coordinator, for longer than its session and transaction
		// timeouts, while the cluster itself stays healthy.
		{name: "partition-from-group-coordinator", inputs: 60 * time.Second, netns: true, fault: faultPartitionGroupCoordinator},
		// A broker's disk fills up under load (a loop file system).
		{name: "disk-full", inputs: 75 * time.Second, fault: faultDiskFull},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runFaultScenario(t, sc, uint64(900+i)) })
	}
}

// faultRun is a scenario in progress.
type faultRun struct {
	t     *testing.T
	c     *kafkatest.Cluster
	net   *faultNet // nil unless the scenario is netns
	cons  *consumerProc
	began time.Time
}

func (f *faultRun) logf(format string, args ...any) {
	f.t.Helper()
	f.t.Logf("t+%5.1fs "+format, append([]any{time.Since(f.began).Seconds()}, args...)...)
}

func runFaultScenario(t *testing.T, sc faultScenario, seed uint64) {
	bins := buildBinaries(t)
	ds := genDataset(t, faultRows, faultAccounts, seed)
	dir := t.TempDir()
	opts := kafkatest.ClusterOptions{Dir: filepath.Join(dir, "kafka"), Version: sc.version,
		Topics: []string{"transactions"}, Partitions: 3}
	var fnet *faultNet
	if sc.netns {
		fnet = setupFaultNet(t, 3)
		opts.Hosts = fnet.hosts
	}
	began := time.Now()
	c := kafkatest.StartCluster(t, opts)
	clusterStart := time.Since(began)
	f := &faultRun{t: t, c: c, net: fnet, began: time.Now()}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var produced atomic.Int64
	prodErr := make(chan error, 1)
	// Every node is a seed; the input is spread over sc.inputs.
	rate := max(1, int(float64(len(ds.lines))/sc.inputs.Seconds()))
	go func() {
		_, err := produceRows(ctx, c.Bootstrap(), ds.lines, rowInput{rate: rate, acked: &produced})
		prodErr <- err
	}()

	args := consumerArgs(c.Bootstrap(), dir, faultInstance, append([]string{
		// Broker faults fail attempts; the job must ride them out however
		// many there are (the default fixed-delay gives up after 3).
		"--restart-strategy", "exponential-delay", "--restart-initial-backoff", "500ms", "--restart-max-backoff", "4s",
	}, sc.extra...)...)
	saveFaultLog(t, sc.name+"-consumer.log", func() string {
		if f.cons == nil {
			return ""
		}
		return f.cons.log.String()
	})
	if fnet != nil {
		f.cons = startConsumerIn(t, fnet.ns, bins, args...)
		f.logf("consumer runs in network namespace %s; brokers at %s", fnet.ns, c.Bootstrap())
	} else {
		f.cons = startConsumer(t, bins, nil, args...)
	}

	// The fault comes once the consumer is well into the input.
	f.waitCommitted(int64(faultRows/5), 2*time.Minute)
	f.logf("consumer committed >= %d of %d produced records; fault %s begins (Kafka %s)", faultRows/5, produced.Load(), sc.name, c.Version)
	faultBegan := time.Now()
	sc.fault(f)
	faultTook := time.Since(faultBegan)
	f.logf("fault over after %v", faultTook.Round(time.Millisecond))

	if err := <-prodErr; err != nil {
		t.Fatalf("producing the input: %v", err)
	}
	f.logf("input complete: %d records", produced.Load())
	if err := c.WaitHealthy(0); err != nil {
		t.Fatal(err)
	}
	catchUp := time.Now()
	caughtUp := f.waitCaughtUp(3 * time.Minute)
	catchUpTook := time.Since(catchUp)
	select {
	case <-f.cons.done:
		t.Errorf("the consumer exited (code %d) during or after the fault instead of riding it out; log tail:\n%s",
			f.cons.code, tail(f.cons.log.String(), 4000))
	default:
		if !caughtUp {
			t.Errorf("the consumer did not catch up within 3 minutes of the input's end; log tail:\n%s", tail(f.cons.log.String(), 4000))
		}
		_ = f.cons.cmd.Process.Signal(syscall.SIGTERM)
		if !f.cons.wait(time.Minute) {
			t.Errorf("the consumer did not stop within a minute of SIGTERM")
			f.cons.kill()
		} else if f.cons.code != 0 {
			t.Errorf("the consumer exited %d on SIGTERM; log tail:\n%s", f.cons.code, tail(f.cons.log.String(), 4000))
		}
	}
	f.logf("consumer caught up in %v after the input's end; %s; warnings: %s", catchUpTook.Round(time.Millisecond),
		faultRestarts(f.cons.log.String()), faultWarnings(f.cons.log.String()))
	if errs := grepLines(f.cons.log.String(), `"level":"error"`, 5); errs != "" {
		t.Logf("the consumer logged errors:\n%s", errs)
	}

	var final *consumerProc
	saveFaultLog(t, sc.name+"-final.log", func() string {
		if final == nil {
			return ""
		}
		return final.log.String()
	})
	final = runToIdle(t, bins, consumerArgs(c.Bootstrap(), dir, faultInstance))
	f.logf("final run to idle done; %s", faultRestarts(final.log.String()))
	verifyOutput(t, c.Addrs[0], ds.exp)
	t.Logf("scenario %s (Kafka %s): cluster start %v, fault %v, catch-up %v, scenario %v; %d rows (%d valid, %d duplicates, %d bad)",
		sc.name, c.Version, clusterStart.Round(time.Millisecond), faultTook.Round(time.Millisecond), catchUpTook.Round(time.Millisecond),
		time.Since(began).Round(time.Second), faultRows, ds.exp.Valid, ds.exp.Duplicates, ds.exp.Bad)
}

// saveFaultLog writes log() to $TXSTREAM_FAULT_LOG_DIR/name when the test
// ends, if that variable is set (for reading a passing run's logs too).
func saveFaultLog(t *testing.T, name string, log func() string) {
	dir := os.Getenv("TXSTREAM_FAULT_LOG_DIR")
	if dir == "" {
		return
	}
	t.Cleanup(func() {
		if s := log(); s != "" {
			_ = os.MkdirAll(dir, 0o755)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
				t.Log(err)
			}
		}
	})
}

// committed is the group's committed input offsets, summed over the
// partitions (-1 on error).
func (f *faultRun) committed() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := f.c.Admin().FetchOffsetsForTopics(ctx, faultGroup, "transactions")
	if err != nil {
		return -1
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At > 0 {
			n += o.At
		}
	})
	return n
}

func (f *faultRun) waitCommitted(n int64, timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for f.committed() < n {
		select {
		case <-f.cons.done:
			f.t.Fatalf("the consumer exited %d before the fault; log tail:\n%s", f.cons.code, tail(f.cons.log.String(), 4000))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the consumer did not commit %d records within %v; log tail:\n%s", n, timeout, tail(f.cons.log.String(), 4000))
		}
	}
}

// waitCaughtUp waits until the group's committed offsets reach the input's
// end offsets, while the consumer runs; it reports whether they did.
func (f *faultRun) waitCaughtUp(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ends, err := f.c.Admin().ListEndOffsets(ctx, "transactions")
		cancel()
		if err == nil {
			var end int64
			ends.Each(func(o kadm.ListedOffset) {
				if o.Err == nil {
					end += o.Offset
				}
			})
			if end > 0 && f.committed() == end {
				return true
			}
		}
		select {
		case <-f.cons.done:
			return false
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// roles describes what node i does: the partitions it leads, by topic, and
// whether it coordinates the consumer's group or transactions.
func (f *faultRun) roles(i int) string {
	byTopic := map[string][]string{}
	for _, tp := range f.c.Leaders()[i] {
		topic, p, _ := strings.Cut(tp, "/")
		byTopic[topic] = append(byTopic[topic], p)
	}
	topics := make([]string, 0, len(byTopic))
	for tp := range byTopic {
		topics = append(topics, tp)
	}
	sort.Strings(topics)
	var parts []string
	for _, tp := range topics {
		parts = append(parts, tp+"/"+strings.Join(byTopic[tp], ","))
	}
	s := "leads " + strings.Join(parts, " ")
	if f.c.GroupCoordinatorOf(faultGroup) == i {
		s += "; group coordinator"
	}
	if f.c.TxnCoordinatorOf(faultTxnID) == i {
		s += "; transaction coordinator of " + faultTxnID
	}
	return s
}

// pick returns the first candidate that is none of avoid (the first
// candidate if all are).
func pick(cands []int, avoid ...int) int {
	for _, c := range cands {
		ok := true
		for _, a := range avoid {
			ok = ok && c != a
		}
		if ok {
			return c
		}
	}
	return cands[0]
}

// leadersOf is the nodes leading topic's partitions 0..n-1.
func (f *faultRun) leadersOf(topic string, n int32) []int {
	var out []int
	for p := int32(0); p < n; p++ {
		out = append(out, f.c.LeaderOf(topic, p))
	}
	return out
}

// killAndRestart SIGKILLs node i, leaves it down for down (longer than
// broker.session.timeout.ms, so that the controller fences it and its
// partitions move), and restarts it.
func (f *faultRun) killAndRestart(i int, why string, down time.Duration) {
	f.t.Helper()
	f.logf("SIGKILL node %d (%s): %s", i, why, f.roles(i))
	f.c.Kill(i)
	time.Sleep(down)
	f.logf("restarting node %d", i)
	f.c.Restart(i)
	f.logf("node %d back, cluster healthy", i)
}

// faultKillInputLeader: SIGKILL the leader of an input partition (one
// that coordinates neither the group nor the transactions, where there is
// one), then restart it.
func faultKillInputLeader(f *faultRun) {
	ls := f.leadersOf("transactions", 3)
	i := pick(ls, f.c.GroupCoordinatorOf(faultGroup), f.c.TxnCoordinatorOf(faultTxnID))
	f.killAndRestart(i, fmt.Sprintf("leader of transactions/%d", indexOf(ls, i)), 8*time.Second)
}

// faultKillOutputLeader: SIGKILL the leader of an output partition (one
// that coordinates neither the group nor the transactions, where there is
// one), then restart it.
func faultKillOutputLeader(f *faultRun) {
	ls := f.leadersOf("transactions-out", 3)
	i := pick(ls, f.c.GroupCoordinatorOf(faultGroup), f.c.TxnCoordinatorOf(faultTxnID))
	f.killAndRestart(i, fmt.Sprintf("leader of transactions-out/%d", indexOf(ls, i)), 8*time.Second)
}

// faultKillTxnCoordinator: SIGKILL the coordinator of the consumer's
// transactional id while its transaction is open (Ongoing: output,
// offsets and progress records added, no EndTxn yet), then restart it.
func faultKillTxnCoordinator(f *faultRun) {
	i := f.c.TxnCoordinatorOf(faultTxnID)
	deadline := time.Now().Add(30 * time.Second)
	state := ""
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ds, err := f.c.Admin().DescribeTransactions(ctx, faultTxnID)
		cancel()
		if err == nil {
			if d, ok := ds[faultTxnID]; ok && d.Err == nil {
				var tps []string
				d.Topics.EachPartitions(func(t string, ps []int32) { tps = append(tps, fmt.Sprintf("%s%v", t, ps)) })
				sort.Strings(tps)
				state = fmt.Sprintf("%s, producer id %d epoch %d, partitions %s", d.State, d.ProducerID, d.ProducerEpoch, strings.Join(tps, " "))
				if d.State == "Ongoing" {
					break
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.logf("transaction %s: %s", faultTxnID, state)
	f.killAndRestart(i, "transaction coordinator", 8*time.Second)
}

// faultRollingRestart: SIGTERM each node in turn (a controlled shutdown:
// its leaderships and coordinators move first), leave it down briefly,
// restart it and wait until the cluster is healthy (no under-replicated
// partition), then the next.
func faultRollingRestart(f *faultRun) {
	for i := range f.c.Nodes {
		f.logf("SIGTERM node %d: %s", i, f.roles(i))
		began := time.Now()
		f.c.Stop(i)
		f.logf("node %d stopped in %v", i, time.Since(began).Round(time.Millisecond))
		time.Sleep(3 * time.Second)
		f.c.Restart(i)
		f.logf("node %d back, cluster healthy", i)
	}
}

func indexOf(s []int, x int) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

var faultWarn = regexp.MustCompile(`"level":"warn".*?"msg":"([^"]*)"`)

// faultWarnings counts a consumer log's warnings by message.
func faultWarnings(log string) string {
	n := map[string]int{}
	for _, m := range faultWarn.FindAllStringSubmatch(log, -1) {
		n[m[1]]++
	}
	if len(n) == 0 {
		return "none"
	}
	msgs := make([]string, 0, len(n))
	for m := range n {
		msgs = append(msgs, m)
	}
	sort.Strings(msgs)
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%dx %q", n[m], m))
	}
	return strings.Join(out, ", ")
}

var faultTransition = regexp.MustCompile(`"msg":"job RUNNING -> RESTARTING".*?"cause":"([^"]{0,160})`)

// faultRestarts summarises the attempts a consumer log shows failing.
func faultRestarts(log string) string {
	ms := faultTransition.FindAllStringSubmatch(log, -1)
	if len(ms) == 0 {
		return "no attempt failed"
	}
	var causes []string
	for _, m := range ms {
		causes = append(causes, m[1])
	}
	if len(causes) > 4 {
		causes = append(causes[:4], fmt.Sprintf("and %d more", len(causes)-4))
	}
	return fmt.Sprintf("%d attempts failed and were restarted: %s", len(ms), strings.Join(causes, " | "))
}

// faultPartitionGroupCoordinator cuts the consumer off from the node that
// coordinates its group (a blackhole route in the consumer's namespace:
// its packets to that node go nowhere) for 25 s, well past its session
// timeout (10 s) and transaction timeout (10 s), then heals the cut. The
// group expires the member meanwhile, and the transaction of the epoch in
// flight, whose offsets only that node can take, is aborted by its
// coordinator on timeout; the consumer must come back, rejoin and redo the
// epoch, without the cut-off attempt committing anything.
func faultPartitionGroupCoordinator(f *faultRun) {
	k := f.c.GroupCoordinatorOf(faultGroup)
	f.logf("cutting the consumer off from node %d (%s): %s", k, f.c.Addrs[k], f.roles(k))
	f.net.cut(k)
	time.Sleep(25 * time.Second)
	f.net.heal(k)
	f.logf("cut healed")
}

// faultNet is a network namespace for the consumer, joined to the host by
// a veth pair whose host end carries one address per broker.
type faultNet struct {
	t     *testing.T
	ns    string
	hosts []string // the brokers' addresses, on the host end
}

// setupFaultNet creates the namespace and the veth pair (removed when the
// test ends); it skips the test (one line) where that is not possible.
func setupFaultNet(t *testing.T, n int) *faultNet {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("network partition scenario: needs Linux and root (ip netns, veth)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network partition scenario: needs iproute2 (ip) on PATH")
	}
	// A /24 of 10.231.0.0/16 that no interface has an address in.
	used, _ := exec.Command("ip", "-o", "-4", "addr").Output()
	third := 0
	for k := 0; k < 250 && third == 0; k++ {
		x := (os.Getpid()+k)%250 + 1
		if !bytes.Contains(used, []byte(fmt.Sprintf(" 10.231.%d.", x))) {
			third = x
		}
	}
	if third == 0 {
		t.Skip("network partition scenario: no free subnet in 10.231.0.0/16")
	}
	fn := &faultNet{t: t, ns: fmt.Sprintf("txsf-%d-%d", os.Getpid(), third)}
	hostIf, nsIf := fmt.Sprintf("txsf%dh", third), fmt.Sprintf("txsf%dc", third)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", fn.ns).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run() // gone with the namespace's end, normally
	})
	steps := [][]string{
		{"netns", "add", fn.ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", fn.ns},
	}
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("10.231.%d.%d", third, i+1)
		fn.hosts = append(fn.hosts, h)
		steps = append(steps, []string{"addr", "add", h + "/24", "dev", hostIf})
	}
	steps = append(steps,
		[]string{"link", "set", hostIf, "up"},
		[]string{"-n", fn.ns, "addr", "add", fmt.Sprintf("10.231.%d.100/24", third), "dev", nsIf},
		[]string{"-n", fn.ns, "link", "set", nsIf, "up"},
		[]string{"-n", fn.ns, "link", "set", "lo", "up"},
	)
	for i, st := range steps {
		if out, err := exec.Command("ip", st...).CombinedOutput(); err != nil {
			if i == 0 {
				t.Skipf("network partition scenario: cannot create a network namespace here: ip %s: %v: %s",
					strings.Join(st, " "), err, strings.TrimSpace(string(out)))
			}
			t.Fatalf("ip %s: %v: %s", strings.Join(st, " "), err, out)
		}
	}
	return fn
}

// cut drops everything the namespace sends to node i; heal undoes it.
func (fn *faultNet) cut(i int)  { fn.route("add", i) }
func (fn *faultNet) heal(i int) { fn.route("del", i) }

func (fn *faultNet) route(op string, i int) {
	fn.t.Helper()
	if out, err := exec.Command("ip", "-n", fn.ns, "route", op, "blackhole", fn.hosts[i]+"/32").CombinedOutput(); err != nil {
		fn.t.Fatalf("ip -n %s route %s blackhole %s: %v: %s", fn.ns, op, fn.hosts[i], err, out)
	}
}

// startConsumerIn is startConsumer inside network namespace ns (ip netns
// exec execs the consumer, so the process is the consumer itself).
func startConsumerIn(t *testing.T, ns string, bins *Binaries, args ...string) *consumerProc {
	t.Helper()
	return runConsumer(t, exec.Command("ip", append([]string{"netns", "exec", ns, bins.Path("consumer")}, args...)...))
}
