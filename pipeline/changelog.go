package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
)

// Changelog mode (checkpoint.ModeChangelog). Each committed epoch's
// changes of a partition (its overlay's dirty entries, and the entries
// expiry deletes after it) are encoded, with the partition's position,
// into a per-partition buffer when they are applied. At each snapshot
// interval the buffer becomes one segment that the publisher appends to
// the partition's change log after the current base; a base (a Pebble
// checkpoint published as an incremental snapshot) is taken instead every
// ChangelogBaseEvery snapshots, when the log since the base exceeds
// ChangelogMaxRatio of the store's size, after every recovery (this
// process has no chain of its own yet) and after changes were dropped.
//
// The buffer of changes that are not durable yet is bounded
// (ChangelogBufferBytes per partition). When it is full the engine does
// not wait for the storage: it drops the buffered changes and the next
// snapshot is a base. Waiting would make a slow or unreachable storage
// stop processing and output, which snapshots never do in the other
// modes; a dropped buffer costs only a base (and, if the process dies
// before it is written, a longer replay from the end of the durable
// chain), never correctness.

// Changelog defaults.
const (
	DefaultChangelogBaseEvery    = 12
	DefaultChangelogMaxRatio     = 0.5
	DefaultChangelogBufferBytes  = 64 << 20
	DefaultChangelogSegmentBytes = 16 << 20
)

// changelog is one partition's change-log state.
type changelog struct {
	// The durable chain: base and the segments appended after it.
	base      string
	seq       int64 // sequence of the last durable segment
	last      int64 // position the durable chain reaches
	sinceBase int   // segments since the base
	logBytes  int64 // their bytes, uncompressed
	// valid: a durable chain exists and cur continues it from last.
	valid bool
	// cur holds the changes not handed to the publisher yet.
	cur checkpoint.ChangeBuffer
	// A segment in flight: its changes (given back to cur if it fails).
	sent *checkpoint.ChangeBuffer
	// A base in flight: the changes before its checkpoint (pre: given
	// back to cur if it fails and the old chain is valid) and whether cur
	// continues it (false once changes were dropped).
	baseInFlight bool
	baseValid    bool
	pre          *checkpoint.ChangeBuffer
	dropWarned   bool
}

func (e *Engine) changelogMode() bool {
	return e.ckpt != nil && e.ckpt.Mode() == checkpoint.ModeChangelog
}

func (e *Engine) clog(ps *partState) *changelog {
	if ps.clog == nil && e.changelogMode() {
		ps.clog = &changelog{}
		ps.store.onDelete = func(keys [][]byte) { e.recordDeletes(ps, keys) }
	}
	return ps.clog
}

// recording reports whether changes applied now belong to a chain that
// will be written: the durable one, or the one of the base in flight.
func (c *changelog) recording() bool { return c.valid || c.baseInFlight && c.baseValid }

// recordEpoch encodes the epoch's changes of ps (its overlay, about to be
// applied) at its new position.
func (e *Engine) recordEpoch(ps *partState) {
	c := e.clog(ps)
	if c == nil || !c.recording() {
		return
	}
	ps.ov.changes(func(key, value []byte, deleted bool) {
		if deleted {
			c.cur.Delete(key)
		} else {
			c.cur.Set(key, value)
		}
	})
	c.cur.EndEpoch(ps.pos)
	e.boundChangelog(ps)
}

// recordDeletes encodes the keys expiry deleted (Store.DeleteKeys) at the
// partition's committed position.
func (e *Engine) recordDeletes(ps *partState, keys [][]byte) {
	c := ps.clog
	if c == nil || !c.recording() {
		return
	}
	for _, k := range keys {
		c.cur.Delete(k)
	}
	c.cur.EndEpoch(ps.next)
	e.boundChangelog(ps)
}

// boundChangelog drops the buffered changes when they pass the bound;
// the next snapshot is then a base.
func (e *Engine) boundChangelog(ps *partState) {
	c := ps.clog
	n := c.cur.Len()
	if c.sent != nil {
		n += c.sent.Len() + c.sent.Len()/2 // and its encoding, in the publisher
	}
	if c.pre != nil {
		n += c.pre.Len()
	}
	if n <= e.cfg.ChangelogBufferBytes {
		return
	}
	if !c.dropWarned {
		e.log.Warn("change-log buffer full (the checkpoint storage is slow or failing): dropping the changes not yet written; the next snapshot is a base",
			zap.Int32("partition", ps.p), zap.Int("buffered_bytes", n), zap.Int("limit", e.cfg.ChangelogBufferBytes))
		c.dropWarned = true
	}
	c.cur = checkpoint.ChangeBuffer{}
	c.pre = nil
	c.valid, c.baseValid = false, false
}

// needBase decides between a segment and a base for the next snapshot.
func (e *Engine) needBase(ps *partState, c *changelog) bool {
	if !c.valid || c.sinceBase+1 >= e.cfg.ChangelogBaseEvery {
		return true
	}
	if r := e.cfg.ChangelogMaxRatio; r > 0 && float64(c.logBytes+int64(c.cur.Len())) > r*float64(ps.store.Size()) {
		return true
	}
	return false
}

// segmentDue reports a partition whose buffer reached the segment size:
// it gets a segment at this committed boundary, not at the interval.
func (e *Engine) segmentDue() bool {
	for _, ps := range e.parts {
		if c := ps.clog; c != nil && c.valid && !ps.snapInFlight && c.cur.Len() >= e.cfg.ChangelogSegmentBytes {
			return true
		}
	}
	return false
}

// snapshotSegment hands the buffered changes of ps to the publisher as
// the next segment of its chain. ok is false when a base is due instead.
func (e *Engine) snapshotSegment(ps *partState) (ok bool) {
	c := e.clog(ps)
	if c == nil || e.needBase(ps, c) {
		return false
	}
	if c.cur.Epochs() == 0 {
		ps.dirty = false
		return true
	}
	// The publisher encodes (compresses) and writes it: the buffer is
	// not touched here until the result comes back.
	sent := c.cur
	c.sent = &sent
	c.cur = checkpoint.ChangeBuffer{}
	ps.dirty = false
	ps.snapInFlight = true
	e.snaps.jobs <- snapJob{p: ps.p, ps: ps, offset: sent.Last(), trigger: e.now(), segment: &sent,
		seg:    checkpoint.Segment{Topic: e.cfg.Topic, Partition: ps.p, Base: c.base, Seq: c.seq + 1, First: c.last},
		format: ps.store.db.TableFormat()}
	return true
}

// baseCut runs when the checkpoint of a base is taken: the changes so far
// are in it; cur starts the base's chain.
func (e *Engine) baseCut(ps *partState) {
	c := ps.clog
	if c == nil {
		return
	}
	pre := c.cur
	c.pre = &pre
	c.cur = checkpoint.ChangeBuffer{}
	c.baseInFlight, c.baseValid = true, true
	c.dropWarned = false
}

// changelogDone updates the chain with a publish result.
func (e *Engine) changelogDone(ps *partState, r snapResult) {
	c := ps.clog
	if c == nil {
		return
	}
	switch {
	case r.job.segment != nil && r.err == nil:
		c.sent = nil
		c.seq, c.last = r.seg.Seq, r.seg.Last
		c.sinceBase++
		c.logBytes += r.seg.BodyBytes // what a restore applies
	case r.job.segment != nil:
		if c.valid && c.sent != nil {
			c.sent.Append(&c.cur)
			c.cur = *c.sent
		}
		c.sent = nil
	case r.err == nil: // a base
		c.base, c.seq, c.last = r.meta.ID, 0, r.meta.Offset
		c.sinceBase, c.logBytes = 0, 0
		c.valid = c.baseValid
		c.baseInFlight, c.pre = false, nil
		if !c.valid {
			c.cur = checkpoint.ChangeBuffer{}
		}
	default: // a failed base: the old chain goes on, if it is valid
		if c.valid && c.pre != nil {
			c.pre.Append(&c.cur)
			c.cur = *c.pre
		} else {
			c.valid = false
			c.cur = checkpoint.ChangeBuffer{}
		}
		c.baseInFlight, c.pre = false, nil
	}
}

// prefetchSegments starts reading the planned change-log segments into
// dir+".segments" before the base is restored into dir, so that fetching
// them (object storage answers each request with a delay) overlaps the
// base's restore; applySegments then applies what it read. The caller
// stops it whatever happens.
func (e *Engine) prefetchSegments(ctx context.Context, pl Plan, dir string) *readAhead {
	return startReadAhead(ctx, dir+".segments", len(pl.Segments), func(i int) (*checkpoint.SegmentData, error) {
		sc := pl.Segments[i]
		return e.ckpt.ReadSegment(ctx, checkpoint.Segment{Topic: e.cfg.Topic, Partition: pl.Partition, Base: pl.Snapshot.ID,
			Seq: sc.Seq, First: sc.First, Last: sc.Last})
	})
}

// applySegments applies the planned change-log segments, read by ra (see
// prefetchSegments), in order, on top of the restored base in store. It
// returns how many were applied; a segment that is missing or does not
// verify ends it with an error that matches checkpoint.ErrCorrupt (the
// caller plans again without it and the rest of its chain).
func (e *Engine) applySegments(ctx context.Context, pl Plan, store *Store, ra *readAhead) (int, error) {
	return applyStaged(ctx, store, ra, len(pl.Segments))
}

// ingestGroupBytes bounds the records segments (uncompressed) a restore
// holds in memory at once: they are merged into one sorted table and
// ingested together.
const ingestGroupBytes = 32 << 20

// applyChain applies n segments, read in order by read, to store. A table
// segment is ingested as it is: Pebble links it above everything the
// store holds, so a chain of tables costs a few file links, not a rewrite
// of its changes. Consecutive records segments (up to ingestGroupBytes)
// are merged — the last change of each key wins, as if the epochs were
// applied one by one — into one sorted table that is ingested the same
// way. After each ingest the position it reaches is written. A segment
// that cannot be read or does not verify ends the chain after the ones
// before it were applied; its error is returned with how many were.
func applyChain(ctx context.Context, store *Store, n int, read func(i int) (*checkpoint.SegmentData, error)) (int, error) {
	ra := startReadAhead(ctx, store.dir+".segments", n, read)
	defer ra.stop()
	return applyStaged(ctx, store, ra, n)
}

// applyStaged is applyChain's work over segments that ra reads.
func applyStaged(ctx context.Context, store *Store, ra *readAhead, n int) (int, error) {
	applied := 0
	var group []*checkpoint.SegmentData
	size := 0
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		if err := ingestSegments(ctx, store, group); err != nil {
			return err
		}
		applied += len(group)
		group, size = nil, 0
		return nil
	}
	for i := 0; i < n; i++ {
		sg, err := ra.next()
		if err != nil {
			if ferr := flush(); ferr != nil {
				return applied, ferr
			}
			return applied, err
		}
		if sg.table != "" {
			if err := flush(); err != nil {
				return applied, err
			}
			if err := ingestFile(ctx, store, sg.table); err != nil {
				return applied, fmt.Errorf("segment %d of base %s: %w", sg.d.Seq, sg.d.Base, err)
			}
			if err := setPosition(store, sg.d.Last); err != nil {
				return applied, err
			}
			applied++
			continue
		}
		group = append(group, sg.d)
		if size += int(sg.d.BodyBytes); size >= ingestGroupBytes {
			if err := flush(); err != nil {
				return applied, err
			}
		}
	}
	return applied, flush()
}

// segmentsAhead is how many segments a restore reads at once, ahead of
// the one it applies: downloads (object storage answers each request
// with a delay), file reads and writing tables to files overlap each
// other and the ingests.
const segmentsAhead = 4

// staged is a segment read ahead: a table segment's table is already in
// a file (table), a records segment's data in memory.
type staged struct {
	d     *checkpoint.SegmentData
	table string
	err   error
}

// readAhead reads the segments of a chain up to segmentsAhead at a time
// and hands them to the applier in chain order, writing each table into
// dir. The applier gets a read error in its turn; nothing after it is
// applied.
type readAhead struct {
	res    []chan staged
	slots  chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
	dir    string
	ctx    context.Context
	pos    int // the next segment the applier takes
}

func startReadAhead(ctx context.Context, dir string, n int, read func(i int) (*checkpoint.SegmentData, error)) *readAhead {
	ctx, cancel := context.WithCancel(ctx)
	ra := &readAhead{res: make([]chan staged, n), slots: make(chan struct{}, segmentsAhead), cancel: cancel, done: make(chan struct{}), dir: dir, ctx: ctx}
	for i := range ra.res {
		ra.res[i] = make(chan staged, 1)
	}
	mkdir := sync.OnceValue(func() error { return os.MkdirAll(dir, 0o750) })
	go func() {
		defer close(ra.done)
		for i := 0; i < n; i++ {
			select {
			case ra.slots <- struct{}{}: // released when the applier takes a segment
			case <-ctx.Done():
				return
			}
			ra.wg.Add(1)
			go func(i int) {
				defer ra.wg.Done()
				ra.res[i] <- stage(read, i, dir, mkdir)
			}(i)
		}
	}()
	return ra
}

// stage reads segment i and, for a table, writes it into dir.
func stage(read func(i int) (*checkpoint.SegmentData, error), i int, dir string, mkdir func() error) staged {
	d, err := read(i)
	if err != nil {
		return staged{err: err}
	}
	t := d.Table()
	if t == nil {
		return staged{d: d}
	}
	if err := mkdir(); err != nil {
		return staged{err: err}
	}
	path := filepath.Join(dir, strconv.FormatInt(d.Seq, 10)+".sst")
	if err := os.WriteFile(path, t, 0o640); err != nil {
		return staged{err: fmt.Errorf("segment %d of base %s: %w", d.Seq, d.Base, err)}
	}
	// The table is in the file now: keep the header only.
	return staged{d: &checkpoint.SegmentData{Segment: d.Segment}, table: path}
}

// next returns the next segment in chain order.
func (ra *readAhead) next() (staged, error) {
	select {
	case sg := <-ra.res[ra.pos]:
		ra.pos++
		<-ra.slots
		return sg, sg.err
	case <-ra.ctx.Done(): // the read may never have started
		return staged{}, ra.ctx.Err()
	}
}

// stop ends the reading, waits for the reads in flight and removes the
// tables not ingested.
func (ra *readAhead) stop() {
	ra.cancel()
	<-ra.done
	ra.wg.Wait()
	_ = os.RemoveAll(ra.dir)
}

type change struct {
	key, val []byte
	ord      int32 // order of application within the group
	del      bool
}

// netChanges collects the changes of records bodies, applied in order,
// sorted by key with each key's last change last (writeTable keeps only
// that one).
func netChanges(n int, each ...func(fn func(kind byte, key, value []byte, pos int64) error) error) ([]change, error) {
	chs := make([]change, 0, n)
	for _, e := range each {
		err := e(func(kind byte, key, value []byte, _ int64) error {
			switch kind {
			case checkpoint.ChangeSet:
				chs = append(chs, change{key: key, val: value, ord: int32(len(chs))})
			case checkpoint.ChangeDelete:
				chs = append(chs, change{key: key, del: true, ord: int32(len(chs))})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(chs, func(a, b change) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		return int(a.ord - b.ord)
	})
	return chs, nil
}

// ingestSegments merges verified records segments (in chain order) into
// one table, ingests it and records the last segment's position.
func ingestSegments(ctx context.Context, store *Store, group []*checkpoint.SegmentData) error {
	last := group[len(group)-1]
	each := make([]func(func(byte, []byte, []byte, int64) error) error, len(group))
	n := 0
	for i, d := range group {
		each[i] = d.Each
		n += d.Changes
	}
	chs, err := netChanges(n, each...)
	if err != nil {
		return fmt.Errorf("segments %d..%d of base %s: %w", group[0].Seq, last.Seq, last.Base, err)
	}
	if len(chs) > 0 {
		path := store.dir + ".ingest-" + strconv.FormatInt(last.Seq, 10) + ".sst"
		f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
		if err == nil {
			err = writeTable(objstorageprovider.NewFileWritable(f), store.db.TableFormat(), chs)
		}
		if err != nil {
			_ = os.Remove(path)
			return fmt.Errorf("segments %d..%d of base %s: %w", group[0].Seq, last.Seq, last.Base, err)
		}
		if err := ingestFile(ctx, store, path); err != nil {
			return fmt.Errorf("segments %d..%d of base %s: %w", group[0].Seq, last.Seq, last.Base, err)
		}
	}
	return setPosition(store, last.Last)
}

// ingestFile ingests the table at path into store and removes the path
// (the store has linked or copied it).
func ingestFile(ctx context.Context, store *Store, path string) error {
	err := store.db.Ingest(ctx, []string{path})
	_ = os.Remove(path)
	if err != nil {
		return fmt.Errorf("ingesting into state store %s: %w", store.dir, err)
	}
	return nil
}

func setPosition(store *Store, pos int64) error {
	b := store.db.NewBatch()
	defer b.Close()
	if err := b.Set(offsetKey, offsetBytes(pos), nil); err != nil {
		return err
	}
	if err := store.db.Apply(b, pebble.NoSync); err != nil {
		return fmt.Errorf("state store %s: %w", store.dir, err)
	}
	return nil
}

// writeTable writes chs (sorted by key; of equal keys the last wins) as
// a table of the given format that a store can ingest, with bloom
// filters like the store's own tables and zstd-compressed blocks (a
// segment's size is what a snapshot writes).
func writeTable(dst objstorage.Writable, format sstable.TableFormat, chs []change) error {
	w := sstable.NewWriter(dst, sstable.WriterOptions{
		TableFormat:  format,
		FilterPolicy: bloom.FilterPolicy(10),
		FilterType:   pebble.TableFilter,
		Compression:  sstable.ZstdCompression,
		// Large blocks compress better (13% smaller at 1M accounts than
		// 4 KiB ones); the store rewrites ingested tables with its own
		// block size when it compacts them out of L0.
		BlockSize: 64 << 10,
	})
	var err error
	for i, c := range chs {
		if i+1 < len(chs) && bytes.Equal(chs[i+1].key, c.key) {
			continue // a later change of the same key wins
		}
		if c.del {
			err = w.Delete(c.key)
		} else {
			err = w.Set(c.key, c.val)
		}
		if err != nil {
			_ = w.Close()
			return err
		}
	}
	return w.Close()
}

// memWritable is an objstorage.Writable into memory.
type memWritable struct{ buf []byte }

func (m *memWritable) Write(p []byte) error { m.buf = append(m.buf, p...); return nil }
func (m *memWritable) Finish() error        { return nil }
func (m *memWritable) Abort()               {}

// segmentTable builds the body of a table segment from a change buffer:
// its net changes in a table of format. It runs in the publisher, off the
// processing goroutine.
func segmentTable(format sstable.TableFormat, body *checkpoint.ChangeBuffer) ([]byte, error) {
	chs, err := netChanges(body.Changes(), body.Each)
	if err != nil {
		return nil, err
	}
	w := &memWritable{buf: make([]byte, 0, body.Len()/2)}
	if err := writeTable(w, format, chs); err != nil {
		return nil, err
	}
	return w.buf, nil
}

// tableMinBytes is the smallest change buffer (encoded) written as a
// table. Each table costs a restore one ingest, a few milliseconds
// whatever its size, while consecutive records segments are merged into
// one ingest; below this size records restore faster (10k accounts, 11
// segments of 40 KB: 63 ms as tables).
// A variable for tests.
var tableMinBytes = 4 << 20

// encodeSegment encodes a segment job: as a table of the store's format
// when it holds at least tableMinBytes of changes, else (and when the
// job has no format) as zstd-compressed records.
func encodeSegment(j snapJob) ([]byte, checkpoint.Segment, error) {
	if j.format == 0 || j.segment.Len() < tableMinBytes {
		return checkpoint.EncodeSegment(j.seg, j.segment)
	}
	table, err := segmentTable(j.format, j.segment)
	if err != nil {
		return nil, j.seg, fmt.Errorf("building the table of segment %d of base %s: %w", j.seg.Seq, j.seg.Base, err)
	}
	return checkpoint.EncodeTableSegment(j.seg, j.segment, table)
}

// EncodeSegment encodes body as segment seg of st's change log the way
// the engine does (a table of st's format, or records when body is
// small), for benchmarks and tools.
func EncodeSegment(st *Store, seg checkpoint.Segment, body *checkpoint.ChangeBuffer) ([]byte, checkpoint.Segment, error) {
	return encodeSegment(snapJob{seg: seg, segment: body, format: st.db.TableFormat()})
}

func offsetBytes(off int64) []byte {
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = byte(off)
		off >>= 8
	}
	return b[:]
}

// segmentCandidates lists the change log of a base for the planner.
func (e *Engine) segmentCandidates(p int32, m checkpoint.Meta) ([]SegmentCandidate, error) {
	if m.Mode != checkpoint.ModeChangelog {
		return nil, nil
	}
	segs, err := e.ckpt.Segments(e.cfg.Topic, p, m.ID)
	if err != nil {
		return nil, fmt.Errorf("listing the change log of snapshot %s of partition %d: %w", m.ID, p, err)
	}
	out := make([]SegmentCandidate, 0, len(segs))
	for _, g := range segs {
		out = append(out, SegmentCandidate{Seq: g.Seq, First: g.First, Last: g.Last})
	}
	return out, nil
}

// truncateSegments keeps the first n segments of snapshot id's candidate.
func truncateSegments(cs []SnapshotCandidate, id string, n int) {
	for i := range cs {
		if cs[i].ID == id && n < len(cs[i].Segments) {
			cs[i].Segments = cs[i].Segments[:n:n]
		}
	}
}

// Restore restores into dir the newest snapshot of w's partition at or
// below w.MaxOffset that verifies, opens it with o, and in changelog mode
// applies the change log that continues it, up to maxOffset (see
// ApplyChangelog). The segments of the newest candidate base are fetched
// while the base itself is restored, as the engine's recovery does; if
// another base is restored instead (the newest did not verify), its own
// segments are read afterwards. It returns the store, the restored
// snapshot, how many segments were applied and the offset the state
// reflects; a segment that does not verify ends the chain with its error
// beside an open store. For offline tools and benchmarks; the engine
// plans its recovery through PlanRecovery.
func Restore(ctx context.Context, ck checkpoint.Storage, w checkpoint.Want, dir string, o StoreOptions, maxOffset int64) (*Store, checkpoint.Meta, int, int64, error) {
	var (
		guess checkpoint.Meta
		chain []checkpoint.Segment
		ra    *readAhead
	)
	if metas, err := ck.List(w.Topic, w.Partition); err == nil {
		for _, m := range metas {
			foreign := w.TopicID != "" && m.TopicID != "" && m.TopicID != w.TopicID ||
				w.ClusterID != "" && m.ClusterID != "" && m.ClusterID != w.ClusterID
			if !foreign && m.Offset <= w.MaxOffset && (guess.ID == "" || m.Offset > guess.Offset) {
				guess = m
			}
		}
	}
	if guess.Mode == checkpoint.ModeChangelog {
		if segs, err := ck.Segments(guess.Topic, guess.Partition, guess.ID); err == nil {
			chain = changelogChain(guess, segs, maxOffset)
			ra = startReadAhead(ctx, dir+".segments", len(chain), func(i int) (*checkpoint.SegmentData, error) {
				return ck.ReadSegment(ctx, chain[i])
			})
			defer ra.stop()
		}
	}
	m, err := ck.RestoreFrom(ctx, w, dir)
	if err != nil {
		return nil, m, 0, 0, err
	}
	st, err := OpenStore(dir, o)
	if err != nil {
		return nil, m, 0, 0, err
	}
	if ra == nil || m.ID != guess.ID {
		if ra != nil {
			ra.stop()
		}
		n, reach, err := ApplyChangelog(ctx, ck, st, m, maxOffset)
		return st, m, n, reach, err
	}
	n, err := applyStaged(ctx, st, ra, len(chain))
	reach := m.Offset
	if n > 0 {
		reach = chain[n-1].Last
	}
	return st, m, n, reach, err
}

// changelogChain is the part of base m's log that continues it
// contiguously and ends at or below maxOffset.
func changelogChain(m checkpoint.Meta, segs []checkpoint.Segment, maxOffset int64) []checkpoint.Segment {
	chain := checkpoint.Chain(m.Offset, segs)
	for i, g := range chain {
		if g.Last > maxOffset {
			return chain[:i]
		}
	}
	return chain
}

// ApplyChangelog applies to st, restored from base m, the segments of m's
// change log that continue it contiguously and end at or below maxOffset,
// each verified; it stops at the first that is missing or does not
// verify (returned as the error, matching checkpoint.ErrCorrupt). It
// returns how many were applied and the offset the state then reflects.
// For offline tools; the engine's recovery plans the same through
// PlanRecovery.
func ApplyChangelog(ctx context.Context, ck checkpoint.Storage, st *Store, m checkpoint.Meta, maxOffset int64) (int, int64, error) {
	if m.Mode != checkpoint.ModeChangelog {
		return 0, m.Offset, nil
	}
	segs, err := ck.Segments(m.Topic, m.Partition, m.ID)
	if err != nil {
		return 0, m.Offset, err
	}
	chain := changelogChain(m, segs, maxOffset)
	n, err := applyChain(ctx, st, len(chain), func(i int) (*checkpoint.SegmentData, error) { return ck.ReadSegment(ctx, chain[i]) })
	reach := m.Offset
	if n > 0 {
		reach = chain[n-1].Last
	}
	return n, reach, err
}
