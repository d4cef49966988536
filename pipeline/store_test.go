package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
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
	s, err := OpenStore(filepath.Join(t.TempDir(), "live"), StoreOptions{Cache: cache})
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
	r, err := OpenStore(ck, StoreOptions{Cache: cache})
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

func TestOverlayAbortDiscards(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ov := newOverlay(st)
	_ = ov.Set([]byte("k"), []byte("committed"))
	if err := ov.apply(10); err != nil {
		t.Fatal(err)
	}
	_ = ov.Set([]byte("k"), []byte("aborted"))
	_ = ov.Set([]byte("k2"), []byte("aborted"))
	if v, _, _ := ov.Get([]byte("k")); string(v) != "aborted" {
		t.Fatalf("reads must see the epoch's writes, got %q", v)
	}
	ov.reset() // epoch aborted
	if v, ok, _ := st.Get([]byte("k")); !ok || string(v) != "committed" {
		t.Fatalf("store has %q after abort", v)
	}
	if _, ok, _ := st.Get([]byte("k2")); ok {
		t.Fatal("aborted write reached the store")
	}
	if off, _ := st.Offset(); off != 10 {
		t.Fatalf("offset %d", off)
	}
}

// TestDeleteKeys: the API operators remove state with outside an epoch
// (Expirer) deletes committed keys so that a later epoch does not read
// them, keeps the offset, and refuses the offset key; NewIter sees the
// committed keys in its bounds only.
func TestDeleteKeys(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ov := newOverlay(st)
	for _, k := range []string{"a/1", "a/2", "x/1", "x/2", "x/3", "y/1"} {
		_ = ov.Set([]byte(k), []byte("v"+k))
	}
	if err := ov.apply(7); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ov.Get([]byte("x/1")); !ok {
		t.Fatal("x/1 not found")
	}
	ov.reset()

	keys := func(lower, upper string) []string {
		t.Helper()
		var lo, up []byte
		if lower != "" {
			lo = []byte(lower)
		}
		if upper != "" {
			up = []byte(upper)
		}
		it, err := st.NewIter(lo, up)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var ks []string
		for it.First(); it.Valid(); it.Next() {
			ks = append(ks, string(it.Key()))
		}
		return ks
	}
	if got := keys("x/", "x0"); !slices.Equal(got, []string{"x/1", "x/2", "x/3"}) {
		t.Fatalf("NewIter(x/, x0) = %q", got)
	}

	if err := st.DeleteKeys([][]byte{[]byte("x/1"), []byte("x/2"), []byte("a/1")}); err != nil {
		t.Fatal(err)
	}
	if got := keys("", "\xff"); !slices.Equal(got, []string{"a/2", "x/3", "y/1"}) {
		t.Fatalf("after DeleteKeys: %q", got)
	}
	if _, ok, _ := newOverlay(st).Get([]byte("x/1")); ok {
		t.Fatal("a later epoch still reads a deleted key")
	}
	if off, _ := st.Offset(); off != 7 {
		t.Fatalf("offset %d after DeleteKeys, want 7", off)
	}
	if err := st.DeleteKeys([][]byte{[]byte("a/2"), offsetKey}); err == nil {
		t.Fatal("DeleteKeys deleted the offset key")
	}
	if _, ok, _ := st.Get([]byte("a/2")); !ok {
		t.Fatal("a refused DeleteKeys call deleted some of its keys")
	}
	if off, _ := st.Offset(); off != 7 {
		t.Fatalf("offset %d after a refused DeleteKeys, want 7", off)
	}
	if err := st.DeleteKeys(nil); err != nil {
		t.Fatal(err)
	}
}

// Pebble reserves each store's memtables from the block cache; OpenStore
// grants the cache that much back per open store, so that a cache shared by
// several stores still holds blocks: a second pass over the keys of three
// stores sharing a 4 MiB cache reads no block from disk again.
func TestSharedCacheHoldsBlocks(t *testing.T) {
	cache := NewCache(4 << 20)
	defer cache.Unref()
	var stores []*Store
	for i := 0; i < 3; i++ {
		s, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ov := newOverlay(s)
		for k := 0; k < 5000; k++ {
			_ = ov.Set([]byte(fmt.Sprintf("a/%06d", k)), []byte("some value of an account"))
		}
		if err := ov.apply(1); err != nil {
			t.Fatal(err)
		}
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	pass := func() int64 {
		before := cache.Metrics().Misses
		for _, s := range stores {
			for k := 0; k < 5000; k++ {
				if _, ok, err := s.Get([]byte(fmt.Sprintf("a/%06d", k))); !ok || err != nil {
					t.Fatalf("key %d: %v %v", k, ok, err)
				}
			}
		}
		return cache.Metrics().Misses - before
	}
	first, second := pass(), pass()
	if first == 0 || second != 0 {
		t.Fatalf("block cache misses: %d in the first pass, %d in the second; want some, then none", first, second)
	}
}
