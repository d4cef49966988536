package pipeline

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/test/s3test"
)

// clogRig is an engine in changelog mode driven by hand: epochs applied
// to one partition as the loop applies committed epochs, snapshots taken
// and published as at the interval.
type clogRig struct {
	t   *testing.T
	dir string
	ck  checkpoint.Storage
	// file is where the storage keeps an object (its path relative to
	// the storage's location) on local disk.
	file func(rel string) string
	e    *Engine
	ps   *partState
	rng  *rand.Rand
	keys int
	// states[pos] is the live store's content after the snapshot that
	// made pos durable.
	states map[int64]map[string]string
}

func newClogRig(t *testing.T, baseEvery int) *clogRig {
	return newClogRigOn(t, baseEvery, "dir")
}

// newClogRigOn is newClogRig with checkpoints in a directory ("dir") or
// in a bucket of a versitygw ("s3").
func newClogRigOn(t *testing.T, baseEvery int, storage string) *clogRig {
	t.Helper()
	dir := t.TempDir()
	log := zaptest.NewLogger(t)
	opts := checkpoint.Options{Mode: checkpoint.ModeChangelog, Retain: 10, Logger: log}
	var ck checkpoint.Storage
	var file func(string) string
	if storage == "s3" {
		srv := s3test.Start(t)
		s3, err := checkpoint.OpenStorage(context.Background(), srv.Location("ck"), opts, checkpoint.S3Config{Endpoint: "http://" + srv.Endpoint,
			PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
		if err != nil {
			t.Fatal(err)
		}
		ck = s3
		// The POSIX back end keeps each object as a file.
		file = func(rel string) string {
			return filepath.Join(srv.Dir, "root", srv.Bucket, "ck", filepath.FromSlash(rel))
		}
	} else {
		d, err := checkpoint.Open(filepath.Join(dir, "ck"), opts)
		if err != nil {
			t.Fatal(err)
		}
		ck = d
		file = func(rel string) string { return filepath.Join(d.Dir(), filepath.FromSlash(rel)) }
	}
	e := NewEngine(Config{Topic: "in", DataDir: filepath.Join(dir, "data"), Job: map[string]string{"operator": "test/v1"},
		Logger: log, ChangelogBaseEvery: baseEvery, ChangelogMaxRatio: -1}, nil, nil, nil, ck)
	e.snaps.start(e)
	t.Cleanup(e.snaps.stop)
	st, err := OpenStore(filepath.Join(dir, "live"), StoreOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ps := &partState{p: 0, store: st, ov: newOverlay(st), lastSnapOffset: -1}
	e.parts[0] = ps
	return &clogRig{t: t, dir: dir, ck: ck, file: file, e: e, ps: ps, rng: rand.New(rand.NewSource(1)), keys: 200, states: map[int64]map[string]string{}}
}

// epoch commits records records: each sets or deletes a random key.
func (r *clogRig) epoch(records int) {
	r.t.Helper()
	for i := 0; i < records; i++ {
		k := []byte(fmt.Sprintf("k/%04d", r.rng.Intn(r.keys)))
		if r.rng.Intn(5) == 0 {
			_ = r.ps.ov.Delete(k)
		} else {
			_ = r.ps.ov.Set(k, []byte(fmt.Sprintf("v%d-%d", r.ps.pos, i)))
		}
		r.ps.pos++
	}
	if err := r.e.applyPartition(r.ps); err != nil {
		r.t.Fatal(err)
	}
}

// expire deletes a few committed keys outside an epoch, as an Expirer.
func (r *clogRig) expire() {
	r.t.Helper()
	var keys [][]byte
	for i := 0; i < 5; i++ {
		keys = append(keys, []byte(fmt.Sprintf("k/%04d", r.rng.Intn(r.keys))))
	}
	if err := r.ps.store.DeleteKeys(keys); err != nil {
		r.t.Fatal(err)
	}
}

// snapshot takes the interval's snapshot and waits for it.
func (r *clogRig) snapshot() {
	r.t.Helper()
	if err := r.e.snapshot(true); err != nil {
		r.t.Fatal(err)
	}
	if r.e.snaps.failures > 0 {
		r.t.Fatalf("snapshot failed")
	}
	r.states[r.ps.next] = dumpStore(r.t, r.ps.store)
}

func dumpStore(t *testing.T, st *Store) map[string]string {
	t.Helper()
	it, err := st.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string]string{}
	for it.First(); it.Valid(); it.Next() {
		out[string(it.Key())] = string(it.Value())
	}
	return out
}

// recoverAt plans and restores partition 0 with the group at c, as a
// new process would.
func (r *clogRig) recoverAt(c int64) (Plan, map[string]string) {
	r.t.Helper()
	e := NewEngine(Config{Topic: "in", DataDir: filepath.Join(r.dir, "data2"), Job: map[string]string{"operator": "test/v1"},
		Logger: zaptest.NewLogger(r.t)}, nil, nil, nil, r.ck)
	in := RecoveryInput{Partition: 0, Group: c, LogEnd: 1 << 40}
	metas, err := r.ck.List("in", 0)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, m := range metas {
		sc := SnapshotCandidate{ID: m.ID, Offset: m.Offset}
		if sc.Segments, err = e.segmentCandidates(0, m); err != nil {
			r.t.Fatal(err)
		}
		in.Snapshots = append(in.Snapshots, sc)
	}
	pl, st, _, err := e.planAndRestore(context.Background(), in, filepath.Join(r.dir, "data2", "state", "in-0"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer st.Close()
	return pl, dumpStore(r.t, st)
}

func sameState(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("restored state has %d keys, the live store %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %q: restored %q, live %q", k, got[k], v)
		}
	}
}

// TestChangelogRestoreEqualsLive: a base plus its segments restores
// exactly the state of the store that processed the same epochs (sets,
// deletes, expiry), with no replay; a base is written every 4 snapshots.
// In a directory and in object storage.
// Segments are written as records (small) and as tables (tableMinBytes
// lowered to 0).
func TestChangelogRestoreEqualsLive(t *testing.T) {
	for _, storage := range []string{"dir", "s3"} {
		for _, body := range []string{"records", "tables"} {
			t.Run(storage+"/"+body, func(t *testing.T) {
				if body == "tables" {
					defer func(n int) { tableMinBytes = n }(tableMinBytes)
					tableMinBytes = 0
				}
				testChangelogRestoreEqualsLive(t, storage, body)
			})
		}
	}
}

func testChangelogRestoreEqualsLive(t *testing.T, storage, body string) {
	r := newClogRigOn(t, 4, storage)
	var modes []string
	r.e.stats.OnSnapshot(func(si SnapshotInfo) { modes = append(modes, si.Mode) })
	for round := 0; round < 7; round++ {
		for ep := 0; ep < 3; ep++ {
			r.epoch(20)
			if ep == 1 {
				r.expire()
			}
		}
		r.snapshot()
	}
	want := "changelog changelog-segment changelog-segment changelog-segment changelog changelog-segment changelog-segment"
	if got := strings.Join(modes, " "); got != want {
		t.Fatalf("snapshots %s\nwant      %s", got, want)
	}
	live := dumpStore(t, r.ps.store)
	pl, got := r.recoverAt(r.ps.next)
	if len(pl.Segments) != 2 || pl.ReplayFrom != r.ps.next || pl.Resume != r.ps.next {
		t.Fatalf("plan %+v: want the second base, 2 segments, nothing to replay", pl)
	}
	sameState(t, got, live)

	// Restore (tools, benchmarks) reaches the same state the same way.
	rst, rm, rn, reach, err := Restore(context.Background(), r.ck, checkpoint.Want{Topic: "in", MaxOffset: math.MaxInt64},
		filepath.Join(r.dir, "tool", "store"), StoreOptions{}, math.MaxInt64)
	if err != nil || rm.ID != pl.Snapshot.ID || rn != 2 || reach != r.ps.next {
		t.Fatalf("Restore: %s, %d segments, reached %d (%v); want %s, 2, %d", rm.ID, rn, reach, err, pl.Snapshot.ID, r.ps.next)
	}
	sameState(t, dumpStore(t, rst), live)
	if err := rst.Close(); err != nil {
		t.Fatal(err)
	}

	// A group behind the chain's end (offsets reset) stops before the
	// segment that passes it.
	segs, err := r.ck.Segments("in", 0, pl.Snapshot.ID)
	if err != nil || len(segs) != 2 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	for _, g := range segs {
		d, err := r.ck.ReadSegment(context.Background(), g)
		if err != nil || (d.Table() != nil) != (body == "tables") {
			t.Fatalf("segment %d: table %v (%v), want %s", g.Seq, d.Table() != nil, err, body)
		}
	}
	pl, got = r.recoverAt(segs[1].Last - 1)
	if len(pl.Segments) != 1 || pl.ReplayFrom != segs[0].Last {
		t.Fatalf("plan %+v with C inside segment 2", pl)
	}
	sameState(t, got, r.states[segs[0].Last])

	// A damaged last segment: restore stops before it and the plan
	// replays from there.
	p := r.file(segs[1].Path)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	pl, got = r.recoverAt(r.ps.next)
	if len(pl.Segments) != 1 || pl.ReplayFrom != segs[0].Last || pl.Resume != r.ps.next {
		t.Fatalf("plan %+v after damaging segment 2: want segment 1 and a replay from %d", pl, segs[0].Last)
	}
	sameState(t, got, r.states[segs[0].Last])
}

// TestChangelogBufferBound: changes that cannot be written while a
// segment is in flight are buffered up to ChangelogBufferBytes; past it
// they are dropped and the next snapshot is a base, which restores the
// full state again.
func TestChangelogBufferBound(t *testing.T) {
	r := newClogRig(t, 100)
	r.e.cfg.ChangelogBufferBytes = 4 << 10
	r.epoch(10)
	r.snapshot() // the base
	r.epoch(10)
	r.snapshot() // a segment
	if c := r.ps.clog; !c.valid || c.seq != 1 {
		t.Fatalf("after base and segment: %+v", c)
	}
	// The storage does not keep up: epochs pile up past the bound.
	for i := 0; i < 60; i++ {
		r.epoch(10)
	}
	c := r.ps.clog
	if c.valid || c.cur.Len() > r.e.cfg.ChangelogBufferBytes {
		t.Fatalf("buffer past the bound: valid %v, %d bytes buffered", c.valid, c.cur.Len())
	}
	var modes []string
	r.e.stats.OnSnapshot(func(si SnapshotInfo) { modes = append(modes, si.Mode) })
	r.snapshot()
	r.epoch(10)
	r.snapshot()
	if got := strings.Join(modes, " "); got != "changelog changelog-segment" {
		t.Fatalf("after the drop: snapshots %s, want a base then a segment", got)
	}
	live := dumpStore(t, r.ps.store)
	pl, got := r.recoverAt(r.ps.next)
	if len(pl.Segments) != 1 || pl.ReplayFrom != r.ps.next {
		t.Fatalf("plan %+v", pl)
	}
	sameState(t, got, live)
}

// TestChangelogStaleResult: a publish result queued by an earlier owner
// of the partition in this process (released, then recovered again while
// the publisher was busy) must not become the new state's base: its
// buffered changes continue the new state's own base cut, not the old
// snapshot.
func TestChangelogStaleResult(t *testing.T) {
	r := newClogRig(t, 10)
	r.epoch(10)
	old := r.ps
	fresh := &partState{p: 0, store: old.store, ov: newOverlay(old.store), lastSnapOffset: -1, next: old.next, pos: old.pos}
	r.e.parts[0] = fresh
	fresh.clog = &changelog{baseInFlight: true, baseValid: true}
	fresh.snapInFlight = true
	stale := snapResult{job: snapJob{p: 0, ps: old, offset: 5}, meta: checkpoint.Meta{ID: "old-base", Offset: 5, Mode: checkpoint.ModeChangelog}}
	if err := r.e.snapDone(stale); err != nil {
		t.Fatal(err)
	}
	if c := fresh.clog; c.base != "" || c.valid || !c.baseInFlight || !fresh.snapInFlight {
		t.Fatalf("a stale result changed the new owner's state: %+v, in flight %v", c, fresh.snapInFlight)
	}
}

// TestApplyChainMixed: a chain of records segments (the encoding tools
// and earlier builds write) and table segments (the engine's) applies in
// order, the last change of each key winning across both kinds, exactly
// as applying the epochs one by one to a live store does.
func TestApplyChainMixed(t *testing.T) {
	dir := t.TempDir()
	live, err := OpenStore(filepath.Join(dir, "live"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	restored, err := OpenStore(filepath.Join(dir, "restored"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	rng := rand.New(rand.NewSource(7))
	kinds := []string{"records", "table", "table", "records", "records", "table"}
	var segs []*checkpoint.SegmentData
	pos := int64(0)
	for i, kind := range kinds {
		var body checkpoint.ChangeBuffer
		for ep := 0; ep < 3; ep++ {
			b := live.db.NewBatch()
			for r := 0; r < 50; r++ {
				k := []byte(fmt.Sprintf("k/%03d", rng.Intn(80)))
				if rng.Intn(4) == 0 {
					_ = b.Delete(k, nil)
					body.Delete(k)
				} else {
					v := []byte(fmt.Sprintf("v%d-%d-%d", i, ep, r))
					_ = b.Set(k, v, nil)
					body.Set(k, v)
				}
				pos++
			}
			if err := live.db.Apply(b, nil); err != nil {
				t.Fatal(err)
			}
			body.EndEpoch(pos)
		}
		seg := checkpoint.Segment{Topic: "in", Base: "base", Seq: int64(i + 1), First: pos - 150}
		var data []byte
		if kind == "table" {
			var table []byte
			if table, err = segmentTable(restored.db.TableFormat(), &body); err == nil {
				data, _, err = checkpoint.EncodeTableSegment(seg, &body, table)
			}
		} else {
			data, _, err = checkpoint.EncodeSegment(seg, &body)
		}
		if err != nil {
			t.Fatal(err)
		}
		d, err := checkpoint.DecodeSegment(data)
		if err != nil {
			t.Fatal(err)
		}
		if (d.Table() != nil) != (kind == "table") {
			t.Fatalf("segment %d: want %s", i+1, kind)
		}
		segs = append(segs, d)
	}
	n, err := applyChain(context.Background(), restored, len(segs), func(i int) (*checkpoint.SegmentData, error) { return segs[i], nil })
	if err != nil || n != len(segs) {
		t.Fatalf("applied %d of %d: %v", n, len(segs), err)
	}
	if off, err := restored.Offset(); err != nil || off != pos {
		t.Fatalf("restored position %d (%v), want %d", off, err, pos)
	}
	want := dumpStore(t, live)
	got := dumpStore(t, restored)
	delete(got, string(offsetKey))
	if len(want) < 20 {
		t.Fatalf("only %d live keys: the test does not exercise much", len(want))
	}
	sameState(t, got, want)

	// A segment that fails to read ends the chain after the ones before.
	again, err := OpenStore(filepath.Join(dir, "again"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	boom := fmt.Errorf("segment 4: %w", checkpoint.ErrCorrupt)
	n, err = applyChain(context.Background(), again, len(segs), func(i int) (*checkpoint.SegmentData, error) {
		if i == 3 {
			return nil, boom
		}
		return segs[i], nil
	})
	if n != 3 || err != boom {
		t.Fatalf("applied %d with segment 4 unreadable: %v", n, err)
	}
	if off, _ := again.Offset(); off != segs[2].Last {
		t.Fatalf("position %d after 3 segments, want %d", off, segs[2].Last)
	}
	for _, st := range []*Store{restored, again} {
		if _, err := os.Stat(st.dir + ".segments"); !os.IsNotExist(err) {
			t.Fatalf("tables read ahead were left in %s.segments: %v", st.dir, err)
		}
	}
}
