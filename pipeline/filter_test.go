package pipeline

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// The filter never rules out a committed key under its prefix: not one
// there before it was built, not one an epoch applied after, not after the
// rebuilds that follow deletions; a deleted key reads as absent; keys
// outside the prefix are not filtered.
func TestStoreFilterNeverHidesAKey(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := func(i int) []byte { return []byte(fmt.Sprintf("d/k%07d", i)) }
	ov := newOverlay(s)
	for i := 0; i < 1000; i++ {
		_ = ov.Set(key(i), []byte("v"))
		_ = ov.Set([]byte(fmt.Sprintf("a/%d", i)), []byte("a"))
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableFilter(prefixProber("d/")); err != nil {
		t.Fatal(err)
	}
	if s.filter.added != 1000 || s.filter.capacity != minFilterKeys {
		t.Fatalf("built with %d keys, capacity %d", s.filter.added, s.filter.capacity)
	}
	// A small capacity, so that the epochs below rebuild it.
	s.filter.capacity = 3000
	live := map[int]bool{}
	for i := 0; i < 1000; i++ {
		live[i] = true
	}
	next := 1000
	for epoch := 0; epoch < 20; epoch++ {
		ov := newOverlay(s)
		for j := 0; j < 500; j++ {
			_ = ov.Set(key(next), []byte("v"))
			live[next] = true
			next++
		}
		// Delete some old keys through the overlay and some directly.
		var gone [][]byte
		for j := 0; j < 200; j++ {
			i := epoch*400 + j
			if j%2 == 0 {
				_ = ov.Delete(key(i))
			} else {
				gone = append(gone, key(i))
			}
			delete(live, i)
		}
		if err := ov.apply(int64(epoch + 2)); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteKeys(gone); err != nil {
			t.Fatal(err)
		}
		// An aborted epoch's keys are never in the store.
		ab := newOverlay(s)
		_ = ab.Set(key(1_000_000+epoch), []byte("x"))
		ab.reset()
		for i := 0; i < next; i++ {
			v, ok, err := newOverlay(s).Get(key(i))
			if err != nil {
				t.Fatal(err)
			}
			if ok != live[i] || ok && string(v) != "v" {
				t.Fatalf("epoch %d: key %d: found %v, want %v", epoch, i, ok, live[i])
			}
		}
	}
	if s.filter.capacity <= 3000 {
		t.Fatalf("the filter was never rebuilt (capacity %d)", s.filter.capacity)
	}
	ruledOut, passed := s.FilterStats()
	if ruledOut == 0 {
		t.Fatalf("the filter ruled out nothing (passed %d)", passed)
	}
	// Outside the prefix: Pebble answers.
	if _, ok, _ := newOverlay(s).Get([]byte("a/5")); !ok {
		t.Fatal("a/5 not found")
	}
}

type prefixProber string

func (p prefixProber) ProbedPrefix() []byte { return []byte(p) }

// bucketProber's keys are d/<one bucket byte><id>; the id is the probe key.
type bucketProber struct{ prefixProber }

func (bucketProber) ProbeKey(key []byte) []byte { return key[3:] }

// With a ProbeKeyer, MayContain answers for an id across its buckets: true
// for an id written in any bucket (committed, or only in the open epoch),
// false for ids never written, with no Pebble read; Get still finds each
// key.
func TestMayContainByProbeKey(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := func(bucket byte, id int) []byte { return []byte(fmt.Sprintf("d/%c%d", 'a'+bucket, id)) }
	ov := newOverlay(s)
	for i := 0; i < 1000; i++ {
		_ = ov.Set(key(byte(i%5), i), []byte("v"))
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableFilter(bucketProber{"d/"}); err != nil {
		t.Fatal(err)
	}
	ov = newOverlay(s)
	for i := 1000; i < 1100; i++ { // written in the open epoch only
		_ = ov.Set(key(byte(i%5), i), []byte("v"))
	}
	for i := 0; i < 1100; i++ {
		for b := byte(0); b < 5; b++ {
			if !ov.MayContain(key(b, i)) {
				t.Fatalf("id %d ruled out in bucket %d; it is in bucket %d", i, b, i%5)
			}
		}
		if _, ok, _ := ov.Get(key(byte(i%5), i)); !ok {
			t.Fatalf("id %d not found", i)
		}
	}
	ruledOut := 0
	for i := 2000; i < 12000; i++ {
		if !ov.MayContain(key(0, i)) {
			ruledOut++
		}
	}
	if ruledOut < 9500 {
		t.Fatalf("only %d of 10000 absent ids ruled out", ruledOut)
	}
	if MayContain(prefixlessState{}, key(0, 5)) != true {
		t.Fatal("a State without a filter must answer true")
	}
}

type prefixlessState struct{ State }

func TestProbeFilterFalsePositiveRate(t *testing.T) {
	f := &probeFilter{prefix: []byte("d/"), seed: maphash.MakeSeed()}
	f.reset(100_000)
	for i := 0; i < 100_000; i++ {
		f.add([]byte(fmt.Sprintf("d/in-%d", i)))
	}
	for i := 0; i < 100_000; i++ {
		if !f.mayContain([]byte(fmt.Sprintf("d/in-%d", i))) {
			t.Fatalf("key %d ruled out", i)
		}
	}
	fp := 0
	for i := 0; i < 100_000; i++ {
		if f.mayContain([]byte(fmt.Sprintf("d/out-%d", i))) {
			fp++
		}
	}
	if rate := float64(fp) / 100_000; rate > 0.03 {
		t.Fatalf("false positive rate %.4f when full, want about 0.01", rate)
	}
	t.Logf("false positives when full: %d of 100000", fp)
}

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct{ in, want string }{{"d/", "d0"}, {"a\xff", "b"}, {"\xff\xff", ""}} {
		if got := string(prefixEnd([]byte(c.in))); got != c.want {
			t.Errorf("prefixEnd(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// PrefetchKeys only reads: the overlay's entries, hash slots, arena and
// filter, and every lookup's answer, are the same after it, for keys in
// the epoch, in the committed store, absent, under the filter's prefix or
// not, empty; on the wrapper too, and on a State that is not the engine's.
func TestPrefetchKeysChangesNothing(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ov := newOverlay(s)
	for i := 0; i < 300; i++ {
		_ = ov.Set([]byte(fmt.Sprintf("d/x%d", i)), []byte("c"))
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableFilter(prefixProber("d/")); err != nil {
		t.Fatal(err)
	}
	ov = newOverlay(s)
	for i := 0; i < 2000; i++ { // grows the slots past their first size
		_ = ov.Set([]byte(fmt.Sprintf("d/k%d", i)), []byte("v"))
		_ = ov.Set([]byte(fmt.Sprintf("a/%d", i)), []byte("a"))
	}
	_, _, _ = ov.Get([]byte("a/absent"))
	_ = ov.Delete([]byte("a/7"))
	var keys [][]byte
	for i := 0; i < 100; i++ {
		keys = append(keys, []byte(fmt.Sprintf("d/k%d", i*37)), []byte(fmt.Sprintf("d/x%d", i)), []byte(fmt.Sprintf("d/new%d", i)),
			[]byte(fmt.Sprintf("a/%d", i)), []byte("a/absent"), []byte(fmt.Sprintf("zz%d", i)))
	}
	keys = append(keys, nil, []byte{}, []byte("d/"), bytes.Repeat([]byte("d/long"), 1000))

	type view struct {
		ents            []entry
		slots           []int32
		bytes, dirty    int
		arenaCur, added int
		arenaLen        int
		blocks          [][8]uint64
		ruledOut        int64
	}
	look := func() view {
		return view{ents: slices.Clone(ov.ents), slots: slices.Clone(ov.slots), bytes: ov.bytes, dirty: ov.dirty,
			arenaCur: ov.arena.cur, arenaLen: len(ov.arena.chunks[ov.arena.cur]), added: s.filter.added, blocks: slices.Clone(s.filter.blocks), ruledOut: s.filter.ruledOut}
	}
	before := look()
	PrefetchKeys(ov, keys)
	PrefetchKeys(&Overlay{ov}, keys)
	PrefetchKeys(ov, nil)
	PrefetchKeys(mapState{}, keys)
	if after := look(); !reflect.DeepEqual(before, after) {
		t.Fatal("PrefetchKeys changed the overlay or the filter")
	}
	if ov.touched == 0 {
		t.Fatal("PrefetchKeys loaded nothing")
	}
	// The answers are those of an overlay PrefetchKeys never saw.
	ref := newOverlay(s)
	for i := 0; i < 2000; i++ {
		_ = ref.Set([]byte(fmt.Sprintf("d/k%d", i)), []byte("v"))
		_ = ref.Set([]byte(fmt.Sprintf("a/%d", i)), []byte("a"))
	}
	_ = ref.Delete([]byte("a/7"))
	for _, k := range keys {
		v1, ok1, err1 := ov.Get(k)
		v2, ok2, err2 := ref.Get(k)
		if string(v1) != string(v2) || ok1 != ok2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("key %q: %q %v %v, want %q %v %v", k, v1, ok1, err1, v2, ok2, err2)
		}
		if ov.MayContain(k) != ref.MayContain(k) {
			t.Fatalf("key %q: MayContain differs", k)
		}
	}
}

// mapState is a State that is not the engine's.
type mapState map[string][]byte

func (m mapState) Get(k []byte) ([]byte, bool, error) { v, ok := m[string(k)]; return v, ok, nil }
func (m mapState) Set(k, v []byte) error              { m[string(k)] = v; return nil }
func (m mapState) Delete(k []byte) error              { delete(m, string(k)); return nil }
