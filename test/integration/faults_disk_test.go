package integration

import (
	"fmt"
	"strings"
	"time"

	"github.com/txstream/txstream/test/kafkatest"
)

// diskFullFree is how much room node's disk has left when it restarts: less
// than the replicas it must catch up on plus what the load adds.
const diskFullFree = 2 << 20

// faultDiskFull: one node (coordinating neither the group nor the
// transactions, where there is one) is stopped, its data moved onto a
// small file system with a few MiB free, and started again. Under load its
// disk fills up: Kafka fails the log directory and the node halts. Then the
// space is given back (as an operator would grow the volume) and the node
// restarted; the consumer must ride it out with its output exactly once.
func faultDiskFull(f *faultRun) {
	if ok, why := kafkatest.SmallDiskAvailable(); !ok {
		f.t.Skipf("disk-full scenario: %s", why)
	}
	i := pick([]int{0, 1, 2}, f.c.GroupCoordinatorOf(faultGroup), f.c.TxnCoordinatorOf(faultTxnID))
	f.logf("node %d (%s): moving its data onto a small disk", i, f.roles(i))
	d, err := f.c.LimitDisk(i, diskFullFree)
	if err != nil {
		f.t.Fatalf("node %d: %v", i, err)
	}
	began := time.Now()
	if err := f.c.StartNode(i); err != nil {
		f.logf("node %d did not finish starting: %v", i, firstLine(err.Error()))
	} else {
		f.logf("node %d serving with %d KiB free", i, d.Free()>>10)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for f.c.Running(i) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if f.c.Running(i) {
		f.t.Fatalf("node %d still runs 2 minutes after its disk had %d KiB free (%d KiB now)", i, diskFullFree>>10, d.Free()>>10)
	}
	logs := f.c.Nodes[i].Logs()
	if !strings.Contains(logs, "No space left on device") {
		f.t.Fatalf("node %d stopped, but its log does not say the disk was full:\n%s", i, tail(logs, 3000))
	}
	f.logf("node %d halted %v after its start, disk full: %s", i, time.Since(began).Round(time.Millisecond),
		firstLine(grepLines(logs, "No space left on device", 1)))
	if err := d.RemoveBallast(); err != nil {
		f.t.Fatal(err)
	}
	f.logf("space given back (%d MiB free); restarting node %d", d.Free()>>20, i)
	f.c.Restart(i)
	f.logf("node %d back, cluster healthy", i)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 300 {
		s = s[:300] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}
