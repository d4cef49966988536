package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var tp0 = TopicPartition{Topic: "transactions", Partition: 0}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"full": ModeFull, " Incremental ": ModeIncremental, "": ModeIncremental} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("diff"); err == nil {
		t.Error("ParseMode(diff) should fail")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, mode := range []Mode{ModeFull, ModeIncremental} {
		t.Run(string(mode), func(t *testing.T) {
			tmp := t.TempDir()
			db := openDB(t, filepath.Join(tmp, "live"))
			defer db.Close()
			s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Mode: mode})

			put(t, db, 0, 500, "a", 100)
			putNoFlush(t, db, 500, 600, "a", 100) // only in the WAL
			m1, st1 := publish(t, s, tp0, 600, stage(t, db, tmp))
			if m1.Mode != mode || m1.Offset != 600 || m1.Format != FormatVersion || m1.Job["operator"] != "test/v1" {
				t.Fatalf("meta: %+v", m1)
			}
			if st1.Files != len(m1.Files) || st1.TotalBytes != m1.Bytes() || st1.FilesCopied != st1.Files {
				t.Fatalf("first publish stats %+v, meta %d files %d bytes", st1, len(m1.Files), m1.Bytes())
			}
			for _, f := range m1.Files {
				if (f.Pool != "") != (mode == ModeIncremental && isImmutable(f.Name)) {
					t.Fatalf("file %+v in %s mode", f, mode)
				}
			}
			put(t, db, 600, 700, "b", 100)
			m2, _ := publish(t, s, tp0, 700, stage(t, db, tmp))

			ms, err := s.List(tp0.Topic, tp0.Partition)
			if err != nil || len(ms) != 2 || ms[0].ID != m2.ID || ms[1].ID != m1.ID {
				t.Fatalf("List = %v, %v", ms, err)
			}
			if tps, err := s.Partitions(); err != nil || len(tps) != 1 || tps[0] != tp0 {
				t.Fatalf("Partitions = %v, %v", tps, err)
			}
			for _, m := range ms {
				if err := s.Verify(context.Background(), m); err != nil {
					t.Fatalf("Verify %s: %v", m.ID, err)
				}
			}

			// Restore into a missing dir.
			dst := filepath.Join(tmp, "restored", "a")
			got, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, dst)
			if err != nil || got.ID != m2.ID {
				t.Fatalf("Restore = %s, %v; want %s", got.ID, err, m2.ID)
			}
			checkDB(t, dst, 700, expect{0, 600, "a", 100}, expect{600, 700, "b", 100})

			// Restore the older one into an existing empty dir.
			dst2 := filepath.Join(tmp, "restored", "b")
			if err := os.Mkdir(dst2, 0o755); err != nil {
				t.Fatal(err)
			}
			got, err = s.Restore(context.Background(), tp0.Topic, tp0.Partition, 650, dst2)
			if err != nil || got.ID != m1.ID {
				t.Fatalf("Restore(650) = %s, %v; want %s", got.ID, err, m1.ID)
			}
			checkDB(t, dst2, 600, expect{0, 600, "a", 100})

			// A non-empty destination is refused.
			if _, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
				t.Fatalf("Restore into non-empty dir: %v", err)
			}
			// No leftover temporary restore dirs.
			ents, _ := os.ReadDir(filepath.Join(tmp, "restored"))
			if len(ents) != 2 {
				t.Fatalf("restored/ has %d entries", len(ents))
			}
		})
	}
}

func TestTornSnapshotSkipped(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	log, logs := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Logger: log, Retain: 10})

	put(t, db, 0, 100, "a", 50)
	m1, _ := publish(t, s, tp0, 100, stage(t, db, tmp))
	put(t, db, 100, 200, "a", 50)
	m2, _ := publish(t, s, tp0, 200, stage(t, db, tmp))
	put(t, db, 200, 300, "a", 50)
	m3, _ := publish(t, s, tp0, 300, stage(t, db, tmp))

	// m3: crash before the metadata was written (simulated: removed).
	if err := os.Remove(filepath.Join(m3.Dir, metaFile)); err != nil {
		t.Fatal(err)
	}
	// m2: metadata torn mid-write (truncated JSON).
	b, _ := os.ReadFile(filepath.Join(m2.Dir, metaFile))
	if err := os.WriteFile(filepath.Join(m2.Dir, metaFile), b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}

	ms, err := s.List(tp0.Topic, tp0.Partition)
	if err != nil || len(ms) != 1 || ms[0].ID != m1.ID {
		t.Fatalf("List = %v, %v; want only %s", ms, err, m1.ID)
	}
	dst := filepath.Join(tmp, "restored")
	got, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, dst)
	if err != nil || got.ID != m1.ID {
		t.Fatalf("Restore = %s, %v; want %s", got.ID, err, m1.ID)
	}
	checkDB(t, dst, 100, expect{0, 100, "a", 50})
	w := strings.Join(warnings(logs), "\n")
	for _, id := range []string{m2.ID, m3.ID} {
		if !strings.Contains(w, "torn snapshot") || !strings.Contains(w, id) {
			t.Fatalf("no torn-snapshot warning for %s in:\n%s", id, w)
		}
	}
}

func TestCorruptFileSkipped(t *testing.T) {
	for _, mode := range []Mode{ModeFull, ModeIncremental} {
		t.Run(string(mode), func(t *testing.T) {
			tmp := t.TempDir()
			db := openDB(t, filepath.Join(tmp, "live"))
			defer db.Close()
			log, logs := observed()
			s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Mode: mode, Logger: log})

			put(t, db, 0, 300, "a", 100)
			m1, _ := publish(t, s, tp0, 300, stage(t, db, tmp))
			put(t, db, 300, 600, "b", 100)
			m2, _ := publish(t, s, tp0, 600, stage(t, db, tmp))

			bad := fileOnlyIn(t, m2, m1)
			badPath := s.filePath(m2, bad)
			flipByte(t, badPath, bad.Size/2)

			err := s.Verify(context.Background(), m2)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad.Name) {
				t.Fatalf("Verify corrupt snapshot: %v", err)
			}
			if err := s.Verify(context.Background(), m1); err != nil {
				t.Fatalf("Verify intact snapshot: %v", err)
			}

			dst := filepath.Join(tmp, "restored")
			got, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, dst)
			if err != nil || got.ID != m1.ID {
				t.Fatalf("Restore = %s, %v; want fallback to %s", got.ID, err, m1.ID)
			}
			checkDB(t, dst, 300, expect{0, 300, "a", 100})
			w := strings.Join(warnings(logs), "\n")
			if !strings.Contains(w, "skipping unusable snapshot") || !strings.Contains(w, m2.ID) || !strings.Contains(w, bad.Name) {
				t.Fatalf("warning should name snapshot %s and file %s:\n%s", m2.ID, bad.Name, w)
			}

			if mode == ModeIncremental {
				// The corrupt pool file was quarantined: the next publish
				// copies the SST again and the new snapshot is intact.
				if _, err := os.Stat(badPath); !os.IsNotExist(err) {
					t.Fatalf("corrupt pool file still in the pool: %v", err)
				}
				m3, st3 := publish(t, s, tp0, 601, stage(t, db, tmp))
				if st3.FilesCopied == 0 {
					t.Fatal("publish after quarantine copied nothing")
				}
				if err := s.Verify(context.Background(), m3); err != nil {
					t.Fatalf("Verify after re-publish: %v", err)
				}
			}
		})
	}
}

func TestMissingPoolFile(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	log, logs := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Logger: log})

	put(t, db, 0, 200, "a", 100)
	m1, _ := publish(t, s, tp0, 200, stage(t, db, tmp))
	put(t, db, 200, 400, "b", 100)
	m2, _ := publish(t, s, tp0, 400, stage(t, db, tmp))

	only2 := fileOnlyIn(t, m2, m1)
	if only2.Pool == "" {
		t.Fatal("expected a pool file")
	}
	if err := os.Remove(s.filePath(m2, only2)); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(tmp, "r1")
	got, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, dst)
	if err != nil || got.ID != m1.ID {
		t.Fatalf("Restore = %s, %v; want %s", got.ID, err, m1.ID)
	}
	checkDB(t, dst, 200, expect{0, 200, "a", 100})
	if w := strings.Join(warnings(logs), "\n"); !strings.Contains(w, m2.ID) || !strings.Contains(w, only2.Name) {
		t.Fatalf("warning should name %s and %s:\n%s", m2.ID, only2.Name, w)
	}
	err = s.Verify(context.Background(), m2)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), only2.Name) {
		t.Fatalf("Verify: %v", err)
	}

	// A file shared by both snapshots missing: nothing usable.
	var shared FileInfo
	for _, f := range m1.Files {
		if f.Pool != "" {
			shared = f
		}
	}
	if err := os.Remove(s.filePath(m1, shared)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Restore(context.Background(), tp0.Topic, tp0.Partition, 1000, filepath.Join(tmp, "r2"))
	if !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Restore with every snapshot broken: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "r2")); !os.IsNotExist(err) {
		t.Fatalf("failed restore left its destination behind: %v", err)
	}
	// The next publish repairs the pool.
	m3, _ := publish(t, s, tp0, 400, stage(t, db, tmp))
	if err := s.Verify(context.Background(), m3); err != nil {
		t.Fatal(err)
	}
}

func TestMaxOffset(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	log, logs := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Logger: log})
	var ids []string
	for i, off := range []int64{10, 20, 30} {
		put(t, db, i*10, i*10+10, "a", 20)
		m, _ := publish(t, s, tp0, off, stage(t, db, tmp))
		ids = append(ids, m.ID)
	}
	for i, c := range []struct {
		max  int64
		want string
	}{{30, ids[2]}, {1 << 40, ids[2]}, {29, ids[1]}, {20, ids[1]}, {19, ids[0]}, {10, ids[0]}} {
		dst := filepath.Join(tmp, "r", string(rune('a'+i)))
		got, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, c.max, dst)
		if err != nil || got.ID != c.want {
			t.Fatalf("Restore(max %d) = %s, %v; want %s", c.max, got.ID, err, c.want)
		}
	}
	checkDB(t, filepath.Join(tmp, "r", "f"), 10, expect{0, 10, "a", 20})
	_, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, 9, filepath.Join(tmp, "none"))
	if !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Restore(max 9): %v", err)
	}
	if _, err := s.Restore(context.Background(), "other", 3, 100, filepath.Join(tmp, "none")); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("Restore of unknown partition: %v", err)
	}
	if w := strings.Join(warnings(logs), "\n"); !strings.Contains(w, "ahead of the committed offset") {
		t.Fatalf("no warning for snapshots above max offset:\n%s", w)
	}
}

func TestRetention(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 2, Grace: -1})
	var all []Meta
	for i := 0; i < 5; i++ {
		put(t, db, i*100, i*100+100, "a", 50)
		m, _ := publish(t, s, tp0, int64(i*100+100), stage(t, db, tmp))
		all = append(all, m)
	}
	ms, _ := s.List(tp0.Topic, tp0.Partition)
	if len(ms) != 2 || ms[0].ID != all[4].ID || ms[1].ID != all[3].ID {
		t.Fatalf("after 5 publishes with Retain 2: %v", ids(ms))
	}
	ents, _ := os.ReadDir(s.partDir(tp0))
	if len(ents) != 2 {
		t.Fatalf("partition dir has %d entries, want 2", len(ents))
	}
	// The pool holds exactly the files the retained snapshots reference.
	refs := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			if f.Pool != "" {
				refs[filepath.Base(f.Pool)] = true
			}
		}
	}
	pool := poolFiles(t, s, tp0)
	if len(pool) != len(refs) {
		t.Fatalf("pool has %d files, retained snapshots reference %d", len(pool), len(refs))
	}
	for _, p := range pool {
		if !refs[p] {
			t.Fatalf("unreferenced pool file %s survived", p)
		}
	}

	// A publish at a lower offset (offsets reset by an operator) is kept
	// even though it sorts below the retained ones.
	m, _ := publish(t, s, tp0, 50, stage(t, db, tmp))
	ms, _ = s.List(tp0.Topic, tp0.Partition)
	if len(ms) != 2 || ms[1].ID != m.ID || ms[0].ID != all[4].ID {
		t.Fatalf("after low-offset publish: %v", ids(ms))
	}

	// Retain < 0 keeps everything.
	s2 := newStore(t, filepath.Join(tmp, "ckpt2"), Options{Retain: -1})
	for i := 0; i < 4; i++ {
		publish(t, s2, tp0, int64(i), stage(t, db, tmp))
	}
	if ms, _ := s2.List(tp0.Topic, tp0.Partition); len(ms) != 4 {
		t.Fatalf("Retain -1 kept %d", len(ms))
	}
}

func ids(ms []Meta) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestIncrementalCopiesOnlyNewFiles(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	inc := newStore(t, filepath.Join(tmp, "inc"), Options{Mode: ModeIncremental})
	full := newStore(t, filepath.Join(tmp, "full"), Options{Mode: ModeFull})

	// ~4 MB in 10 SSTs. (Small batches keep pebble's WAL small: WAL files
	// are mutable, copied whole every time, recycled tail included.)
	for i := 0; i < 10; i++ {
		put(t, db, i*400, i*400+400, "a", 1000)
	}
	src := stage(t, db, tmp)
	_, i1 := publish(t, inc, tp0, 4000, src)
	_, f1 := publish(t, full, tp0, 4000, src)
	if i1.BytesWritten < i1.TotalBytes || f1.BytesWritten < f1.TotalBytes || i1.FilesCopied != i1.Files {
		t.Fatalf("first snapshot must copy everything: inc %+v full %+v", i1, f1)
	}

	put(t, db, 4000, 4010, "b", 1000) // a small change: one new small SST
	src = stage(t, db, tmp)
	m2, i2 := publish(t, inc, tp0, 4010, src)
	_, f2 := publish(t, full, tp0, 4010, src)
	t.Logf("second snapshot: incremental %+v; full %+v", i2, f2)
	if f2.BytesWritten < f2.TotalBytes || f2.FilesCopied != f2.Files {
		t.Fatalf("full mode must copy every file: %+v", f2)
	}
	if i2.TotalBytes != f2.TotalBytes || i2.Files != f2.Files {
		t.Fatalf("both modes must describe the same store: %+v vs %+v", i2, f2)
	}
	// What went to the pool: exactly the one new SST.
	var mutableBytes, sstBytes int64
	mutableFiles := 0
	for _, f := range m2.Files {
		if f.Pool == "" {
			mutableBytes += f.Size
			mutableFiles++
		} else {
			sstBytes += f.Size
		}
	}
	metaInfo, err := os.Stat(filepath.Join(m2.Dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	poolWritten := i2.BytesWritten - mutableBytes - metaInfo.Size()
	if i2.FilesCopied != mutableFiles+1 {
		t.Fatalf("incremental copied %d files, want the %d mutable files + 1 new SST", i2.FilesCopied, mutableFiles)
	}
	if poolWritten <= 0 || poolWritten*100 > sstBytes {
		t.Fatalf("incremental wrote %d SST bytes of %d: want only the new small SST", poolWritten, sstBytes)
	}
	if i2.BytesWritten*4 > f2.BytesWritten {
		t.Fatalf("incremental wrote %d bytes, full %d", i2.BytesWritten, f2.BytesWritten)
	}
	if i2.BytesHashed != 0 {
		t.Fatalf("unchanged SSTs were re-hashed (%d bytes): checksum cache miss", i2.BytesHashed)
	}

	// After a restart (empty cache) unchanged SSTs are hashed, not copied.
	inc2 := newStore(t, filepath.Join(tmp, "inc"), Options{Mode: ModeIncremental})
	put(t, db, 4010, 4020, "c", 1000)
	_, i3 := publish(t, inc2, tp0, 4020, stage(t, db, tmp))
	if i3.BytesHashed < sstBytes || i3.BytesWritten*4 > f2.BytesWritten {
		t.Fatalf("publish after restart: %+v", i3)
	}
	dst := filepath.Join(tmp, "restored")
	if _, err := inc2.Restore(context.Background(), tp0.Topic, tp0.Partition, 1<<40, dst); err != nil {
		t.Fatal(err)
	}
	checkDB(t, dst, 4020, expect{0, 4000, "a", 1000}, expect{4000, 4010, "b", 1000}, expect{4010, 4020, "c", 1000})

	// A store opened on the restored files and checkpointed again: the
	// restore seeded the cache, so nothing is hashed and only new data is
	// copied.
	db2 := openDB(t, dst)
	defer db2.Close()
	put(t, db2, 5000, 5001, "d", 1000)
	_, i4 := publish(t, inc2, tp0, 5001, stage(t, db2, tmp))
	if i4.BytesHashed != 0 || i4.BytesWritten*4 > f2.BytesWritten {
		t.Fatalf("publish after restore: %+v", i4)
	}
}

// Pebble file numbers are unique only within one lineage: two stores with
// different contents produce SSTs with the same names. The pool must keep
// them apart.
func TestPoolIdentityIncludesContent(t *testing.T) {
	tmp := t.TempDir()
	a := openDB(t, filepath.Join(tmp, "a"))
	defer a.Close()
	b := openDB(t, filepath.Join(tmp, "b"))
	defer b.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{})

	put(t, a, 0, 100, "a", 64)
	put(t, b, 0, 100, "b", 64) // same file numbers and sizes, other content
	ma, _ := publish(t, s, tp0, 100, stage(t, a, tmp))
	mb, st := publish(t, s, tp0, 200, stage(t, b, tmp))

	sameName := false
	for _, fa := range ma.Files {
		for _, fb := range mb.Files {
			if fa.Pool != "" && fa.Name == fb.Name {
				sameName = true
				if fa.Pool == fb.Pool {
					t.Fatalf("different SSTs named %s share pool file %s", fa.Name, fa.Pool)
				}
			}
		}
	}
	if !sameName {
		t.Fatal("test setup: expected SSTs with equal names in both stores")
	}
	if st.BytesHashed == 0 {
		t.Fatal("same-named SST of the same size should have been hashed before reuse")
	}
	for _, c := range []struct {
		max int64
		gen string
	}{{100, "a"}, {200, "b"}} {
		dst := filepath.Join(tmp, "r-"+c.gen)
		if _, err := s.Restore(context.Background(), tp0.Topic, tp0.Partition, c.max, dst); err != nil {
			t.Fatal(err)
		}
		checkDB(t, dst, -1, expect{0, 100, c.gen, 64})
	}
}

func TestGC(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	log, _ := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 2, Logger: log})
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		put(t, db, i*100, i*100+100, "a", 50)
		publish(t, s, tp0, int64(i*100+100), stage(t, db, tmp))
	}
	pdir, pool := s.partDir(tp0), s.poolDir(tp0)

	// Simulated crash mid-publish: a temp snapshot dir and a pool file that
	// no metadata references yet.
	crashTmp := filepath.Join(pdir, tmpPrefix+newSnapshotID(400, time.Now()))
	if err := os.Mkdir(crashTmp, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(crashTmp, "MANIFEST-000001"), []byte("partial"), 0o644)
	orphan := filepath.Join(pool, poolName("000999.sst", 0xdeadbeef, 7))
	os.WriteFile(orphan, []byte("orphan!"), 0o644)
	poolTmp := filepath.Join(pool, tmpPrefix+"000998.sst-abc")
	os.WriteFile(poolTmp, []byte("half"), 0o644)
	// Simulated crash mid-GC/retention: a snapshot renamed away and half
	// deleted.
	ms, _ := s.List(tp0.Topic, tp0.Partition)
	del := filepath.Join(pdir, delPrefix+ms[1].ID+"-x")
	if err := os.Mkdir(del, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(del, metaFile), []byte(`{"format":1}`), 0o644)
	// Torn snapshot dir (no metadata).
	torn := filepath.Join(pdir, newSnapshotID(350, time.Now()))
	os.Mkdir(torn, 0o755)
	// Leftover temporary savepoint.
	os.MkdirAll(filepath.Join(s.dir, savepointsDir, tmpPrefix+"sp-1"), 0o755)

	if ms2, _ := s.List(tp0.Topic, tp0.Partition); len(ms2) != 2 {
		t.Fatalf("List sees garbage: %v", ids(ms2))
	}

	// Everything recent: only the .tmp-del- dir (any age) goes.
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Kind != GCTemp || !strings.Contains(rep.Removed[0].Path, delPrefix) {
		t.Fatalf("GC with recent garbage removed %+v", rep.Removed)
	}
	for _, p := range []string{crashTmp, orphan, poolTmp, torn} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("recent %s removed: %v", p, err)
		}
	}
	if rep.SkippedRecent < 5 {
		t.Fatalf("SkippedRecent = %d", rep.SkippedRecent)
	}

	// Make everything old, referenced pool files included.
	filepath.WalkDir(s.dir, func(p string, _ os.DirEntry, _ error) error {
		backdate(t, p, time.Hour)
		return nil
	})
	before := poolFiles(t, s, tp0)

	dry, err := s.GC(ctx, true)
	if err != nil || !dry.DryRun {
		t.Fatal(err)
	}
	if got := poolFiles(t, s, tp0); len(got) != len(before) {
		t.Fatal("dry run removed pool files")
	}
	if _, err := os.Stat(crashTmp); err != nil {
		t.Fatal("dry run removed a temp dir")
	}

	rep, err = s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != len(dry.Removed) || rep.BytesFreed != dry.BytesFreed {
		t.Fatalf("dry run reported %+v, real run %+v", dry.Removed, rep.Removed)
	}
	kinds := map[string]int{}
	for _, it := range rep.Removed {
		kinds[it.Kind]++
	}
	if kinds[GCPool] != 1 || kinds[GCTorn] != 1 || kinds[GCTemp] != 3 || kinds[GCSnapshot] != 0 {
		t.Fatalf("removed %+v", rep.Removed)
	}
	for _, p := range []string{crashTmp, orphan, poolTmp, torn, filepath.Join(s.dir, savepointsDir, tmpPrefix+"sp-1")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived GC: %v", p, err)
		}
	}
	// Never a referenced one: every retained snapshot still verifies.
	ms, _ = s.List(tp0.Topic, tp0.Partition)
	if len(ms) != 2 {
		t.Fatalf("GC changed the snapshots: %v", ids(ms))
	}
	for _, m := range ms {
		if err := s.Verify(ctx, m); err != nil {
			t.Fatalf("after GC: %v", err)
		}
	}
	if rep.PoolReferenced != len(before)-1 {
		t.Fatalf("PoolReferenced = %d, pool had %d files incl. 1 orphan", rep.PoolReferenced, len(before))
	}

	// An offline GC with its own retention removes old snapshots first and
	// then the pool files only they referenced.
	off, err := Open(s.dir, Options{MustExist: true, Retain: 1, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	rep, err = off.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ = s.List(tp0.Topic, tp0.Partition)
	if len(ms) != 1 {
		t.Fatalf("after retention 1: %v", ids(ms))
	}
	if err := s.Verify(ctx, ms[0]); err != nil {
		t.Fatal(err)
	}
	if n := len(poolFiles(t, s, tp0)); n != rep.PoolReferenced {
		t.Fatalf("pool has %d files, %d referenced", n, rep.PoolReferenced)
	}
	dst := filepath.Join(tmp, "restored")
	if _, err := s.Restore(ctx, tp0.Topic, tp0.Partition, 1<<40, dst); err != nil {
		t.Fatal(err)
	}
	checkDB(t, dst, 300, expect{0, 300, "a", 50})
}

// A publish crashing after its pool files were renamed into place but
// before the metadata: GC keeps the files while they are recent, the retried
// publish reuses them, and the crashed publish's temp dir goes once old.
func TestCrashMidPublish(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	dir := filepath.Join(tmp, "ckpt")
	s := newStore(t, dir, Options{})
	put(t, db, 0, 100, "a", 50)
	publish(t, s, tp0, 100, stage(t, db, tmp))
	put(t, db, 100, 200, "b", 50)
	src := stage(t, db, tmp)
	m2, _ := publish(t, s, tp0, 200, src)
	// Undo the metadata and rename of m2 as if the process died just
	// before writing it: pool files present, snapshot dir a .tmp-.
	if err := os.Remove(filepath.Join(m2.Dir, metaFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m2.Dir, filepath.Join(s.partDir(tp0), tmpPrefix+m2.ID)); err != nil {
		t.Fatal(err)
	}
	// Restart: another Store; GC with the default grace keeps the files.
	s2 := newStore(t, dir, Options{})
	if _, err := s2.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	ms, _ := s2.List(tp0.Topic, tp0.Partition)
	if len(ms) != 1 {
		t.Fatalf("List after crash: %v", ids(ms))
	}
	mutable := 0
	for _, f := range m2.Files {
		if f.Pool == "" {
			mutable++
			continue
		}
		if _, err := os.Stat(s2.filePath(m2, f)); err != nil {
			t.Fatalf("recent in-flight pool file removed: %v", err)
		}
	}
	// The publish is retried: the pool files are reused (hashed, not
	// copied) and the snapshot is complete.
	_, st := publish(t, s2, tp0, 200, src)
	if st.FilesCopied != mutable || st.BytesHashed == 0 {
		t.Fatalf("retry after crash: %+v, want only the %d mutable files copied", st, mutable)
	}
	dst := filepath.Join(tmp, "r")
	if _, err := s2.Restore(context.Background(), tp0.Topic, tp0.Partition, 200, dst); err != nil {
		t.Fatal(err)
	}
	checkDB(t, dst, 200, expect{0, 100, "a", 50}, expect{100, 200, "b", 50})

	crashed := filepath.Join(s.partDir(tp0), tmpPrefix+m2.ID)
	backdate(t, crashed, time.Hour)
	rep, err := s2.GC(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) || len(rep.Removed) != 1 {
		t.Fatalf("crashed publish's temp dir: %v, GC removed %+v", err, rep.Removed)
	}
}

func TestSavepoint(t *testing.T) {
	tmp := t.TempDir()
	ctx := context.Background()
	db0 := openDB(t, filepath.Join(tmp, "live0"))
	defer db0.Close()
	db1 := openDB(t, filepath.Join(tmp, "live1"))
	defer db1.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 1, Grace: -1})
	tp1 := TopicPartition{Topic: tp0.Topic, Partition: 1}

	put(t, db0, 0, 100, "p0", 80)
	put(t, db1, 0, 50, "p1", 80)
	src0, src1 := stage(t, db0, tmp), stage(t, db1, tmp)
	publish(t, s, tp0, 100, src0)
	job := map[string]string{"operator": "txagg/1", "dedup_window": "24h"}
	sp, err := s.Savepoint(ctx, "before-upgrade", []SavepointPart{
		{Topic: tp1.Topic, Partition: 1, Offset: 50, SrcDir: src1},
		{Topic: tp0.Topic, Partition: 0, Offset: 100, SrcDir: src0},
	}, job)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Name != "before-upgrade" || len(sp.Partitions) != 2 || sp.Partitions[0].Partition != 0 ||
		sp.Offsets()[tp1] != 50 || sp.Job["dedup_window"] != "24h" || sp.Bytes() == 0 {
		t.Fatalf("savepoint meta %+v", sp)
	}
	for _, p := range sp.Partitions {
		for _, f := range p.Files {
			if f.Pool != "" {
				t.Fatalf("savepoint file %s references the pool", f.Name)
			}
		}
	}
	if _, err := s.Savepoint(ctx, "before-upgrade", []SavepointPart{{Topic: tp0.Topic, SrcDir: src0}}, nil); !errors.Is(err, ErrSavepointExists) {
		t.Fatalf("name collision: %v", err)
	}
	for _, bad := range []string{"../x", ".hidden", "a/b"} {
		if _, err := s.Savepoint(ctx, bad, []SavepointPart{{Topic: tp0.Topic, SrcDir: src0}}, nil); err == nil {
			t.Fatalf("savepoint name %q accepted", bad)
		}
	}
	list, err := s.ListSavepoints()
	if err != nil || len(list) != 1 || list[0].Name != sp.Name || list[0].Dir != sp.Dir {
		t.Fatalf("ListSavepoints = %+v, %v", list, err)
	}

	// Retention and GC never touch savepoints, even with everything old.
	for i := 0; i < 3; i++ {
		put(t, db0, 100+i, 101+i, "x", 10)
		publish(t, s, tp0, int64(101+i), stage(t, db0, tmp))
	}
	filepath.WalkDir(s.dir, func(p string, _ os.DirEntry, _ error) error { backdate(t, p, time.Hour); return nil })
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}

	// Portable: copy the savepoint elsewhere, load and restore from there.
	moved := filepath.Join(tmp, "elsewhere", "sp")
	copyTree(t, sp.Dir, moved)
	loaded, err := LoadSavepoint(filepath.Join(moved, savepointFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tp   TopicPartition
		n    int
		gen  string
		want int64
	}{{tp0, 100, "p0", 100}, {tp1, 50, "p1", 50}} {
		dst := filepath.Join(tmp, "r", c.tp.String())
		off, err := RestoreSavepointPartition(ctx, loaded, c.tp.Topic, c.tp.Partition, dst)
		if err != nil || off != c.want {
			t.Fatalf("RestoreSavepointPartition %s = %d, %v", c.tp, off, err)
		}
		checkDB(t, dst, c.n, expect{0, c.n, c.gen, 80})
	}
	if _, err := RestoreSavepointPartition(ctx, loaded, "nope", 0, filepath.Join(tmp, "r", "nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown partition: %v", err)
	}

	// Corruption is detected by LoadSavepoint and by the restore.
	var victim string
	for _, f := range loaded.Partitions[1].Files {
		if strings.HasSuffix(f.Name, ".sst") {
			victim = f.Name
			flipByte(t, filepath.Join(moved, loaded.Partitions[1].Dir, f.Name), f.Size/3)
		}
	}
	if _, err := LoadSavepoint(moved); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), victim) {
		t.Fatalf("LoadSavepoint of a corrupt savepoint: %v", err)
	}
	_, err = RestoreSavepointPartition(ctx, loaded, tp1.Topic, 1, filepath.Join(tmp, "r", "bad"))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), victim) {
		t.Fatalf("restore of a corrupt savepoint: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "r", "bad")); !os.IsNotExist(err) {
		t.Fatal("failed savepoint restore left its destination")
	}
	// Unknown metadata version.
	b, _ := os.ReadFile(filepath.Join(moved, savepointFile))
	os.WriteFile(filepath.Join(moved, savepointFile), []byte(strings.Replace(string(b), `"format": 1`, `"format": 7`, 1)), 0o644)
	if _, err := LoadSavepoint(moved); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("unknown savepoint format: %v", err)
	}

	if err := s.DeleteSavepoint("before-upgrade"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListSavepoints(); len(list) != 0 {
		t.Fatalf("after delete: %v", list)
	}
	if err := s.DeleteSavepoint("before-upgrade"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	tmp := t.TempDir()

	// Fresh dir: created with a FORMAT file; reopening works.
	dir := filepath.Join(tmp, "new", "ckpt")
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	var f formatDoc
	b, _ := os.ReadFile(filepath.Join(dir, formatFile))
	if err := json.Unmarshal(b, &f); err != nil || f.Format != FormatName || f.Version != FormatVersion {
		t.Fatalf("FORMAT = %s (%v)", b, err)
	}
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenExisting(dir, nil); err != nil {
		t.Fatal(err)
	}

	// An existing empty dir is adopted.
	empty := filepath.Join(tmp, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := Open(empty, Options{}); err != nil {
		t.Fatal(err)
	}

	// A crash while writing FORMAT leaves only a .tmp- file: adopted too.
	crashed := filepath.Join(tmp, "crashed")
	os.Mkdir(crashed, 0o755)
	os.WriteFile(filepath.Join(crashed, tmpPrefix+"file-FORMAT-abc"), []byte("{"), 0o644)
	if _, err := Open(crashed, Options{}); err != nil {
		t.Fatal(err)
	}

	// A non-empty dir that is not a checkpoint dir is refused.
	other := filepath.Join(tmp, "home")
	os.Mkdir(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("hi"), 0o644)
	_, err := Open(other, Options{})
	if !errors.Is(err, ErrNotCheckpointDir) || !strings.Contains(err.Error(), "notes.txt") {
		t.Fatalf("Open(non-checkpoint dir) = %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, formatFile)); !os.IsNotExist(err) {
		t.Fatal("Open wrote into a foreign directory")
	}

	// Unknown FORMAT version.
	future := filepath.Join(tmp, "future")
	os.Mkdir(future, 0o755)
	os.WriteFile(filepath.Join(future, formatFile), []byte(`{"format":"txstream-checkpoints","version":2}`), 0o644)
	_, err = Open(future, Options{})
	if !errors.Is(err, ErrUnsupportedFormat) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("Open(version 2) = %v", err)
	}
	if _, err := OpenExisting(future, nil); !errors.Is(err, ErrUnsupportedFormat) {
		t.Fatalf("OpenExisting(version 2) = %v", err)
	}

	// Another format name / garbage FORMAT.
	for i, content := range []string{`{"format":"rocksdb","version":1}`, `not json`} {
		d := filepath.Join(tmp, "bad", string(rune('a'+i)))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, formatFile), []byte(content), 0o644)
		if _, err := Open(d, Options{}); !errors.Is(err, ErrNotCheckpointDir) {
			t.Fatalf("Open(FORMAT %q) = %v", content, err)
		}
	}

	// OpenExisting never creates.
	if _, err := OpenExisting(filepath.Join(tmp, "missing"), nil); !errors.Is(err, ErrNotCheckpointDir) {
		t.Fatalf("OpenExisting(missing) = %v", err)
	}
	empty2 := filepath.Join(tmp, "empty2")
	os.Mkdir(empty2, 0o755)
	if _, err := OpenExisting(empty2, nil); !errors.Is(err, ErrNotCheckpointDir) {
		t.Fatalf("OpenExisting(empty) = %v", err)
	}
	// A file is not a directory.
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Open(file, Options{}); !errors.Is(err, ErrNotCheckpointDir) {
		t.Fatalf("Open(file) = %v", err)
	}
	if _, err := Open(dir, Options{Mode: "diff"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
}

// Damaged or hostile metadata is a torn snapshot: no panic, no reads
// outside the checkpoint dir.
func TestBadMetadata(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 10})
	put(t, db, 0, 10, "a", 10)
	good, _ := publish(t, s, tp0, 10, stage(t, db, tmp))
	put(t, db, 10, 20, "a", 10)
	m, _ := publish(t, s, tp0, 20, stage(t, db, tmp))
	orig, _ := os.ReadFile(filepath.Join(m.Dir, metaFile))

	secret := filepath.Join(tmp, "secret.sst")
	os.WriteFile(secret, []byte("secret"), 0o644)
	mutations := map[string]func(*Meta){
		"traversal pool": func(m *Meta) {
			for i := range m.Files {
				if m.Files[i].Pool != "" {
					m.Files[i].Pool = "pool/../../secret.sst"
				}
			}
		},
		"traversal name": func(m *Meta) { m.Files[0].Name = "../../secret.sst" },
		"crc flipped":    func(m *Meta) { m.Files[len(m.Files)-1].CRC32C ^= 1 },
		"other partition": func(m *Meta) {
			m.Partition = 3
		},
		"future format": func(m *Meta) { m.Format = 2 },
		"no files":      func(m *Meta) { m.Files = nil },
	}
	for name, mut := range mutations {
		var mm Meta
		if err := json.Unmarshal(orig, &mm); err != nil {
			t.Fatal(err)
		}
		mut(&mm)
		b, _ := json.Marshal(mm)
		os.WriteFile(filepath.Join(m.Dir, metaFile), b, 0o644)
		dst := filepath.Join(tmp, "r-"+strings.ReplaceAll(name, " ", "-"))
		got, err := s.Restore(context.Background(), tp0.Topic, 0, 100, dst)
		if err != nil || got.ID != good.ID {
			t.Fatalf("%s: Restore = %s, %v; want %s", name, got.ID, err, good.ID)
		}
	}
	for _, junk := range []string{"", "{", "[]", `{"format":1,"files":"x"}`, "null", strings.Repeat("x", 100)} {
		os.WriteFile(filepath.Join(m.Dir, metaFile), []byte(junk), 0o644)
		if ms, err := s.List(tp0.Topic, 0); err != nil || len(ms) != 1 {
			t.Fatalf("junk %q: List = %v, %v", junk, ids(ms), err)
		}
	}
}

// Publish for different partitions from several goroutines, with List and
// Restore of other partitions running at the same time (run with -race).
func TestConcurrency(t *testing.T) {
	tmp := t.TempDir()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 2})
	ctx := context.Background()
	const parts = 4
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for p := 0; p < parts; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			db := openDB(t, filepath.Join(tmp, "live", string(rune('a'+p))))
			defer db.Close()
			for i := 0; i < 4; i++ {
				put(t, db, i*50, i*50+50, "g", 40)
				src := stage(t, db, filepath.Join(tmp, "stage"))
				if _, _, err := s.Publish(ctx, tp0.Topic, int32(p), int64(i*50+50), src, nil); err != nil {
					errs <- err
					return
				}
				os.RemoveAll(src)
				other := int32((p + 1) % parts)
				if _, err := s.List(tp0.Topic, other); err != nil {
					errs <- err
				}
				dst := filepath.Join(tmp, "restore", string(rune('a'+p)), string(rune('0'+i)))
				if _, err := s.Restore(ctx, tp0.Topic, other, 1<<40, dst); err != nil && !errors.Is(err, ErrNoSnapshot) {
					errs <- err
				}
				if _, err := s.GC(ctx, false); err != nil {
					errs <- err
				}
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for p := 0; p < parts; p++ {
		ms, err := s.List(tp0.Topic, int32(p))
		if err != nil || len(ms) != 2 || ms[0].Offset != 200 {
			t.Fatalf("partition %d: %v, %v", p, ids(ms), err)
		}
		dst := filepath.Join(tmp, "final", string(rune('a'+p)))
		if _, err := s.Restore(ctx, tp0.Topic, int32(p), 1<<40, dst); err != nil {
			t.Fatal(err)
		}
		checkDB(t, dst, 200, expect{0, 200, "g", 40})
	}
}

func TestPublishErrors(t *testing.T) {
	tmp := t.TempDir()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{})
	ctx := context.Background()
	if _, _, err := s.Publish(ctx, tp0.Topic, 0, 1, filepath.Join(tmp, "missing"), nil); err == nil {
		t.Fatal("missing source accepted")
	}
	empty := filepath.Join(tmp, "empty")
	os.Mkdir(empty, 0o755)
	if _, _, err := s.Publish(ctx, tp0.Topic, 0, 1, empty, nil); err == nil {
		t.Fatal("empty source accepted")
	}
	withSub := filepath.Join(tmp, "sub")
	os.MkdirAll(filepath.Join(withSub, "d"), 0o755)
	if _, _, err := s.Publish(ctx, tp0.Topic, 0, 1, withSub, nil); err == nil {
		t.Fatal("source with a subdirectory accepted")
	}
	for _, topic := range []string{"", "../x", "a/b", ".."} {
		if _, _, err := s.Publish(ctx, topic, 0, 1, empty, nil); err == nil {
			t.Fatalf("topic %q accepted", topic)
		}
	}
	if _, _, err := s.Publish(ctx, tp0.Topic, -1, 1, empty, nil); err == nil {
		t.Fatal("negative partition accepted")
	}
	if _, _, err := s.Publish(ctx, tp0.Topic, 0, -1, empty, nil); err == nil {
		t.Fatal("negative offset accepted")
	}

	// A cancelled publish leaves nothing behind.
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 100, "a", 100)
	src := stage(t, db, tmp)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.Publish(cctx, tp0.Topic, 0, 100, src, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled publish: %v", err)
	}
	if ents, _ := os.ReadDir(s.partDir(tp0)); len(ents) != 0 {
		t.Fatalf("cancelled publish left %d entries", len(ents))
	}
	if n := len(poolFiles(t, s, tp0)); n != 0 {
		t.Fatalf("cancelled publish left %d pool files", n)
	}
}

// With no grace period at all, a GC running in a loop next to publishes of
// the same partition must never remove a file a snapshot references: the
// partition lock keeps GC away from a publish in flight.
func TestGCDuringPublishNoGrace(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 2, Grace: -1})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	gcErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := s.GC(ctx, false); err != nil && ctx.Err() == nil {
				gcErr <- err
				return
			}
		}
	}()
	for i := 0; i < 15; i++ {
		put(t, db, i*20, i*20+20, "a", 200)
		src := stage(t, db, tmp)
		m, _ := publish(t, s, tp0, int64(i*20+20), src)
		os.RemoveAll(src)
		if err := s.Verify(context.Background(), m); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("snapshot %d broken right after publish: %v", i, err)
		}
	}
	cancel()
	wg.Wait()
	select {
	case err := <-gcErr:
		t.Fatal(err)
	default:
	}
	ms, _ := s.List(tp0.Topic, 0)
	for _, m := range ms {
		if err := s.Verify(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(tmp, "r")
	if _, err := s.Restore(context.Background(), tp0.Topic, 0, 1<<40, dst); err != nil {
		t.Fatal(err)
	}
	checkDB(t, dst, 300, expect{0, 300, "a", 200})
}

// Metadata that exists but cannot be read (here: EISDIR) is an I/O error,
// not a torn snapshot: GC must stop for that partition instead of deleting
// the pool files the snapshot may reference.
func TestGCMetadataReadErrorIsNotTorn(t *testing.T) {
	tmp := t.TempDir()
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Grace: -1})
	put(t, db, 0, 50, "a", 100)
	m, _ := publish(t, s, tp0, 50, stage(t, db, tmp))
	meta := filepath.Join(m.Dir, metaFile)
	saved, _ := os.ReadFile(meta)
	os.Remove(meta)
	if err := os.Mkdir(meta, 0o755); err != nil {
		t.Fatal(err)
	}
	before := poolFiles(t, s, tp0)
	if _, err := s.GC(context.Background(), false); err == nil {
		t.Fatal("GC ignored an unreadable metadata file")
	}
	if _, err := s.List(tp0.Topic, 0); err == nil {
		t.Fatal("List ignored an unreadable metadata file")
	}
	if after := poolFiles(t, s, tp0); len(after) != len(before) {
		t.Fatalf("GC removed pool files: %d -> %d", len(before), len(after))
	}
	os.Remove(meta)
	os.WriteFile(meta, saved, 0o644)
	if err := s.Verify(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}
