package pipeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Packer is a ProbeKeyer whose keys under the probed prefix are written
// often and read rarely (a dedup entry per accepted record). The store
// packs an epoch's new keys under the prefix into a few Pebble values
// instead of writing one Pebble key each: a Pebble key costs the same
// batch sort, WAL record, memtable insert, flush and compaction whatever
// its size, and per-record keys of this kind were ~40% of the consumer's
// CPU. Reads of packed keys go through an in-memory index of key
// fingerprints (Store.EnableFilter builds it with the filter).
//
// Keys under the prefix fall into groups: the first PackedGroupLen bytes
// of a key. A group's packed values sort inside the group's key range (at
// its end), so an operator that removes a group's keys by scanning the
// range with Store.NewIter and deleting what it finds (the aggregator's
// expiry of a time bucket) removes the packed values too. The contract
// for keys under the prefix:
//
//   - the byte at PackedGroupLen is never 0xff (the packed values' keys
//     use it);
//   - State.Delete refuses them: they are removed with Store.DeleteKeys,
//     a group at a time. A key DeleteKeys removed while its group's
//     packed values remain may read as an older value of the key from
//     them until they are removed too.
type Packer interface {
	ProbeKeyer
	PackedGroupLen() int
}

// Packed values. A packed value's key is the group, packMarker, and an
// 8-byte big-endian sequence number, unique in the store. The value is
// packFormat followed by the entries: uvarint length and bytes of the key
// after the group, uvarint length and bytes of the value. Entries are not
// sorted; a value is closed once it reaches packValueBytes (its last
// entry may end past it), so that a read of one packed key scans a few
// KiB.
const (
	packFormat     = 1
	packValueBytes = 8 << 10
	packSeqLen     = 8
)

var packMarker = []byte{0xff, 0xfe}

// DefaultPackEntries bounds the packed keys a store's index holds: 1M,
// in at most 16 MiB (a 32-bit fingerprint and a value number, 8 bytes a
// slot, in a table kept at most 80% full). Beyond it, new keys under the
// prefix are written as Pebble keys, as without packing, until deletions
// (expiry) make room.
const DefaultPackEntries = 1 << 20

// packing is a store's packed prefix and the index of its packed keys.
type packing struct {
	prefix   []byte
	groupLen int
	seed     maphash.Seed

	// Open addressing over fingerprints (0: empty; a fingerprint is never
	// 0) and, in blob, the position in blobs of the value holding the key.
	// A fingerprint is 32 bits (31 of them vary): with n entries a lookup
	// meets another key's fingerprint with probability about n / 2^31 (1 in
	// 2,000 at the default bound) and then reads one packed value more (the
	// exact key decides). Only lookups the key filter let through get here,
	// so wider fingerprints would cost memory for nothing measurable.
	fps     []uint32
	blob    []uint32
	entries int // occupied slots
	limit   int // the most entries the index takes

	blobs   [][]byte // packed value keys, in the order of their sequence numbers within a group
	nextSeq uint64
	// stale: packed values were deleted since the index was built; their
	// entries stay until the next rebuild (a read of them finds nothing).
	stale bool

	full     bool  // the last epoch's keys did not fit in the index
	fallback int64 // keys written as Pebble keys because the index was full
	packed   int64 // keys packed
}

func newPacking(p Packer, limit int) *packing {
	return &packing{prefix: bytes.Clone(p.ProbedPrefix()), groupLen: p.PackedGroupLen(), seed: maphash.MakeSeed(), limit: limit}
}

// packable reports whether key is one the store may pack: under the
// prefix, with more than the group.
func (pk *packing) packable(key []byte) bool {
	return len(key) > pk.groupLen && bytes.HasPrefix(key, pk.prefix)
}

// isPackKey reports whether key names a packed value.
func (pk *packing) isPackKey(key []byte) bool {
	return len(key) == pk.groupLen+len(packMarker)+packSeqLen && bytes.HasPrefix(key, pk.prefix) &&
		bytes.Equal(key[pk.groupLen:pk.groupLen+len(packMarker)], packMarker)
}

func (pk *packing) reserved(key []byte) bool {
	return len(key) > pk.groupLen && key[pk.groupLen] == 0xff && bytes.HasPrefix(key, pk.prefix)
}

var errPackedDelete = errors.New("keys under a packed prefix are removed with Store.DeleteKeys, not State.Delete")

// fp is key's fingerprint: fpOf of its hash with the index's seed.
func (pk *packing) fp(key []byte) uint32 { return fpOf(maphash.Bytes(pk.seed, key)) }

func fpOf(h uint64) uint32 { return uint32(h>>32) | 1 }

// home is a fingerprint's first slot: its bits above the one fpOf sets.
func home(fp uint32, mask uint64) uint64 { return uint64(fp>>1) & mask }

// reset empties the index (it grows as entries are inserted, up to the
// limit).
func (pk *packing) reset() {
	pk.fps, pk.blob = make([]uint32, 1024), make([]uint32, 1024)
	pk.entries, pk.blobs, pk.stale = 0, nil, false
}

func (pk *packing) insert(fp uint32, blob uint32) {
	if (pk.entries+1)*5 > len(pk.fps)*4 {
		old, oldBlob := pk.fps, pk.blob
		pk.fps, pk.blob = make([]uint32, 2*len(old)), make([]uint32, 2*len(old))
		pk.entries = 0
		for i, f := range old {
			if f != 0 {
				pk.insert(f, oldBlob[i])
			}
		}
	}
	mask := uint64(len(pk.fps) - 1)
	i := home(fp, mask)
	for pk.fps[i] != 0 {
		i = (i + 1) & mask
	}
	pk.fps[i], pk.blob[i] = fp, blob
	pk.entries++
}

// candidates appends the packed values whose entries have key's
// fingerprint. At most one of them that still exists holds key: a key is
// packed only when the store holds no value of it (overlay entry fresh).
func (pk *packing) candidates(dst []uint32, key []byte) []uint32 {
	if len(pk.fps) == 0 {
		return dst
	}
	fp := pk.fp(key)
	mask := uint64(len(pk.fps) - 1)
	for i := home(fp, mask); pk.fps[i] != 0; i = (i + 1) & mask {
		if pk.fps[i] == fp {
			dst = append(dst, pk.blob[i])
		}
	}
	return dst
}

// addValue indexes the packed value key/value (read back from the store)
// and returns its entries' keys through fn.
func (pk *packing) addValue(key, value []byte, fn func(k []byte)) error {
	id := uint32(len(pk.blobs))
	pk.blobs = append(pk.blobs, bytes.Clone(key))
	seq := binary.BigEndian.Uint64(key[len(key)-packSeqLen:])
	pk.nextSeq = max(pk.nextSeq, seq+1)
	kb := make([]byte, 0, 64)
	kb = append(kb, key[:pk.groupLen]...)
	return scanPacked(value, func(suffix, _ []byte) bool {
		kb = append(kb[:pk.groupLen], suffix...)
		pk.insert(pk.fp(kb), id)
		if fn != nil {
			fn(kb)
		}
		return true
	})
}

// scanPacked calls fn for each entry of a packed value until fn returns
// false.
func scanPacked(v []byte, fn func(suffix, value []byte) bool) error {
	if len(v) == 0 || v[0] != packFormat {
		return errors.New("packed value: unknown format")
	}
	v = v[1:]
	for len(v) > 0 {
		kl, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < kl {
			return errors.New("packed value: corrupt key length")
		}
		k := v[n : n+int(kl)]
		v = v[n+int(kl):]
		vl, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < vl {
			return errors.New("packed value: corrupt value length")
		}
		val := v[n : n+int(vl)]
		v = v[n+int(vl):]
		if !fn(k, val) {
			return nil
		}
	}
	return nil
}

// readPacked looks key up in the packed values (after its Pebble key was
// found absent). It returns a copy of the value.
func (s *Store) readPacked(key []byte) ([]byte, bool, error) {
	pk := s.pack
	var buf [4]uint32
	for _, id := range pk.candidates(buf[:0], key) {
		if !bytes.Equal(pk.blobs[id][:pk.groupLen], key[:pk.groupLen]) {
			continue // a fingerprint collision with another group's entry
		}
		v, closer, err := s.db.Get(pk.blobs[id])
		if errors.Is(err, pebble.ErrNotFound) {
			continue // deleted (expired) since the index was built
		}
		if err != nil {
			return nil, false, err
		}
		var out []byte
		found := false
		err = scanPacked(v, func(suffix, val []byte) bool {
			if len(suffix) == len(key)-pk.groupLen && bytes.Equal(suffix, key[pk.groupLen:]) {
				out, found = append(make([]byte, 0, len(val)), val...), true
				return false
			}
			return true
		})
		_ = closer.Close()
		if err != nil {
			return nil, false, fmt.Errorf("state store %s: packed value %q: %w", s.dir, pk.blobs[id], err)
		}
		if found {
			return out, true, nil
		}
	}
	return nil, false, nil
}

// packBuilder collects one group's entries of an epoch into packed values.
type packBuilder struct {
	group []byte
	buf   []byte
	ents  []int // overlay entry positions in buf
}

// writePacked adds the epoch's packable entries (positions in o.ents) to
// b as packed values and returns, for the index, each value's key with
// the entries it holds. Entries are grouped in the order they come.
func (o *overlay) writePacked(b *pebble.Batch, idx []int) ([]packedValue, error) {
	pk := o.store.pack
	var out []packedValue
	var cur *packBuilder
	builders := map[string]*packBuilder{}
	flush := func(pb *packBuilder) error {
		if len(pb.ents) == 0 {
			return nil
		}
		key := make([]byte, 0, pk.groupLen+len(packMarker)+packSeqLen)
		key = append(append(key, pb.group...), packMarker...)
		key = binary.BigEndian.AppendUint64(key, pk.nextSeq)
		pk.nextSeq++
		if err := b.Set(key, pb.buf, nil); err != nil {
			return err
		}
		out = append(out, packedValue{key: key, ents: pb.ents})
		pb.buf, pb.ents = pb.buf[:0], nil // the batch copied the value
		return nil
	}
	for _, i := range idx {
		e := &o.ents[i]
		key := o.arena.bytes(e.key)
		g := key[:pk.groupLen]
		if cur == nil || !bytes.Equal(cur.group, g) {
			cur = builders[string(g)]
			if cur == nil {
				cur = &packBuilder{group: bytes.Clone(g), buf: make([]byte, 0, packValueBytes+256)}
				builders[string(g)] = cur
			}
		}
		if len(cur.buf) == 0 {
			cur.buf = append(cur.buf, packFormat)
		}
		val := o.arena.bytes(e.val)
		cur.buf = binary.AppendUvarint(cur.buf, uint64(len(key)-pk.groupLen))
		cur.buf = append(cur.buf, key[pk.groupLen:]...)
		cur.buf = binary.AppendUvarint(cur.buf, uint64(len(val)))
		cur.buf = append(cur.buf, val...)
		cur.ents = append(cur.ents, i)
		if len(cur.buf) >= packValueBytes {
			if err := flush(cur); err != nil {
				return nil, err
			}
		}
	}
	// The rest, in group order (deterministic, though nothing depends on it).
	groups := make([]string, 0, len(builders))
	for g := range builders {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	for _, g := range groups {
		if err := flush(builders[g]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// packedValue is a packed value an epoch wrote and its entries' overlay
// positions.
type packedValue struct {
	key  []byte
	ents []int
}

// indexPacked adds the values an applied epoch packed to the index.
func (o *overlay) indexPacked(vals []packedValue) {
	pk := o.store.pack
	for _, v := range vals {
		id := uint32(len(pk.blobs))
		pk.blobs = append(pk.blobs, v.key)
		for _, i := range v.ents {
			e := &o.ents[i]
			if o.seed == pk.seed {
				pk.insert(fpOf(e.hash), id) // pk.fp, from the hash computed when the key was added
			} else {
				pk.insert(pk.fp(o.arena.bytes(e.key)), id)
			}
		}
		pk.packed += int64(len(v.ents))
	}
}

func (pk *packing) entriesOrZero() int {
	if pk == nil {
		return 0
	}
	return pk.entries
}

// packFull reports whether the store's last epoch found its packing index
// full (its new keys were written as Pebble keys).
func (s *Store) packFull() bool { return s.pack != nil && s.pack.full }

// PackStats says how many keys the store packed and how many it wrote as
// Pebble keys because its index was full, and how many entries the index
// holds.
func (s *Store) PackStats() (packed, fallback int64, entries int) {
	if s.pack == nil {
		return 0, 0, 0
	}
	return s.pack.packed, s.pack.fallback, s.pack.entries
}

// Scan calls fn for the committed keys in [lower, upper) (nil: no bound)
// in key order with their values, packed keys included in place of the
// packed values that hold them (on a store with packing enabled:
// EnableFilter with a Packer): the state an operator reads, whatever its
// layout. A key under the packed prefix is passed with the
// value a read returns (its own Pebble value's, else its packed one).
// One group of packed keys is held in memory at a time. The slices are
// valid only during the call.
func (s *Store) Scan(lower, upper []byte, fn func(key, value []byte) error) error {
	it, err := s.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	pk := s.pack
	type kv struct{ k, v []byte }
	var group []byte
	var ents map[string]kv
	var own map[string]bool // the group's keys with a Pebble value of their own
	flushGroup := func() error {
		keys := make([]string, 0, len(ents))
		for k := range ents {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := fn(ents[k].k, ents[k].v); err != nil {
				return err
			}
		}
		group, ents, own = nil, nil, nil
		return nil
	}
	for ok := it.First(); ok; ok = it.Next() {
		key := it.Key()
		if pk == nil || !pk.packable(key) {
			if group != nil {
				if err := flushGroup(); err != nil {
					return err
				}
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			if err := fn(key, v); err != nil {
				return err
			}
			continue
		}
		if group != nil && !bytes.Equal(group, key[:pk.groupLen]) {
			if err := flushGroup(); err != nil {
				return err
			}
		}
		if group == nil {
			group, ents = bytes.Clone(key[:pk.groupLen]), map[string]kv{}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if !pk.isPackKey(key) {
			ents[string(key)] = kv{bytes.Clone(key), bytes.Clone(v)}
			continue
		}
		// Packed values sort after the group's own keys. A key with a
		// Pebble value of its own was rewritten after it was packed: that
		// value is its value.
		if own == nil {
			own = make(map[string]bool, len(ents))
			for k := range ents {
				own[k] = true
			}
		}
		err = scanPacked(v, func(suffix, val []byte) bool {
			k := append(bytes.Clone(group), suffix...)
			if !own[string(k)] {
				ents[string(k)] = kv{k, bytes.Clone(val)}
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("state store %s: packed value %q: %w", s.dir, key, err)
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if group != nil {
		return flushGroup()
	}
	return nil
}
