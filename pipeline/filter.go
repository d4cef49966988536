package pipeline

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/bits"
)

// Prober is implemented by operators that look up many keys that are
// mostly absent, such as the dedup check of a new transaction id.
// ProbedPrefix names those keys: the engine keeps an in-memory filter of
// the keys under the prefix in front of the partition's store
// (Store.EnableFilter), so that a lookup of an absent key rarely reaches
// Pebble. The filter may answer "maybe present" for an absent key (Pebble
// then answers), never "absent" for a present one, so it changes no
// result, only the cost of a miss.
type Prober interface {
	ProbedPrefix() []byte
}

// ProbeKeyer is a Prober whose probed keys hold a part that a lookup does
// not know in advance, such as the aggregator's time bucket: ProbeKey
// returns the part of a key under the prefix that the filter identifies it
// by. Keys with equal probe keys share the filter's answer, so one
// MayContain rules out all of them. Without ProbeKeyer the whole key is
// the probe key.
type ProbeKeyer interface {
	Prober
	ProbeKey(key []byte) []byte
}

// MayContain reports whether st may hold a key under the probed prefix
// with key's probe key (ProbeKeyer), in the open epoch or the committed
// state: false only when it holds none. A State without a filter answers
// true. An operator uses it to skip a lookup of several keys at once.
func MayContain(st State, key []byte) bool {
	if m, ok := st.(interface{ MayContain([]byte) bool }); ok {
		return m.MayContain(key)
	}
	return true
}

// PrefetchKeys touches the memory st will read to look up keys (see
// Prefetcher). It does nothing for a State that is not the engine's.
func PrefetchKeys(st State, keys [][]byte) {
	switch o := st.(type) {
	case *overlay:
		o.prefetch(keys)
	case *Overlay:
		o.o.prefetch(keys)
	}
}

// EnableFilter builds an in-memory Bloom filter of the committed keys under
// pr's probed prefix (one scan of them) and keeps it current: an epoch's
// writes add their keys when they are made (an aborted epoch leaves them:
// false positives only), deletions leave theirs (false positives, until
// the filter is rebuilt when it is full). From then on a read of a key
// under the prefix that the filter rules out is a miss without a Pebble
// read. Call it from the partition's processing goroutine before the
// store is read or written under the prefix through an overlay. The
// filter is never persisted: a restored store is a new Store, whose filter
// is built from its own contents.
func (s *Store) EnableFilter(pr Prober) error {
	return s.EnableFilterPacked(pr, DefaultPackEntries)
}

// EnableFilterPacked is EnableFilter with packing (pr a Packer) bounded to
// packEntries keys in the index: beyond them (with 0, always) new keys are
// written as Pebble keys. The packed values the store already holds are
// indexed whatever the bound, in the same scan that builds the filter:
// their keys must stay readable.
func (s *Store) EnableFilterPacked(pr Prober, packEntries int) error {
	f := &probeFilter{prefix: bytes.Clone(pr.ProbedPrefix()), seed: maphash.MakeSeed()}
	if pk, ok := pr.(ProbeKeyer); ok {
		f.probeKey = pk.ProbeKey
	}
	s.pack = nil
	if p, ok := pr.(Packer); ok {
		s.pack = newPacking(p, max(packEntries, 0))
	}
	if err := s.buildFilter(f); err != nil {
		return err
	}
	s.filter = f
	return nil
}

// FilterStats says how many committed reads the filter ruled out (misses
// answered without Pebble) and how many it let through.
func (s *Store) FilterStats() (ruledOut, passed int64) {
	if s.filter == nil {
		return 0, 0
	}
	return s.filter.ruledOut, s.filter.passed
}

// buildFilter sizes f for twice the keys under its prefix (at least
// minFilterKeys) and adds them, the packed ones included; with packing,
// it rebuilds the index of packed keys in the same scan (dropping the
// entries of deleted packed values).
func (s *Store) buildFilter(f *probeFilter) error {
	it, err := s.NewIter(f.prefix, prefixEnd(f.prefix))
	if err != nil {
		return err
	}
	var hs []uint64
	pk := s.pack
	if pk != nil {
		pk.reset()
	}
	add := func(k []byte) { hs = append(hs, maphash.Bytes(f.seed, f.keyOf(k))) }
	for ok := it.First(); ok; ok = it.Next() {
		if pk != nil && pk.isPackKey(it.Key()) {
			v, err := it.ValueAndErr()
			if err == nil {
				err = pk.addValue(it.Key(), v, add)
			}
			if err != nil {
				_ = it.Close()
				return fmt.Errorf("building the key filter of %s: packed value %q: %w", s.dir, it.Key(), err)
			}
			continue
		}
		add(it.Key())
	}
	if err := it.Error(); err != nil {
		_ = it.Close()
		return fmt.Errorf("building the key filter of %s: %w", s.dir, err)
	}
	if err := it.Close(); err != nil {
		return err
	}
	f.reset(max(2*len(hs), minFilterKeys))
	for _, h := range hs {
		f.addHash(h)
	}
	return nil
}

// prefixEnd is the smallest key above every key that starts with p (nil:
// none).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// minFilterKeys is the smallest capacity of a filter: 1.2 MiB.
const minFilterKeys = 1 << 20

// probeFilter is a blocked Bloom filter: each key sets filterK bits of one
// 512-bit block (a cache line), about 10 bits per key of capacity (~1%
// false positives when full). It counts additions, not distinct keys: a
// key added twice counts twice, which only makes it rebuild sooner.
type probeFilter struct {
	prefix   []byte
	probeKey func([]byte) []byte // nil: the whole key
	seed     maphash.Seed
	blocks   [][8]uint64
	added    int // keys added since the last build, including the scanned ones
	capacity int

	ruledOut, passed int64
}

const filterK = 6

func (f *probeFilter) reset(capacity int) {
	n := (capacity*10 + 511) / 512
	f.blocks = make([][8]uint64, n)
	f.capacity, f.added = capacity, 0
}

func (f *probeFilter) covers(key []byte) bool { return bytes.HasPrefix(key, f.prefix) }

// keyOf is the part of a covered key that the filter holds.
func (f *probeFilter) keyOf(key []byte) []byte {
	if f.probeKey == nil {
		return key
	}
	return f.probeKey(key)
}

// full reports a filter that has had as many additions as it was sized
// for: it is rebuilt from the store (dropping deleted keys).
func (f *probeFilter) full() bool { return f.added >= f.capacity }

// add adds a covered key.
func (f *probeFilter) add(key []byte) { f.addHash(maphash.Bytes(f.seed, f.keyOf(key))) }

func (f *probeFilter) addHash(h uint64) {
	b := &f.blocks[f.block(h)]
	h2 := mix(h)
	for i := 0; i < filterK; i++ {
		bit := h2 & 511
		b[bit>>6] |= 1 << (bit & 63)
		h2 >>= 9
	}
	f.added++
}

// addReport adds a covered key and reports whether the filter may have
// held it before (mayContain and add with one hash).
func (f *probeFilter) addReport(key []byte) (had bool) {
	h := maphash.Bytes(f.seed, f.keyOf(key))
	b := &f.blocks[f.block(h)]
	h2 := mix(h)
	had = true
	for i := 0; i < filterK; i++ {
		bit := h2 & 511
		m := uint64(1) << (bit & 63)
		if b[bit>>6]&m == 0 {
			had = false
			b[bit>>6] |= m
		}
		h2 >>= 9
	}
	f.added++
	return had
}

// mayContain is false only for a covered key whose probe key was never
// added.
func (f *probeFilter) mayContain(key []byte) bool {
	h := maphash.Bytes(f.seed, f.keyOf(key))
	b := &f.blocks[f.block(h)]
	h2 := mix(h)
	for i := 0; i < filterK; i++ {
		bit := h2 & 511
		if b[bit>>6]&(1<<(bit&63)) == 0 {
			return false
		}
		h2 >>= 9
	}
	return true
}

// block maps h's high bits to a block index, uniformly.
func (f *probeFilter) block(h uint64) uint64 {
	hi, _ := bits.Mul64(h, uint64(len(f.blocks)))
	return hi
}

// mix derives the in-block bit positions from h independently of the
// block index (a 64-bit finaliser).
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
