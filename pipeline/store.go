package pipeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// offsetKey holds, inside each store, the input offset the store reflects:
// every record below it has been applied. It is written in the same batch
// as the epoch's state, so the two can never disagree.
var offsetKey = []byte("\xff\xfftxstream/offset")

// Store is the Pebble store of one input partition.
type Store struct {
	db  *pebble.DB
	dir string
	// filter, if enabled (EnableFilter), rules out reads of absent keys
	// under its prefix. Used only by the partition's processing goroutine.
	filter *probeFilter
	// pack, if enabled (EnableFilter with a Packer), packs new keys under
	// the filter's prefix into a few values and indexes them.
	pack *packing
	// onDelete, if set, sees the keys DeleteKeys deleted (the change log
	// records expiry).
	onDelete func(keys [][]byte)
	// giveBack returns the block cache headroom granted for this store's
	// memtables (memtableHeadroom); nil without a shared cache.
	giveBack func()
}

// memTableSize is each store's memtable size. Pebble reserves every
// memtable (and every large batch it queues as one) from the block cache
// it is given, so a shared cache of N bytes with k stores holds N - k*16 MiB
// of blocks or less: with 64 MiB and 3 partitions, almost nothing, and
// every read of a table's bloom filter read and allocated the block again
// (10% of the consumer's CPU, with the GC assists its large allocations
// caused). OpenStore therefore grants the cache memtableHeadroom per open
// store (a negative reservation) and takes it back on Close: the cache's
// configured size stays the room for blocks, and each store's mutable
// memtable and one being flushed are accounted on top of it.
const (
	memTableSize     = 16 << 20
	memtableHeadroom = 2 * memTableSize
)

// pebbleLogger sends Pebble's log lines to zap.
type pebbleLogger struct{ l *zap.SugaredLogger }

func (p pebbleLogger) Infof(format string, args ...any)  { p.l.Debugf(format, args...) }
func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Errorf(format, args...) }
func (p pebbleLogger) Fatalf(format string, args ...any) { p.l.Fatalf(format, args...) }

// Stores share one block cache (NewCache); nil gives a store its own.
// The cache is reference counted: each store holds a reference until Close.
func NewCache(bytes int64) *pebble.Cache { return pebble.NewCache(bytes) }

// StoreOptions are the options of OpenStore. The zero value is valid: a
// store with its own block cache whose Pebble log lines are discarded.
type StoreOptions struct {
	// Logger receives Pebble's log lines, under the name "pebble" (info
	// lines at debug level). Nil discards them.
	Logger *zap.Logger
	// Cache is the block cache, shared by the stores that are given the
	// same one (NewCache). Nil gives the store a cache of its own.
	Cache *pebble.Cache
	// Tune, if not nil, is called with the Pebble options txstream opens
	// every store with (see OpenStore) and may change any of them before
	// the store is opened: a tool or benchmark comparing Pebble settings
	// uses it. The consumer leaves it nil. Options that change the
	// on-disk format (FormatMajorVersion and the experimental ones) make
	// the store, and snapshots of it, unreadable by a consumer opened
	// without the same Tune.
	Tune func(*pebble.Options)
}

// OpenStore opens (creating if needed) the store in dir with txstream's
// Pebble options: a 16 MiB memtable, a WAL that is kept (a checkpoint
// captures the memtable through it, without a flush) but never synced per
// batch and never recycled, bloom filters on every level, and L0 merged
// into the base level at 8 sublevels, compactions held until Open returns
// (see openGate); then o.Tune, if set.
func OpenStore(dir string, o StoreOptions) (*Store, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	opts := &pebble.Options{
		Logger: pebbleLogger{log.Named("pebble").Sugar()},
		Cache:  o.Cache,
		// A big memtable absorbs an epoch's writes and most re-reads of
		// hot accounts; it also sizes the WAL a snapshot copies.
		MemTableSize: memTableSize,
		// Durability comes from snapshots plus replay, never from the live
		// store's WAL, so the WAL is never synced per batch; it exists so
		// that a checkpoint captures the memtable without a flush.
		DisableWAL: false,
	}
	// Flushes pile up to 8 L0 sublevels (default 4) before they are
	// merged into the base level: each such compaction rewrites the part
	// of the base level the flushes overlap, which with keys spread over
	// the key space (dedup entries) is most of it, so merging twice as
	// many flushes at once halves that work (-15..25% CPU per record in
	// aggregate.BenchmarkProcess). The cost is more L0 files per read,
	// which the key filter keeps off most dedup lookups.
	opts.L0CompactionThreshold, opts.L0StopWritesThreshold = 8, 24
	opts.Cleaner = walNoRecycle{}
	opts.FS = noSyncFS{vfs.Default}
	gate := newOpenGate()
	opts.Experimental.CompactionScheduler = gate
	for i := range opts.Levels {
		// Most reads are misses (a new transaction id is looked up for
		// dedup): bloom filters answer them without reading blocks.
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].FilterType = pebble.TableFilter
	}
	if o.Tune != nil {
		o.Tune(opts)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("opening state store %s: %w", dir, err)
	}
	gate.Open()
	st := &Store{db: db, dir: dir}
	if o.Cache != nil {
		st.giveBack = o.Cache.Reserve(-memtableHeadroom)
	}
	return st, nil
}

// walNoRecycle deletes obsolete files as Pebble's default cleaner does,
// and stops Pebble from recycling WAL files: Pebble recycles them only when
// its cleaner does not need their contents, which the promoted
// ArchiveCleaner marker claims (its Clean is shadowed by DeleteCleaner's).
// A recycled WAL keeps the physical size of the largest log before it and
// pebble.Checkpoint copies WAL files whole, so with recycling every
// snapshot copies up to a memtable's worth of WAL however little it
// holds; without it, a snapshot after a flush copies only the writes since.
// The cost is creating a WAL file per memtable instead of reusing one.
type walNoRecycle struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// DB exposes the Pebble handle for read-only queries.
func (s *Store) DB() *pebble.DB { return s.db }

// Get reads a committed value (a copy), packed keys included (Packer). A
// packed key is found through the store's index, which belongs to the
// partition's processing goroutine: other goroutines (the status API)
// read only keys outside the packed prefix, which Pebble serves
// concurrently.
func (s *Store) Get(key []byte) ([]byte, bool, error) {
	v, ok, err := s.getKey(key)
	if ok || err != nil || s.pack == nil || !s.pack.packable(key) {
		return v, ok, err
	}
	return s.readPacked(key)
}

// getKey reads key's own Pebble value (a copy).
func (s *Store) getKey(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, true, nil
}

// readCommitted is Get through the key filter (processing goroutine only).
// There is no cache of values in front of Pebble: its memtables and block
// cache answer a re-read, and a Go map of values cost more in garbage
// collection (it held Go pointers per entry) than it saved in reads.
func (s *Store) readCommitted(key []byte) ([]byte, bool, error) {
	if f := s.filter; f != nil && f.covers(key) {
		if !f.mayContain(key) {
			f.ruledOut++
			return nil, false, nil
		}
		f.passed++
	}
	return s.Get(key)
}

// NewIter iterates over the committed state in [lower, upper) (nil: no
// bound), for operators that scan their state outside Process (Expirer).
// It sees neither an open epoch's writes nor later writes; the caller
// closes it. The store's offset key (it starts with 0xff 0xff) is in the
// range when upper is nil or above it: bound the scan to the operator's
// own key prefix.
func (s *Store) NewIter(lower, upper []byte) (*pebble.Iterator, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("iterating over state store %s: %w", s.dir, err)
	}
	return it, nil
}

// DeleteKeys deletes committed keys in one unsynced batch (like an epoch's
// apply: durability comes from snapshots and replay). It is for operators
// that remove state outside Process (Expirer), from the partition's
// processing goroutine and not while an epoch holds writes of the same
// keys. It refuses the store's offset key, which only the engine writes.
// The keys are not retained.
func (s *Store) DeleteKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, k := range keys {
		if s.pack != nil && !s.pack.stale && s.pack.isPackKey(k) {
			s.pack.stale = true // its index entries go at the next rebuild
		}
		if bytes.Equal(k, offsetKey) {
			return fmt.Errorf("state store %s: DeleteKeys: the offset key belongs to the engine", s.dir)
		}
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	if err := s.db.Apply(b, pebble.NoSync); err != nil {
		return fmt.Errorf("deleting %d keys from state store %s: %w", len(keys), s.dir, err)
	}
	if s.onDelete != nil {
		s.onDelete(keys)
	}
	return nil
}

// Offset is the next input offset the store expects; -1 for a new store.
func (s *Store) Offset() (int64, error) {
	v, ok, err := s.getKey(offsetKey)
	if err != nil || !ok {
		return -1, err
	}
	if len(v) != 8 {
		return -1, fmt.Errorf("state store %s: offset record has %d bytes, want 8", s.dir, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// Checkpoint makes a consistent local copy (hard links plus the flushed
// WAL) in dir; the slow copy to the checkpoint directory happens elsewhere.
func (s *Store) Checkpoint(dir string) error {
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("pebble checkpoint of %s: %w", s.dir, err)
	}
	return nil
}

// CheckpointFlushMin is the live WAL size above which the engine flushes
// the memtable before a checkpoint (PrepareCheckpoint). Below it, copying
// the WAL is cheaper than one more small L0 file.
const CheckpointFlushMin = 1 << 20

// PrepareCheckpoint starts a background flush of the memtable when the
// live WAL holds more than minBytes, and returns a channel closed when the
// flush is done (nil: nothing worth flushing). A checkpoint copies the live
// WAL whole, and the WAL of a 16 MiB memtable is copied again by every
// snapshot until the memtable fills; flushed, the same writes become an
// immutable (and compressed) SST that an incremental snapshot shares with
// every later one. Writes go on during the flush, into a fresh memtable:
// the caller takes the checkpoint at its next committed boundary after the
// channel closes, so the processing pause stays a hard-link pass.
func (s *Store) PrepareCheckpoint(minBytes uint64) (<-chan struct{}, error) {
	if s.db.Metrics().WAL.Size <= minBytes {
		return nil, nil
	}
	ch, err := s.db.AsyncFlush()
	if err != nil {
		return nil, fmt.Errorf("flushing state store %s before a checkpoint: %w", s.dir, err)
	}
	return ch, nil
}

// Size estimates the store's on-disk bytes.
func (s *Store) Size() int64 {
	m := s.db.Metrics()
	return int64(m.DiskSpaceUsage())
}

// Close closes the store.
func (s *Store) Close() error {
	err := s.db.Close()
	s.returnHeadroom()
	return err
}

func (s *Store) returnHeadroom() {
	if s.giveBack != nil {
		s.giveBack()
		s.giveBack = nil
	}
}

// Remove closes and deletes the store.
func (s *Store) Remove() error {
	if err := s.Close(); err != nil {
		return err
	}
	return os.RemoveAll(s.dir)
}
