package integration

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
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
	go func() { prodErr <- produceRaw(ctx, t, broker.Addr, ds.lines, 10_000) }() // 6 s of live input

	extra := []string{"--session-timeout", "6s", "--exit-when-idle", "12s"}
	a := startConsumer(t, bins, nil, consumerArgs(broker.Addr, dir, "a", extra...)...)
	b := startConsumer(t, bins, nil, consumerArgs(broker.Addr, dir, "b", extra...)...)

	// Wait until b owns partitions and has published a snapshot, then kill it.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(b.log.String(), "snapshot published") {
		if time.Now().After(deadline) {
			t.Fatalf("consumer b never published a snapshot; log:\n%s", tail(b.log.String(), 3000))
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
	if !a.wait(3 * time.Minute) {
		t.Fatalf("survivor did not finish; log tail:\n%s", tail(a.log.String(), 4000))
	}
	if a.code != 0 {
		t.Fatalf("survivor exited %d; log tail:\n%s", a.code, tail(a.log.String(), 4000))
	}
	// The survivor must have recovered at least one partition from a
	// snapshot it did not write itself (b's), after b's session expired.
	// b's partitions, from b's log; the survivor must have recovered each
	// of them after the kill (from b's snapshot, or by replay if b had not
	// snapshotted it yet).
	var bOwned struct {
		Partitions []int32 `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(grepLines(b.log.String(), "partitions assigned", 1)), &bOwned); err != nil || len(bOwned.Partitions) == 0 {
		t.Fatalf("cannot tell which partitions b owned (%v): %s", err, owned)
	}
	for _, p := range bOwned.Partitions {
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
			t.Errorf("survivor never recovered b's partition %d after the kill:\n%s", p, grepLines(a.log.String(), "recovering partition", 20))
		}
	}
	readAll(t, broker.Addr).verify(t, ds.exp)
	if t.Failed() {
		t.Logf("survivor log:\n%s", grepLines(a.log.String(), `"level":"`, 60))
	}
}
