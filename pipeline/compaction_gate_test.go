package pipeline

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// TestOpenStoreDefersCompactions opens a checkpoint whose WAL holds
// unflushed writes over an L0 that wants compacting: Pebble's Open flushes
// the recovered memtable, which schedules a compaction, and would wait for
// it. No compaction may start before OpenStore returns, and the one the
// store needs must still run afterwards.
func TestOpenStoreDefersCompactions(t *testing.T) {
	dir := t.TempDir()
	src, err := OpenStore(filepath.Join(dir, "live"), StoreOptions{Tune: func(o *pebble.Options) {
		o.DisableAutomaticCompactions = true // keep every flush in L0
	}})
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, 60)
	write := func(n, stride int) {
		b := src.db.NewBatch()
		for i := 0; i < n; i++ {
			if err := b.Set(fmt.Appendf(nil, "a/%09d", i*stride%100_003), val, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := src.db.Apply(b, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	write(100_000, 7919)
	for round := 0; round < 4; round++ {
		if err := src.db.Flush(); err != nil {
			t.Fatal(err)
		}
		write(10_000, 31+round*2)
	}
	ck := filepath.Join(dir, "ck")
	if err := src.Checkpoint(ck); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	var opened atomic.Bool
	var early, after atomic.Int32
	st, err := OpenStore(ck, StoreOptions{Tune: func(o *pebble.Options) {
		o.EventListener = &pebble.EventListener{
			CompactionBegin: func(pebble.CompactionInfo) {
				if opened.Load() {
					after.Add(1)
				} else {
					early.Add(1)
				}
			},
		}
	}})
	opened.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := early.Load(); n != 0 {
		t.Fatalf("%d compactions started before OpenStore returned", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.db.Metrics().Levels[0].TablesCount > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("L0 still holds %d tables 30 s after open (%d compactions started)", st.db.Metrics().Levels[0].TablesCount, after.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after.Load() == 0 {
		t.Fatal("L0 emptied without a compaction: the test did not set up the case it is about")
	}
}
