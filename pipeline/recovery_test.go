package pipeline

import (
	"context"
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
	st, err := OpenStore(live, zaptest.NewLogger(f.t), nil)
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

func (f *recoveryFixture) recover(c, logStart int64, fresh bool) recovered {
	f.t.Helper()
	dir := filepath.Join(f.dir, "data", "state", "in-0")
	st, from, _, meta, err := f.eng.restoreState(context.Background(), 0, c, logStart, fresh, dir)
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
	return recovered{from: from, marker: string(v)}
}

// Every row of DESIGN.md's crash table, as the recovery decision sees it:
// the sink's committed offset C and what the checkpoint directory holds.
func TestRecoveryDecisionTable(t *testing.T) {
	t.Run("mid-epoch before commit: C is the last commit, newest snapshot at C", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(50, nil)
		f.snapshotAt(100, nil)
		got := f.recover(100, 0, false)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want restore of snapshot 100 and no replay", got)
		}
	})
	t.Run("after sink commit before snapshot: C ahead, gap replayed", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		got := f.recover(150, 0, false)
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
		got := f.recover(150, 0, false)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want fallback to snapshot 100", got)
		}
	})
	t.Run("mid-snapshot: corrupt file in newest snapshot skipped", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		bad := f.snapshotAt(150, nil)
		corruptOneFile(t, f.ckpt.Dir(), bad)
		got := f.recover(150, 0, false)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want fallback to snapshot 100", got)
		}
	})
	t.Run("snapshot dir lost: replay from the partition start", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		got := f.recover(150, 0, false)
		if got.err != nil || got.from != 0 || got.marker != "" {
			t.Fatalf("got %+v, want empty state and replay [0,150)", got)
		}
	})
	t.Run("snapshot dir lost and log truncated: clear error", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		got := f.recover(150, 40, false)
		if got.err == nil || !strings.Contains(got.err.Error(), "--allow-state-loss") {
			t.Fatalf("got %+v, want an error that names --allow-state-loss", got)
		}
	})
	t.Run("snapshot dir lost and log truncated, state loss allowed", func(t *testing.T) {
		f := newRecoveryFixture(t, true)
		got := f.recover(150, 40, false)
		if got.err != nil || got.from != 40 {
			t.Fatalf("got %+v, want replay from the log start 40", got)
		}
	})
	t.Run("offsets reset below a snapshot: that snapshot skipped, older one used", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		f.snapshotAt(200, nil)
		got := f.recover(150, 0, false)
		if got.err != nil || got.from != 100 || got.marker != "100" {
			t.Fatalf("got %+v, want snapshot 100 (200 > C)", got)
		}
	})
	t.Run("offsets reset below every snapshot, log truncated: clear error", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(200, nil)
		got := f.recover(150, 120, false)
		if got.err == nil {
			t.Fatalf("got %+v, want an error", got)
		}
	})
	t.Run("snapshot older than retention: gap is an error", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, nil)
		got := f.recover(300, 180, false)
		if got.err == nil || !strings.Contains(got.err.Error(), "retention") {
			t.Fatalf("got %+v, want a retention error", got)
		}
	})
	t.Run("new group: empty state at the log start, no replay", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		got := f.recover(70, 70, true)
		if got.err != nil || got.from != 70 {
			t.Fatalf("got %+v, want start at 70", got)
		}
	})
	t.Run("incompatible operator: clear error", func(t *testing.T) {
		f := newRecoveryFixture(t, false)
		f.snapshotAt(100, map[string]string{"operator": "other/v9"})
		got := f.recover(100, 0, false)
		if got.err == nil || !strings.Contains(got.err.Error(), "not compatible") {
			t.Fatalf("got %+v, want an incompatibility error", got)
		}
	})
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
