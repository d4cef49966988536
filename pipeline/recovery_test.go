package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/checkpoint"
)

// recoveryFixture is a checkpoint directory with snapshots of one
// partition, each holding a marker key with the offset it was taken at.
type recoveryFixture struct {
	t    *testing.T
	ckpt *checkpoint.Store
	eng  *Engine
	dir  string
}

func newRecoveryFixture(t *testing.T, allowLoss bool) *recoveryFixture {
	t.Helper()
	dir := t.TempDir()
	log := zaptest.NewLogger(t)
	ck, err := checkpoint.Open(filepath.Join(dir, "ck"), checkpoint.Options{Mode: checkpoint.ModeIncremental, Retain: 10, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(Config{Topic: "in", DataDir: filepath.Join(dir, "data"), AllowStateLoss: allowLoss,
		Job: map[string]string{"operator": "test/v1"}, Logger: log}, nil, nil, nil, ck)
	return &recoveryFixture{t: t, ckpt: ck, eng: eng, dir: dir}
}

// snapshotAt publishes a snapshot whose state says it was taken at offset.
func (f *recoveryFixture) snapshotAt(offset int64, job map[string]string) checkpoint.Meta {
	f.t.Helper()
	live := filepath.Join(f.dir, fmt.Sprintf("live-%d", offset))
	st, err := OpenStore(live, StoreOptions{Logger: zaptest.NewLogger(f.t)})
	if err != nil {
		f.t.Fatal(err)
	}
	ov := newOverlay(st)
	_ = ov.Set([]byte("marker"), []byte(fmt.Sprint(offset)))
	if err := ov.apply(offset); err != nil {
		f.t.Fatal(err)
	}
	staging := live + "-staging"
	if err := st.Checkpoint(staging); err != nil {
		f.t.Fatal(err)
	}
	_ = st.Close()
	if job == nil {
		job = map[string]string{"operator": "test/v1"}
	}
	m, _, err := f.ckpt.Publish(context.Background(), "in", 0, offset, staging, job)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

type recovered struct {
	from   int64
	marker string // "" for an empty store
	err    error
}

// recover runs the planner and the restore half of the executor against
// the fixture's checkpoint directory, with the broker's answers given.
func (f *recoveryFixture) recover(group, logStart int64, progress *ProgressInfo) recovered {
	f.t.Helper()
	in := RecoveryInput{Partition: 0, Group: group, Progress: progress, LogStart: logStart, LogEnd: 1 << 40, AllowStateLoss: f.eng.cfg.AllowStateLoss}
	metas, err := f.ckpt.List("in", 0)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, m := range metas {
		c := SnapshotCandidate{ID: m.ID, Offset: m.Offset, TopicID: m.TopicID, ClusterID: m.ClusterID}
		if err := f.eng.compatible(m.Job); err != nil {
			c.Incompatible = err.Error()
		}
		in.Snapshots = append(in.Snapshots, c)
	}
	dir := filepath.Join(f.dir, "data", "state", "in-0")
	pl, st, meta, err := f.eng.planAndRestore(context.Background(), in, dir)
	if err != nil {
		return recovered{err: err}
	}
	defer st.Close()
	v, ok, err := st.Get([]byte("marker"))
	if err != nil {
		f.t.Fatal(err)
	}
	if meta == nil && ok {
		f.t.Fatalf("no snapshot chosen but the store has a marker %q", v)
	}
	return recovered{from: pl.ReplayFrom, marker: string(v)}
}

// The crash table of docs/DESIGN.md, with real snapshots on disk: the
// restore verifies checksums and falls back to an older snapshot.
func TestRecoveryRestoresFromDisk(t *testing.T) {
	t.Run("mid-epoch before commit: C is the last commit, newest snapshot at C", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(50, nil)
		f.snapshotAt(100, nil)
		got := f.recover(100, 0, nil)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want restore of snapshot 100 and no replay", got)
		}
	})
	t.Run("after sink commit before snapshot: C ahead, gap replayed", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		got := f.recover(150, 0, nil)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want snapshot 100 then replay [100,150)", got)
		}
	})
	t.Run("mid-snapshot: torn newest snapshot skipped", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		torn := f.snapshotAt(150, nil)
		if err := os.Remove(filepath.Join(torn.Dir, "_snapshot.json")); err != nil {
			t.Fatal(err)
		}
		got := f.recover(150, 0, nil)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want fallback to snapshot 100", got)
		}
	})
	t.Run("mid-snapshot: corrupt file in newest snapshot skipped", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		bad := f.snapshotAt(150, nil)
		corruptOneFile(t, f.ckpt.Dir(), bad)
		got := f.recover(150, 0, nil)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want fallback to snapshot 100", got)
		}
	})
	t.Run("every snapshot corrupt, log intact: empty state, replay from 0", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		corruptOneFile(t, f.ckpt.Dir(), f.snapshotAt(100, nil))
		got := f.recover(150, 0, nil)
		if got.err != nil || got.from != 0 || got.marker != "" {
			t.Fatalf("got %+v, want empty state and replay from 0", got)
		}
	})
	t.Run("incompatible operator: clear error", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, map[string]string{"operator": "other/v9"})
		got := f.recover(100, 0, nil)
		if got.err == nil || !errors.Is(got.err, ErrIncompatibleState) || !strings.Contains(got.err.Error(), "operator") {
			t.Fatalf("got %+v, want an incompatibility error naming the setting", got)
		}
	})
	t.Run("earlier operator version its successor reads: restored", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.eng.newOp = func() Operator { return upgraderOp{reads: "test/v0"} }
		f.snapshotAt(100, map[string]string{"operator": "test/v0"})
		if got := f.recover(100, 0, nil); got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want the v0 snapshot restored", got)
		}
		f = newRecoveryFixture(t, false)
		f.eng.newOp = func() Operator { return upgraderOp{reads: "test/v0"} }
		f.snapshotAt(100, map[string]string{"operator": "test/v0", "dedup_window": "1h"})
		f.eng.cfg.Job["dedup_window"] = "2h"
		if got := f.recover(100, 0, nil); !errors.Is(got.err, ErrIncompatibleState) || !strings.Contains(got.err.Error(), "dedup_window") {
			t.Fatalf("got %+v, want the other settings still compared", got)
		}
		f = newRecoveryFixture(t, false)
		f.eng.newOp = func() Operator { return upgraderOp{reads: "test/v0"} }
		f.snapshotAt(100, map[string]string{"operator": "test/v2"})
		if got := f.recover(100, 0, nil); !errors.Is(got.err, ErrIncompatibleState) {
			t.Fatalf("got %+v, want a version it does not read refused", got)
		}
	})
	t.Run("group offsets missing, snapshot present, no progress record: refused", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		got := f.recover(-1, 0, nil)
		if !errors.Is(got.err, ErrOffsetsMissing) {
			t.Fatalf("got %+v, want ErrOffsetsMissing", got)
		}
	})
	t.Run("group offsets missing, progress record: snapshot and replay to it", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		got := f.recover(-1, 0, &ProgressInfo{Next: 180, Start: 0})
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want snapshot 100", got)
		}
	})
}

// PlanRecovery's decision table: every case without disk or broker.
func TestPlanRecovery(t *testing.T) {
	snap := func(id string, off int64) SnapshotCandidate {
		return SnapshotCandidate{ID: id, Offset: off, TopicID: "T1", ClusterID: "K1"}
	}
	base := func() RecoveryInput {
		return RecoveryInput{Partition: 3, Group: -1, LogStart: 0, LogEnd: 1000, TopicID: "T1", ClusterID: "K1"}
	}
	// clog is a base at off with segments given as (seq, first, last).
	clog := func(id string, off int64, segs ...[3]int64) SnapshotCandidate {
		s := snap(id, off)
		for _, g := range segs {
			s.Segments = append(s.Segments, SegmentCandidate{Seq: g[0], First: g[1], Last: g[2]})
		}
		return s
	}
	type want struct {
		err        error
		restore    RestoreKind
		snapshot   string
		from, to   int64
		start      int64
		cfrom      string
		warnSubstr string
		segs       int // change-log segments applied
	}
	cases := []struct {
		name string
		in   func() RecoveryInput
		want want
	}{
		{"new partition at the log start", func() RecoveryInput { in := base(); in.LogStart = 70; return in },
			want{restore: RestoreEmpty, from: 70, to: 70, start: 70, cfrom: "new"}},
		{"C from the group, newest snapshot at or below it", func() RecoveryInput {
			in := base()
			in.Group = 150
			in.Snapshots = []SnapshotCandidate{snap("a", 50), snap("c", 200), snap("b", 100)}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "b", from: 100, to: 150, start: -1, cfrom: "group", warnSubstr: "past the commit point"}},
		{"C from the group, no snapshot: replay from 0", func() RecoveryInput { in := base(); in.Group = 150; return in },
			want{restore: RestoreEmpty, from: 0, to: 150, start: -1, cfrom: "group"}},
		{"no snapshot, history start known from progress: replay from it", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 150, 40
			in.Progress = &ProgressInfo{Next: 150, Start: 40, TopicID: "T1"}
			return in
		}, want{restore: RestoreEmpty, from: 40, to: 150, start: 40, cfrom: "group"}},
		{"no snapshot, history start unknown, log truncated: state loss", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 150, 40
			return in
		}, want{err: ErrStateLoss}},
		{"no snapshot, log truncated, loss allowed: replay from the log start", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart, in.AllowStateLoss = 150, 40, true
			return in
		}, want{restore: RestoreEmpty, from: 40, to: 150, start: -1, cfrom: "group", warnSubstr: "STATE LOSS"}},
		{"snapshot older than the log start: state loss", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 300, 180
			in.Snapshots = []SnapshotCandidate{snap("a", 100)}
			return in
		}, want{err: ErrStateLoss}},
		{"C itself below the log start (DeleteRecords past the position): state loss", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 100, 180
			in.Snapshots = []SnapshotCandidate{snap("a", 100)}
			return in
		}, want{err: ErrStateLoss}},
		{"group offsets missing, progress record: C from it", func() RecoveryInput {
			in := base()
			in.Progress = &ProgressInfo{Next: 180, Start: 0, TopicID: "T1"}
			in.Snapshots = []SnapshotCandidate{snap("a", 100)}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "a", from: 100, to: 180, start: 0, cfrom: "progress", warnSubstr: "no committed offset"}},
		{"group offsets missing, no progress, snapshots: refused", func() RecoveryInput {
			in := base()
			in.Snapshots = []SnapshotCandidate{snap("a", 100)}
			return in
		}, want{err: ErrOffsetsMissing}},
		{"group offsets missing, only foreign snapshots: a new job", func() RecoveryInput {
			in := base()
			in.Snapshots = []SnapshotCandidate{{ID: "x", Offset: 100, TopicID: "T0", ClusterID: "K1"}}
			return in
		}, want{restore: RestoreEmpty, from: 0, to: 0, start: 0, cfrom: "new", warnSubstr: "skipped"}},
		{"foreign snapshot newer than an own one is skipped", func() RecoveryInput {
			in := base()
			in.Group = 150
			in.Snapshots = []SnapshotCandidate{snap("own", 90), {ID: "other-cluster", Offset: 140, TopicID: "T1", ClusterID: "K2"}}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "own", from: 90, to: 150, start: -1, cfrom: "group", warnSubstr: "other-cluster"}},
		{"legacy snapshot without ids is usable", func() RecoveryInput {
			in := base()
			in.Group = 150
			in.Snapshots = []SnapshotCandidate{{ID: "old", Offset: 120}}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "old", from: 120, to: 150, start: -1, cfrom: "group"}},
		{"progress record of another topic incarnation is ignored", func() RecoveryInput {
			in := base()
			in.Progress = &ProgressInfo{Next: 180, Start: 0, TopicID: "T0"}
			return in
		}, want{restore: RestoreEmpty, from: 0, to: 0, start: 0, cfrom: "new", warnSubstr: "re-created"}},
		{"group and progress disagree: the group wins", func() RecoveryInput {
			in := base()
			in.Group = 100
			in.Progress = &ProgressInfo{Next: 180, Start: 0, TopicID: "T1"}
			return in
		}, want{restore: RestoreEmpty, from: 0, to: 100, start: 0, cfrom: "group", warnSubstr: "differs"}},
		{"savepoint into a new group", func() RecoveryInput {
			in := base()
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500, TopicID: "T1", ClusterID: "K1"}
			in.Snapshots = []SnapshotCandidate{snap("a", 100)}
			return in
		}, want{restore: RestoreSavepoint, from: 500, to: 500, start: -1, cfrom: "savepoint"}},
		{"savepoint, group behind it: resume at the savepoint", func() RecoveryInput {
			in := base()
			in.Group = 300
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500}
			return in
		}, want{restore: RestoreSavepoint, from: 500, to: 500, start: -1, cfrom: "savepoint", warnSubstr: "behind savepoint"}},
		{"savepoint, group exactly at it (restart before the first commit past it)", func() RecoveryInput {
			in := base()
			in.Group = 500
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500}
			in.Snapshots = []SnapshotCandidate{snap("a", 500)}
			return in
		}, want{restore: RestoreSavepoint, from: 500, to: 500, start: -1, cfrom: "savepoint"}},
		{"savepoint, group past it: ignored, snapshot recovery", func() RecoveryInput {
			in := base()
			in.Group = 700
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500}
			in.Snapshots = []SnapshotCandidate{snap("a", 600)}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "a", from: 600, to: 700, start: -1, cfrom: "group", warnSubstr: "past savepoint"}},
		{"savepoint, progress past it while group offsets expired: ignored", func() RecoveryInput {
			in := base()
			in.Progress = &ProgressInfo{Next: 700, Start: 0, TopicID: "T1"}
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500}
			in.Snapshots = []SnapshotCandidate{snap("a", 600)}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "a", from: 600, to: 700, start: 0, cfrom: "progress", warnSubstr: "past savepoint"}},
		{"savepoint of another cluster: refused", func() RecoveryInput {
			in := base()
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500, TopicID: "T1", ClusterID: "K9"}
			return in
		}, want{err: ErrForeignSource}},
		{"savepoint older than the log start: state loss", func() RecoveryInput {
			in := base()
			in.LogStart = 600
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500}
			return in
		}, want{err: ErrStateLoss}},
		{"incompatible savepoint", func() RecoveryInput {
			in := base()
			in.Savepoint = &SavepointCandidate{Name: "sp", Offset: 500, Incompatible: "taken with dedup_window=1h"}
			return in
		}, want{err: ErrIncompatibleState}},
		{"C past the end of the log", func() RecoveryInput { in := base(); in.Group = 5000; return in },
			want{err: ErrBeyondEnd}},
		{"changelog: base and its segments, then replay from the last one to C", func() RecoveryInput {
			in := base()
			in.Group = 170
			in.Snapshots = []SnapshotCandidate{clog("b", 100, [3]int64{1, 100, 120}, [3]int64{2, 120, 140}, [3]int64{3, 140, 160})}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "b", from: 160, to: 170, start: -1, cfrom: "group", segs: 3}},
		{"changelog: the log starts after the base but the segments reach past it: no state loss", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 170, 150
			in.Snapshots = []SnapshotCandidate{clog("b", 100, [3]int64{1, 100, 120}, [3]int64{2, 120, 160})}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "b", from: 160, to: 170, start: -1, cfrom: "group", segs: 2}},
		{"changelog: a missing segment stops the chain, the replay covers the rest", func() RecoveryInput {
			in := base()
			in.Group = 170
			in.Snapshots = []SnapshotCandidate{clog("b", 100, [3]int64{1, 100, 120}, [3]int64{3, 140, 160})}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "b", from: 120, to: 170, start: -1, cfrom: "group", warnSubstr: "missing or unusable", segs: 1}},
		{"changelog: a missing segment the log no longer covers: state loss", func() RecoveryInput {
			in := base()
			in.Group, in.LogStart = 170, 130
			in.Snapshots = []SnapshotCandidate{clog("b", 100, [3]int64{1, 100, 120}, [3]int64{3, 140, 160})}
			return in
		}, want{err: ErrStateLoss}},
		{"changelog: a segment past C (offsets reset) is not applied", func() RecoveryInput {
			in := base()
			in.Group = 130
			in.Snapshots = []SnapshotCandidate{clog("b", 100, [3]int64{1, 100, 120}, [3]int64{2, 120, 140})}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "b", from: 120, to: 130, start: -1, cfrom: "group", warnSubstr: "past the commit point", segs: 1}},
		{"changelog: an older base whose change log reaches further wins over a newer base", func() RecoveryInput {
			in := base()
			in.Group = 200
			in.Snapshots = []SnapshotCandidate{clog("new", 150), clog("old", 100, [3]int64{1, 100, 180})}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "old", from: 180, to: 200, start: -1, cfrom: "group", segs: 1}},
		{"changelog: equal reach, the newer base wins (fewer segments)", func() RecoveryInput {
			in := base()
			in.Group = 200
			in.Snapshots = []SnapshotCandidate{clog("old", 100, [3]int64{1, 100, 150}), clog("new", 150)}
			return in
		}, want{restore: RestoreSnapshot, snapshot: "new", from: 150, to: 200, start: -1, cfrom: "group"}},
		{"incompatible newest eligible snapshot", func() RecoveryInput {
			in := base()
			in.Group = 150
			in.Snapshots = []SnapshotCandidate{{ID: "a", Offset: 100, Incompatible: "taken with operator=x"}}
			return in
		}, want{err: ErrIncompatibleState}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := PlanRecovery(tc.in())
			if tc.want.err != nil {
				if !errors.Is(err, tc.want.err) {
					t.Fatalf("err = %v, want %v (plan %+v)", err, tc.want.err, pl)
				}
				if !strings.Contains(err.Error(), "partition 3") {
					t.Errorf("error does not name the partition: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got := want{restore: pl.Restore, snapshot: pl.Snapshot.ID, from: pl.ReplayFrom, to: pl.Resume, start: pl.Start, cfrom: pl.CFrom, warnSubstr: tc.want.warnSubstr, segs: len(pl.Segments)}
			if got != tc.want {
				t.Fatalf("plan = %+v\n got %+v\nwant %+v", pl, got, tc.want)
			}
			if w := tc.want.warnSubstr; w != "" && !strings.Contains(strings.Join(pl.Warnings, "\n"), w) {
				t.Errorf("warnings %q lack %q", pl.Warnings, w)
			}
		})
	}
}

func corruptOneFile(t *testing.T, ckDir string, m checkpoint.Meta) {
	t.Helper()
	for _, fi := range m.Files {
		if fi.Size == 0 {
			continue
		}
		path := filepath.Join(m.Dir, fi.Name)
		if fi.Pool != "" {
			path = filepath.Join(ckDir, fi.Pool)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no file to corrupt")
}

// upgraderOp reads the state of operator version reads.
type upgraderOp struct{ reads string }

func (upgraderOp) Name() string                          { return "test/v1" }
func (upgraderOp) Process(*Record, State, Emitter) error { return nil }
func (u upgraderOp) ReadsState(name string) bool         { return name == u.reads }
