package integration

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTwoConsumersHandOver runs two consumers in one group with their own
// data directories and a shared checkpoint directory, kills one mid-run,
// and checks that the survivor takes over its partitions, restoring their
// state from the other's snapshots, with exactly-once output.
func TestTwoConsumersHandOver(t *testing.T) {
	bins := buildBinaries(t)
	ds := genDataset(t, 60_000, 500, 7)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", "transactions", "--partitions", "4")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodErr := make(chan error, 1)
	go func() { prodErr <- produceRaw(ctx, broker.Addr, ds.lines, 10_000) }() // 6 s of live input

	// A short rebalance timeout bounds a join that waits for a member
	// killed in the middle of a rebalance (brokers wait for it to rejoin
	// until its session or the rebalance timeout expires).
	// The survivor runs until the test has seen it take over and commit
	// everything (an idle exit would race the group noticing b's death,
	// which takes the session timeout plus the broker's check, longer on a
	// loaded machine), then stops on SIGTERM.
	extra := []string{"--session-timeout", "6s", "--rebalance-timeout", "15s"}
	a := startConsumer(t, bins, nil, consumerArgs(broker.Addr, dir, "a", extra...)...)
	b := startConsumer(t, bins, nil, consumerArgs(broker.Addr, dir, "b", extra...)...)

	// Wait until the group has settled with partitions on both members
	// and b has published a snapshot, then kill b: a real hand-over of
	// partitions with state, not a member that never owned anything.
	deadline := time.Now().Add(90 * time.Second)
	for !(ownsPartitions(a.log.String()) && ownsPartitions(b.log.String()) &&
		strings.Contains(b.log.String(), "snapshot published")) {
		if time.Now().After(deadline) {
			t.Fatalf("the group never split the partitions between a and b with a snapshot from b; a:\n%s\nb:\n%s",
				grepLines(a.log.String(), "partitions", 10), tail(b.log.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.kill()
	killedAt := time.Now()
	owned := grepLines(b.log.String(), "partitions assigned", 5)
	t.Logf("killed b; it owned: %s", owned)

	if err := <-prodErr; err != nil {
		t.Fatal(err)
	}
	// b's partitions, from b's log; the survivor must recover each of them
	// after the kill (from b's snapshot, or by replay if b had not
	// snapshotted it yet).
	bOwned := ownedPartitions(b.log.String())
	if len(bOwned) == 0 {
		t.Fatalf("cannot tell which partitions b owned: %s", owned)
	}
	finishAfterTakeover(t, a, bOwned, killedAt, broker.Addr, int64(len(ds.lines)))
	if a.code != 0 {
		t.Fatalf("survivor exited %d on SIGTERM; log tail:\n%s", a.code, tail(a.log.String(), 4000))
	}
	verifyOutput(t, broker.Addr, ds.exp)
	if t.Failed() {
		t.Logf("survivor log:\n%s", grepLines(a.log.String(), `"level":"`, 60))
	}
}

// ownedPartitions replays a consumer's assignment log lines (assigned,
// revoked, lost, released) to the set it owns at the end of the log.
func ownedPartitions(log string) map[int32]bool {
	owned := map[int32]bool{}
	for _, line := range strings.Split(log, "\n") {
		var ev struct {
			Msg        string  `json:"msg"`
			Partitions []int32 `json:"partitions"`
			Partition  int32   `json:"partition"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		switch ev.Msg {
		case "partitions assigned":
			for _, p := range ev.Partitions {
				owned[p] = true
			}
		case "partitions revoked", "partitions lost":
			for _, p := range ev.Partitions {
				delete(owned, p)
			}
		case "partition released":
			delete(owned, ev.Partition)
		}
	}
	return owned
}

func ownsPartitions(log string) bool { return len(ownedPartitions(log)) > 0 }

// finishAfterTakeover waits until the survivor a has recovered each of
// the killed member's partitions (owned) after killedAt and the group has
// committed total records, then stops a with SIGTERM and waits for it. It
// does not rely on an idle timeout, which a slow takeover on a loaded
// machine could outrun.
func finishAfterTakeover(t *testing.T, a *consumerProc, owned map[int32]bool, killedAt time.Time, broker string, total int64) {
	t.Helper()
	tookOver := func() (missing []int32) {
		for p := range owned {
			took := false
			for _, line := range strings.Split(grepLines(a.log.String(), "recovering partition", 50), "\n") {
				var ev struct {
					TS        time.Time `json:"ts"`
					Partition int32     `json:"partition"`
				}
				if json.Unmarshal([]byte(line), &ev) == nil && ev.Partition == p && ev.TS.After(killedAt) {
					took = true
				}
			}
			if !took {
				missing = append(missing, p)
			}
		}
		return missing
	}
	for deadline := time.Now().Add(3 * time.Minute); len(tookOver()) > 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) || a.exited() {
			t.Fatalf("survivor never recovered partitions %v after the kill (exited: %v):\n%s",
				tookOver(), a.exited(), grepLines(a.log.String(), `"level":"`, 60))
		}
	}
	t.Logf("survivor took over partitions %v %v after the kill", owned, time.Since(killedAt).Round(time.Millisecond))
	if err := waitCommitted(broker, "txstream", total, 3*time.Minute, func() {}); err != nil {
		t.Fatalf("%v; survivor log tail:\n%s", err, tail(a.log.String(), 4000))
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	if !a.wait(time.Minute) {
		t.Fatalf("survivor did not stop within a minute of SIGTERM; log tail:\n%s", tail(a.log.String(), 4000))
	}
}
