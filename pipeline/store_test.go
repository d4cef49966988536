package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// walBytes sums the WAL files (*.log) a checkpoint copied.
func walBytes(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") {
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			n += info.Size()
		}
	}
	return n
}

// TestPrepareCheckpointFlushesBigWAL checks the pre-checkpoint flush: a
// WAL under the threshold is left alone (nothing to wait for); a bigger one
// is flushed, the checkpoint that follows copies (almost) no WAL, and every
// write is still in the checkpoint, including those made during the flush.
func TestPrepareCheckpointFlushesBigWAL(t *testing.T) {
	cache := NewCache(8 << 20)
	defer cache.Unref()
	s, err := OpenStore(filepath.Join(t.TempDir(), "live"), zap.NewNop(), cache)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(from, to int, next int64) {
		o := newOverlay(s)
		for i := from; i < to; i++ {
			if err := o.Set([]byte(fmt.Sprintf("k%08d", i)), []byte(strings.Repeat("v", 100))); err != nil {
				t.Fatal(err)
			}
		}
		if err := o.apply(next); err != nil {
			t.Fatal(err)
		}
	}

	write(0, 100, 1) // ~12 KB of WAL
	ch, err := s.PrepareCheckpoint(CheckpointFlushMin)
	if err != nil || ch != nil {
		t.Fatalf("small WAL: PrepareCheckpoint = %v, %v; want nothing to flush", ch, err)
	}

	// Three rounds of ~2.4 MB, each flushed before a checkpoint: from the
	// third on, a recycled WAL (physical size ~2.4 MB) would be reused if
	// the store recycled WAL files.
	next := int64(2)
	for round := range 3 {
		from := 100 + round*20_000
		write(from, from+20_000, next)
		next++
		ch, err = s.PrepareCheckpoint(CheckpointFlushMin)
		if err != nil || ch == nil {
			t.Fatalf("round %d, big WAL: PrepareCheckpoint = %v, %v; want a flush", round, ch, err)
		}
		<-ch
	}
	write(60_100, 60_110, next) // after the flushes: in the new memtable
	ck := filepath.Join(t.TempDir(), "ck")
	if err := s.Checkpoint(ck); err != nil {
		t.Fatal(err)
	}
	if n := walBytes(t, ck); n >= CheckpointFlushMin/4 {
		t.Errorf("checkpoint after the flushes copied %d bytes of WAL; want the short tail only (a recycled WAL is copied whole)", n)
	}

	// The checkpoint opens with every write and the last offset.
	r, err := OpenStore(ck, zap.NewNop(), cache)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, i := range []int{0, 99, 100, 19_999, 20_100, 60_099, 60_100, 60_109} {
		if _, ok, err := r.Get([]byte(fmt.Sprintf("k%08d", i))); err != nil || !ok {
			t.Errorf("key %d missing from the checkpoint (%v)", i, err)
		}
	}
	if off, err := r.Offset(); err != nil || off != next {
		t.Errorf("checkpoint offset = %d, %v; want %d", off, err, next)
	}
}
