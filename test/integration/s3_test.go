package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/txstream/txstream/test/s3test"
)

// TestS3HandOverThroughBucket runs two consumers of one group on separate
// directories (no shared filesystem: each has its own data directory and
// nothing else) with their checkpoints in one bucket of a real S3 server,
// kills one mid-run, and checks that the survivor takes over its
// partitions, restoring their state from the other's snapshots in the
// bucket, with exactly-once output; then the offline tools verify the
// bucket.
func TestS3HandOverThroughBucket(t *testing.T) {
	bins := buildBinaries(t)
	srv := s3test.Start(t)
	ds := genDataset(t, 60_000, 500, 11)
	broker := startBroker(t, filepath.Join(t.TempDir(), "broker"), "--topics", "transactions", "--partitions", "4")
	loc := srv.Location("handover")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodErr := make(chan error, 1)
	go func() { prodErr <- produceRaw(ctx, broker.Addr, ds.lines, 10_000) }() // 6 s of live input

	extra := []string{"--checkpoint-dir", loc, "--session-timeout", "6s", "--rebalance-timeout", "15s"}
	a := startConsumer(t, bins, srv.Env(), consumerArgs(broker.Addr, t.TempDir(), "a", extra...)...)
	b := startConsumer(t, bins, srv.Env(), consumerArgs(broker.Addr, t.TempDir(), "b", extra...)...)

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
	bOwned := ownedPartitions(b.log.String())
	if len(bOwned) == 0 {
		t.Fatalf("cannot tell which partitions b owned: %s", grepLines(b.log.String(), "partitions assigned", 5))
	}
	// Partitions b published a snapshot of: the survivor can only have
	// their state from the bucket.
	bSnap := map[int32]bool{}
	for _, line := range strings.Split(grepLines(b.log.String(), "snapshot published", 1000), "\n") {
		var ev struct {
			Partition int32 `json:"partition"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && bOwned[ev.Partition] {
			bSnap[ev.Partition] = true
		}
	}
	if err := <-prodErr; err != nil {
		t.Fatal(err)
	}
	finishAfterTakeover(t, a, bOwned, killedAt, broker.Addr, int64(len(ds.lines)))
	if a.code != 0 {
		t.Fatalf("survivor exited %d on SIGTERM; log tail:\n%s", a.code, tail(a.log.String(), 4000))
	}
	fromSnapshot := 0
	for p := range bOwned {
		took := false
		for _, line := range strings.Split(grepLines(a.log.String(), "recovering partition", 50), "\n") {
			var ev struct {
				TS        time.Time `json:"ts"`
				Partition int32     `json:"partition"`
				From      string    `json:"from"`
			}
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Partition == p && ev.TS.After(killedAt) {
				took = true
				if strings.HasPrefix(ev.From, "snapshot ") && bSnap[p] {
					fromSnapshot++
				}
			}
		}
		if !took {
			t.Errorf("survivor never recovered b's partition %d after the kill:\n%s", p, grepLines(a.log.String(), "recovering partition", 20))
		}
	}
	t.Logf("b owned %v and published snapshots of %v; the survivor restored %d of them from the bucket", bOwned, bSnap, fromSnapshot)
	if len(bSnap) > 0 && fromSnapshot == 0 {
		t.Errorf("b published snapshots of %v, but the survivor restored none of them from the bucket:\n%s",
			bSnap, grepLines(a.log.String(), "recovering partition", 20))
	}
	verifyOutput(t, broker.Addr, ds.exp)

	cmd := exec.Command(bins.Path("consumer"), "checkpoints", "verify", loc)
	cmd.Env = append(cmd.Environ(), srv.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("checkpoints verify %s: %v\n%s", loc, err, out)
	}
	if t.Failed() {
		t.Logf("survivor log:\n%s", grepLines(a.log.String(), `"level":"`, 60))
	}
}
