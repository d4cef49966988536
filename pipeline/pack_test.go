package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// packer packs keys under "d/" in groups of "d/" and two bytes; the probe
// key is the key after the group.
type packer struct{}

func (packer) ProbedPrefix() []byte { return []byte("d/") }
func (packer) PackedGroupLen() int  { return 4 }
func (packer) ProbeKey(k []byte) []byte {
	if len(k) < 4 {
		return k
	}
	return k[4:]
}

func openPacked(t *testing.T, dir string, limit int) *Store {
	t.Helper()
	s, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableFilterPacked(packer{}, limit); err != nil {
		t.Fatal(err)
	}
	return s
}

// The store against a model map, through random epochs: new keys (packed),
// rewrites of existing keys read first (as the aggregator does) and blind
// ones (Pebble keys), aborted epochs, keys outside the prefix, whole groups
// removed with DeleteKeys, a small index that fills (writes fall back to
// Pebble keys, and a rebuild after deletions makes room again), and
// reopening the store. Every key reads as the model says, through an
// overlay and Store.Get, Scan lists exactly the model, and the filter
// never rules out a present key.
func TestPackedStoreMatchesModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			dir := filepath.Join(t.TempDir(), "s")
			const limit = 1200
			s := openPacked(t, dir, limit)
			defer func() { _ = s.Close() }()
			model := map[string]string{}
			key := func(g, i int) string { return fmt.Sprintf("d/%02d%06d", g, i) }
			next := 0
			for epoch := 1; epoch <= 60; epoch++ {
				ov := newOverlay(s)
				pending := maps.Clone(model)
				for j := 0; j < 150; j++ {
					switch r := rng.IntN(10); {
					case r < 6: // a new key in one of the recent groups
						k := key(epoch/10+rng.IntN(2), next)
						next++
						if _, ok, err := ov.Get([]byte(k)); err != nil || ok {
							t.Fatalf("new key %s: present %v, %v", k, ok, err)
						}
						v := fmt.Sprintf("v%d-%d", epoch, j)
						if err := ov.Set([]byte(k), []byte(v)); err != nil {
							t.Fatal(err)
						}
						pending[k] = v
					case r < 8 && len(pending) > 0: // rewrite a key, read first or not
						ks := slices.Sorted(maps.Keys(pending))
						k := ks[rng.IntN(len(ks))]
						if r == 6 {
							v, ok, err := ov.Get([]byte(k))
							if err != nil || !ok || string(v) != pending[k] {
								t.Fatalf("read %s: %q %v %v, want %q", k, v, ok, err, pending[k])
							}
						}
						v := fmt.Sprintf("w%d-%d", epoch, j)
						if err := ov.Set([]byte(k), []byte(v)); err != nil {
							t.Fatal(err)
						}
						pending[k] = v
					default: // outside the prefix
						k := fmt.Sprintf("a/%d", rng.IntN(50))
						v := fmt.Sprint(epoch)
						_ = ov.Set([]byte(k), []byte(v))
						pending[k] = v
					}
				}
				if rng.IntN(8) == 0 {
					ov.reset() // aborted
				} else {
					if err := ov.apply(int64(epoch)); err != nil {
						t.Fatal(err)
					}
					model = pending
				}
				if epoch%10 == 9 { // expiry: remove the oldest group wholly
					g := []byte(fmt.Sprintf("d/%02d", epoch/10-1))
					var gone [][]byte
					it, err := s.NewIter(g, prefixEnd(g))
					if err != nil {
						t.Fatal(err)
					}
					for ok := it.First(); ok; ok = it.Next() {
						gone = append(gone, bytes.Clone(it.Key()))
					}
					_ = it.Close()
					if err := s.DeleteKeys(gone); err != nil {
						t.Fatal(err)
					}
					for k := range model {
						if strings.HasPrefix(k, string(g)) {
							delete(model, k)
						}
					}
				}
				if epoch%13 == 0 {
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openPacked(t, dir, limit)
				}
				checkModel(t, s, model)
			}
			packed, fallback, entries := s.PackStats()
			t.Logf("packed %d, written as Pebble keys %d, index entries %d", packed, fallback, entries)
			if packed == 0 || fallback == 0 {
				t.Fatalf("packed %d, fallback %d: the test should exercise both", packed, fallback)
			}
		})
	}
}

func checkModel(t *testing.T, s *Store, model map[string]string) {
	t.Helper()
	ov := newOverlay(s)
	for k, want := range model {
		v, ok, err := ov.Get([]byte(k))
		if err != nil || !ok || string(v) != want {
			t.Fatalf("overlay read %s: %q %v %v, want %q", k, v, ok, err, want)
		}
		if v, ok, err := s.Get([]byte(k)); err != nil || !ok || string(v) != want {
			t.Fatalf("store read %s: %q %v %v, want %q", k, v, ok, err, want)
		}
		if strings.HasPrefix(k, "d/") && !s.filter.mayContain([]byte(k)) {
			t.Fatalf("the filter rules out %s", k)
		}
	}
	got := map[string]string{}
	var order []string
	err := s.Scan(nil, []byte{0xff}, func(k, v []byte) error {
		got[string(k)] = string(v)
		order = append(order, string(k))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(order) || len(order) != len(got) {
		t.Fatalf("Scan: keys out of order or repeated")
	}
	if !maps.Equal(got, model) {
		for k, v := range model {
			if got[k] != v {
				t.Fatalf("Scan: %s = %q, want %q (%d keys, want %d)", k, got[k], v, len(got), len(model))
			}
		}
		t.Fatalf("Scan: %d keys, want %d", len(got), len(model))
	}
}

// Packing writes a few Pebble values for many keys, and an epoch that is
// discarded writes nothing.
func TestPackedKeysAreFewPebbleKeys(t *testing.T) {
	s := openPacked(t, filepath.Join(t.TempDir(), "s"), DefaultPackEntries)
	defer s.Close()
	ov := newOverlay(s)
	for i := 0; i < 10_000; i++ {
		_ = ov.Set([]byte(fmt.Sprintf("d/%02d%08d", i%2, i)), []byte("0123456789abcdef"))
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	ov = newOverlay(s)
	_ = ov.Set([]byte("d/07aborted"), []byte("x"))
	ov.reset()
	it, err := s.NewIter([]byte("d/"), []byte("d0"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if !s.pack.isPackKey(it.Key()) {
			t.Fatalf("Pebble key %q is not a packed value", it.Key())
		}
		n++
	}
	_ = it.Close()
	// 10k entries of ~30 bytes in values of 8 KiB: ~40 values.
	if n < 30 || n > 50 {
		t.Fatalf("%d Pebble keys for 10000 packed keys", n)
	}
	if _, ok, _ := s.Get([]byte("d/07aborted")); ok {
		t.Fatal("an aborted epoch's key is readable")
	}
}

// Keys under a packed prefix are not deleted one by one and never use the
// packed values' key space; a corrupt packed value is an error naming it,
// not a panic or a silently missing key.
func TestPackedPrefixRules(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s := openPacked(t, dir, DefaultPackEntries)
	ov := newOverlay(s)
	if err := ov.Delete([]byte("d/00k")); !errors.Is(err, errPackedDelete) {
		t.Fatalf("Delete under the packed prefix: %v", err)
	}
	if err := ov.Set([]byte("d/00\xffk"), []byte("v")); err == nil {
		t.Fatal("a key in the packed values' key space was accepted")
	}
	if err := ov.Delete([]byte("a/k")); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte("d/00"), packMarker...)
	bad = append(bad, 0, 0, 0, 0, 0, 0, 0, 9)
	if err := s.db.Set(bad, []byte{packFormat, 200, 1}, pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.EnableFilterPacked(packer{}, DefaultPackEntries)
	if err == nil || !strings.Contains(err.Error(), "packed value") {
		t.Fatalf("corrupt packed value: %v", err)
	}
}

// A store reopened with packing bounded to 0 entries still reads the keys
// packed before and writes new ones as Pebble keys.
func TestPackedKeysReadableWithoutPacking(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s := openPacked(t, dir, DefaultPackEntries)
	ov := newOverlay(s)
	for i := 0; i < 100; i++ {
		_ = ov.Set([]byte(fmt.Sprintf("d/00%04d", i)), []byte(fmt.Sprint(i)))
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = openPacked(t, dir, 0)
	defer s.Close()
	ov = newOverlay(s)
	for i := 100; i < 150; i++ {
		_ = ov.Set([]byte(fmt.Sprintf("d/00%04d", i)), []byte(fmt.Sprint(i)))
	}
	if err := ov.apply(2); err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	for i := 0; i < 150; i++ {
		model[fmt.Sprintf("d/00%04d", i)] = fmt.Sprint(i)
	}
	checkModel(t, s, model)
	if packed, fallback, entries := s.PackStats(); packed != 0 || fallback != 50 || entries != 100 {
		t.Fatalf("packed %d, unpacked %d, index entries %d; want 0, 50, 100", packed, fallback, entries)
	}
	if s.packFull() {
		t.Fatal("a bound of 0 is reported as a full index")
	}
}

// A fingerprint that points at another group's packed value holding the
// same key suffix (a collision) does not make the key readable.
func TestPackedCollisionAcrossGroups(t *testing.T) {
	s := openPacked(t, filepath.Join(t.TempDir(), "s"), DefaultPackEntries)
	defer s.Close()
	ov := newOverlay(s)
	_ = ov.Set([]byte("d/01same"), []byte("v"))
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	if len(s.pack.blobs) != 1 {
		t.Fatalf("%d packed values, want 1", len(s.pack.blobs))
	}
	s.pack.insert(s.pack.fp([]byte("d/02same")), 0) // the collision
	if v, ok, err := s.Get([]byte("d/02same")); err != nil || ok {
		t.Fatalf("d/02same read %q %v %v through another group's value", v, ok, err)
	}
	if v, ok, err := s.Get([]byte("d/01same")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("d/01same: %q %v %v", v, ok, err)
	}
}

// An overlay made before packing was enabled (its hashes are not the
// index's fingerprints) packs keys that read back.
func TestPackedThroughAnEarlierOverlay(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "s"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ov := newOverlay(s)
	if err := s.EnableFilterPacked(packer{}, DefaultPackEntries); err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	for i := 0; i < 500; i++ {
		k, v := fmt.Sprintf("d/01%04d", i), fmt.Sprint(i)
		_ = ov.Set([]byte(k), []byte(v))
		model[k] = v
	}
	if err := ov.apply(1); err != nil {
		t.Fatal(err)
	}
	if packed, _, _ := s.PackStats(); packed != 500 {
		t.Fatalf("packed %d of 500", packed)
	}
	checkModel(t, s, model)
}
