package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"
)

// Overlay is an epoch's view of a store, the State the engine gives an
// operator: reads see the epoch's writes, which stay in memory until Apply
// writes them, with the next input offset, in one batch (after the
// epoch's commit); Discard drops them (an aborted epoch). The engine keeps
// its own per partition: Overlay lets an operator's tests and tools drive
// a Store through epochs as the engine does. Not safe for concurrent use.
type Overlay struct{ o *overlay }

// NewOverlay starts an empty epoch on s.
func NewOverlay(s *Store) *Overlay { return &Overlay{newOverlay(s)} }

// Get implements State.
func (o *Overlay) Get(key []byte) ([]byte, bool, error) { return o.o.Get(key) }

// Set implements State.
func (o *Overlay) Set(key, value []byte) error { return o.o.Set(key, value) }

// Delete implements State.
func (o *Overlay) Delete(key []byte) error { return o.o.Delete(key) }

// MayContain implements the filter check of MayContain.
func (o *Overlay) MayContain(key []byte) bool { return o.o.MayContain(key) }

// Apply writes the epoch's writes and nextOffset (Store.Offset) to the
// store in one batch and starts the next epoch.
func (o *Overlay) Apply(nextOffset int64) error { return o.o.apply(nextOffset) }

// Discard drops the epoch's writes.
func (o *Overlay) Discard() { o.o.reset() }

// overlay is an epoch's view of one partition: reads go through it, writes
// stay in it until the sink commits, then they are applied in one batch.
// Aborting an epoch is dropping the overlay.
//
// It holds every key the epoch read or wrote, in the order of first
// access, and the values: a hash table of entry positions (slots) over
// entries whose keys and values are spans of an arena. Nothing in it is a
// Go pointer but the arena's chunks, so the garbage collector neither
// scans an epoch's entries nor sees an allocation per key or value; the
// arena's chunks are reused by the next epoch. A value is copied in when
// written or first read and never overwritten in place (a new write of
// the key appends), so a slice Get returned stays intact until the epoch
// ends.
type overlay struct {
	store *Store
	seed  maphash.Seed
	arena arena
	ents  []entry
	slots []int32 // position in ents + 1; 0 = empty. len is a power of two
	bytes int     // arena bytes plus entry overhead: what max-epoch-bytes bounds
	dirty int
	// packIdx is apply's list of entries to pack, kept for the next epoch.
	packIdx []int
	touched uint64 // prefetch's loads end here
}

// entry is a key the epoch read or wrote. Pointer-free.
type entry struct {
	hash    uint64
	key     span
	val     span
	deleted bool // absent: read and not found, or deleted
	dirty   bool // written by the epoch
	// fresh: the committed store holds no value of the key (it was read
	// and not found, or the filter ruled it out when it was first
	// written), so it may be packed (Packer) without shadowing one.
	fresh bool
}

// entryOverhead approximates an entry's memory beyond its bytes: the entry
// and its slots.
const entryOverhead = 48

func newOverlay(s *Store) *overlay {
	seed := maphash.MakeSeed()
	if s.pack != nil {
		seed = s.pack.seed // an entry's hash is then its packing fingerprint
	}
	return &overlay{store: s, seed: seed, slots: make([]int32, 1024)}
}

// find returns the position of key's entry, or -1, and key's hash.
func (o *overlay) find(key []byte) (int, uint64) {
	h := maphash.Bytes(o.seed, key)
	mask := uint64(len(o.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := o.slots[i]
		if s == 0 {
			return -1, h
		}
		e := &o.ents[s-1]
		if e.hash == h && bytes.Equal(o.arena.bytes(e.key), key) {
			return int(s - 1), h
		}
	}
}

// add appends a new entry for key (not present) and returns its position.
func (o *overlay) add(key []byte, h uint64, e entry) int {
	if 2*(len(o.ents)+1) > len(o.slots) { // load factor at most 1/2
		o.grow()
	}
	e.hash, e.key = h, o.arena.put(key)
	pos := len(o.ents)
	o.ents = append(o.ents, e)
	mask := uint64(len(o.slots) - 1)
	i := h & mask
	for o.slots[i] != 0 {
		i = (i + 1) & mask
	}
	o.slots[i] = int32(pos + 1)
	o.bytes += len(key) + entryOverhead
	return pos
}

// grow doubles the hash table and reinserts every entry.
func (o *overlay) grow() {
	o.slots = make([]int32, 2*len(o.slots))
	mask := uint64(len(o.slots) - 1)
	for pos := range o.ents {
		i := o.ents[pos].hash & mask
		for o.slots[i] != 0 {
			i = (i + 1) & mask
		}
		o.slots[i] = int32(pos + 1)
	}
}

func (o *overlay) Get(key []byte) ([]byte, bool, error) {
	pos, h := o.find(key)
	if pos >= 0 {
		e := &o.ents[pos]
		return o.arena.bytes(e.val), !e.deleted, nil
	}
	v, ok, err := o.store.readCommitted(key)
	if err != nil {
		return nil, false, fmt.Errorf("state read: %w", err)
	}
	// Cache reads too: operators (the aggregator) read a key right before
	// writing it.
	e := entry{deleted: !ok, fresh: !ok}
	if ok {
		e.val = o.arena.put(v)
		o.bytes += len(v)
	}
	pos = o.add(key, h, e)
	return o.arena.bytes(o.ents[pos].val), ok, nil
}

func (o *overlay) Set(key, value []byte) error {
	pos, h := o.find(key)
	// Into the filter when written: it may hold more than the store (an
	// aborted epoch's keys), never less.
	if f := o.store.filter; f != nil && f.covers(key) {
		if pk := o.store.pack; pk != nil && pk.reserved(key) {
			return fmt.Errorf("state key %q: keys under a packed prefix must not have 0xff after the group", key)
		}
		if pos < 0 {
			pos = o.add(key, h, entry{fresh: !f.addReport(key)})
		} else {
			f.add(key)
		}
	}
	if pos < 0 {
		pos = o.add(key, h, entry{})
	}
	val := o.arena.put(value)
	e := &o.ents[pos]
	if !e.dirty {
		o.dirty++
	}
	o.bytes += len(value)
	e.val, e.deleted, e.dirty = val, false, true
	return nil
}

// prefetch loads, for each key, what find and the filter will read when
// the key is looked up: its hash slot, the entry there and that entry's
// key, and the filter's block. The hashes are computed first, so that the
// loops that load are short and the CPU has the loads of many keys in
// flight together; their sum is kept only so that the compiler cannot
// drop them.
func (o *overlay) prefetch(keys [][]byte) {
	const chunk = 32
	var (
		slot  [chunk]int32
		hash  [chunk]uint64
		block [chunk]int // filter block + 1; 0 = not under the filter
		x     uint64
	)
	f := o.store.filter
	mask := uint64(len(o.slots) - 1)
	for len(keys) > 0 {
		n := min(len(keys), chunk)
		for i, k := range keys[:n] {
			hash[i] = maphash.Bytes(o.seed, k)
			block[i] = 0
			if f != nil && f.covers(k) {
				block[i] = int(f.block(maphash.Bytes(f.seed, f.keyOf(k)))) + 1
			}
		}
		for i := range n {
			slot[i] = o.slots[hash[i]&mask]
			if b := block[i]; b > 0 {
				x += f.blocks[b-1][0]
			}
		}
		for i := range n {
			if s := slot[i]; s != 0 {
				x += o.ents[s-1].hash
			}
		}
		for i := range n {
			if s := slot[i]; s != 0 {
				if k := o.arena.bytes(o.ents[s-1].key); len(k) > 0 {
					x += uint64(k[0])
				}
			}
		}
		keys = keys[n:]
	}
	o.touched += x
}

// MayContain implements the check of MayContain: the filter holds the
// epoch's writes too.
func (o *overlay) MayContain(key []byte) bool {
	f := o.store.filter
	if f == nil || !f.covers(key) {
		return true
	}
	if !f.mayContain(key) {
		f.ruledOut++
		return false
	}
	return true
}

func (o *overlay) Delete(key []byte) error {
	if pk := o.store.pack; pk != nil && pk.packable(key) {
		return fmt.Errorf("state key %q: %w", key, errPackedDelete)
	}
	pos, h := o.find(key)
	if pos < 0 {
		pos = o.add(key, h, entry{})
	}
	e := &o.ents[pos]
	if !e.dirty {
		o.dirty++
	}
	e.val, e.deleted, e.dirty = span{}, true, true
	return nil
}

// changes calls fn for every key the epoch wrote, in the order of first
// access; value is nil for a deletion. The slices are valid until the
// epoch ends.
func (o *overlay) changes(fn func(key, value []byte, deleted bool)) {
	for i := range o.ents {
		e := &o.ents[i]
		if e.dirty {
			fn(o.arena.bytes(e.key), o.arena.bytes(e.val), e.deleted)
		}
	}
}

// apply writes the overlay's dirty entries and the new offset atomically.
func (o *overlay) apply(nextOffset int64) error {
	// Sized up front: grown by doubling, the batch's copies cost ~2% of
	// the consumer's CPU. A record is a kind byte, two varint lengths,
	// the key and the value.
	size := 64
	for i := range o.ents {
		if e := &o.ents[i]; e.dirty {
			size += 11 + int(e.key.n) + int(e.val.n)
		}
	}
	b := o.store.db.NewBatchWithSize(size)
	defer b.Close()
	pk := o.store.pack
	var packIdx []int
	if pk != nil {
		packIdx = o.packIdx[:0]
	}
	for i := range o.ents {
		e := &o.ents[i]
		if !e.dirty {
			continue
		}
		key := o.arena.bytes(e.key)
		if pk != nil && e.fresh && !e.deleted && pk.packable(key) {
			packIdx = append(packIdx, i)
			continue
		}
		var err error
		if e.deleted {
			err = b.Delete(key, nil)
		} else {
			err = b.Set(key, o.arena.bytes(e.val), nil)
		}
		if err != nil {
			return err
		}
	}
	var packed []packedValue
	rebuild := false
	if len(packIdx) > 0 {
		if pk.entries+len(packIdx) > pk.limit {
			// The index is full: these keys are written as Pebble keys,
			// and if packed values were deleted since the index was
			// built, it is rebuilt after the apply (below) to drop them.
			rebuild = pk.stale
			for _, i := range packIdx {
				e := &o.ents[i]
				if err := b.Set(o.arena.bytes(e.key), o.arena.bytes(e.val), nil); err != nil {
					return err
				}
			}
			pk.fallback += int64(len(packIdx))
			pk.full = pk.limit > 0 // a bound of 0 is a choice, not a full index
		} else {
			pk.full = false
			var err error
			if packed, err = o.writePacked(b, packIdx); err != nil {
				return err
			}
		}
		o.packIdx = packIdx
	}
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], uint64(nextOffset))
	if err := b.Set(offsetKey, off[:], nil); err != nil {
		return err
	}
	if err := o.store.db.Apply(b, pebble.NoSync); err != nil {
		return fmt.Errorf("applying epoch to state store %s: %w", o.store.dir, err)
	}
	o.indexPacked(packed)
	if f := o.store.filter; f != nil && (f.full() || rebuild) {
		// Sized for twice the keys it was built with: rebuilt from the
		// store, which drops the keys deleted since (and the index of
		// packed keys the entries of deleted packed values).
		if err := o.store.buildFilter(f); err != nil {
			return err
		}
	}
	o.reset()
	return nil
}

func (o *overlay) reset() {
	if len(o.ents) > 0 {
		clear(o.slots)
	}
	o.ents = o.ents[:0]
	o.arena.reset()
	o.bytes, o.dirty = 0, 0
}

// arena holds an epoch's keys and values in chunks that are never moved
// (a span stays valid until reset) and are reused after reset.
type arena struct {
	chunks [][]byte
	cur    int // chunk being filled
}

// span is a slice of an arena chunk.
type span struct{ chunk, off, n uint32 }

const (
	arenaChunk = 1 << 20
	// arenaKeep bounds the chunks kept across epochs (a large epoch's
	// chunks beyond it are left to the GC).
	arenaKeep = 16
)

func (a *arena) put(b []byte) span {
	if len(a.chunks) == 0 {
		a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
	}
	c := a.chunks[a.cur]
	if len(c)+len(b) > cap(c) {
		a.cur++
		if a.cur == len(a.chunks) {
			a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, len(b))))
		} else if cap(a.chunks[a.cur]) < len(b) {
			a.chunks[a.cur] = make([]byte, 0, len(b))
		}
		c = a.chunks[a.cur]
	}
	s := span{chunk: uint32(a.cur), off: uint32(len(c)), n: uint32(len(b))}
	a.chunks[a.cur] = append(c, b...)
	return s
}

// bytes is the slice s names; nil for the zero span of an absent value.
func (a *arena) bytes(s span) []byte {
	if s.n == 0 {
		return nil
	}
	return a.chunks[s.chunk][s.off : s.off+s.n : s.off+s.n]
}

func (a *arena) reset() {
	if len(a.chunks) > arenaKeep {
		clear(a.chunks[arenaKeep:])
		a.chunks = a.chunks[:arenaKeep]
	}
	for i := range a.chunks {
		a.chunks[i] = a.chunks[i][:0]
	}
	a.cur = 0
}
