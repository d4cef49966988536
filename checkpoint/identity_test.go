package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

const (
	oldTopicID = "6cbbf5ab-4a28-4a0b-9d5e-0b2f0c1d2e3f" // first incarnation of the topic
	newTopicID = "0f1e2d3c-b4a5-4697-8899-aabbccddeeff" // after delete + re-create
	clusterA   = "MkU3OEVBNTcwNTJENDM2Qk"
	clusterB   = "x9kZ0v7qT6mY1nB2cD3eFg"
)

func publishFrom(t testing.TB, s *Store, src Source, offset int64, dir string) Meta {
	t.Helper()
	m, _, err := s.PublishFrom(context.Background(), src, offset, dir, map[string]string{"operator": "test/v1"})
	if err != nil {
		t.Fatalf("PublishFrom offset %d: %v", offset, err)
	}
	return m
}

// The bug this guards against: the topic is deleted and re-created (or
// the cluster fails over) with the same checkpoint directory. The old
// incarnation's snapshot has a higher offset, still <= the committed
// offset, so plain Restore picks it: the wrong state.
func TestRestoreFromSkipsForeignTopicIncarnation(t *testing.T) {
	tmp := t.TempDir()
	ctx := context.Background()
	lg, logs := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Logger: lg})

	oldDB := openDB(t, filepath.Join(tmp, "live-old"))
	defer oldDB.Close()
	put(t, oldDB, 0, 500, "old", 50)
	mOld := publishFrom(t, s, Source{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterA}, 500, stage(t, oldDB, tmp))

	newDB := openDB(t, filepath.Join(tmp, "live-new"))
	defer newDB.Close()
	put(t, newDB, 0, 100, "new", 50)
	mNew := publishFrom(t, s, Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterA}, 100, stage(t, newDB, tmp))

	if mOld.TopicID != oldTopicID || mOld.ClusterID != clusterA || mNew.TopicID != newTopicID {
		t.Fatalf("published metas do not record the ids: %+v / %+v", mOld, mNew)
	}
	ms, err := s.List(tp0.Topic, tp0.Partition)
	if err != nil || len(ms) != 2 || ms[0].ID != mOld.ID || ms[0].TopicID != oldTopicID || ms[0].ClusterID != clusterA ||
		ms[1].ID != mNew.ID || ms[1].TopicID != newTopicID {
		t.Fatalf("List = %+v, %v", ms, err)
	}

	// Without an identity the old incarnation wins (offset 500 <= 600).
	dst := filepath.Join(tmp, "r-plain")
	got, err := s.Restore(ctx, tp0.Topic, tp0.Partition, 600, dst)
	if err != nil || got.ID != mOld.ID {
		t.Fatalf("Restore = %s, %v; want %s", got.ID, err, mOld.ID)
	}

	// With the new topic id the newer-by-offset foreign snapshot is skipped.
	dst = filepath.Join(tmp, "r-new")
	got, err = s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterA, MaxOffset: 600}, dst)
	if err != nil || got.ID != mNew.ID || got.Offset != 100 || got.TopicID != newTopicID {
		t.Fatalf("RestoreFrom(new id) = %+v, %v; want %s", got, err, mNew.ID)
	}
	checkDB(t, dst, 100, expect{0, 100, "new", 50})
	var warned bool
	for _, w := range warnings(logs) {
		if strings.Contains(w, "another topic incarnation") && strings.Contains(w, mOld.ID) &&
			strings.Contains(w, "topic_id="+oldTopicID) && strings.Contains(w, "expected_topic_id="+newTopicID) {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning naming the skipped snapshot and both ids: %q", warnings(logs))
	}

	// The old id still finds the old snapshot (e.g. a rollback).
	got, err = s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, MaxOffset: 600}, filepath.Join(tmp, "r-old"))
	if err != nil || got.ID != mOld.ID {
		t.Fatalf("RestoreFrom(old id) = %s, %v; want %s", got.ID, err, mOld.ID)
	}

	// A cluster fail-over: same topic id, other cluster: nothing matches.
	dst = filepath.Join(tmp, "r-cluster")
	_, err = s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterB, MaxOffset: 600}, dst)
	if !errors.Is(err, ErrNoSnapshot) || !errors.Is(err, ErrForeignSource) {
		t.Fatalf("RestoreFrom(other cluster) = %v; want ErrNoSnapshot and ErrForeignSource", err)
	}
	if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
		t.Fatalf("a refused restore left %s behind (%v)", dst, serr)
	}
	// No snapshot at all below the offset is not a foreign-source error.
	_, err = s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, MaxOffset: 50}, filepath.Join(tmp, "r-none"))
	if !errors.Is(err, ErrNoSnapshot) || errors.Is(err, ErrForeignSource) {
		t.Fatalf("RestoreFrom(max 50) = %v; want ErrNoSnapshot only", err)
	}
}

// Snapshots written before ids were recorded stay usable, and are
// preferred over a newer one that is known to be foreign.
func TestRestoreFromLegacySnapshot(t *testing.T) {
	tmp := t.TempDir()
	ctx := context.Background()
	lg, logs := observed()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Logger: lg})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()

	put(t, db, 0, 300, "legacy", 40)
	legacy, _ := publish(t, s, tp0, 300, stage(t, db, tmp)) // the old Publish: no ids
	if legacy.TopicID != "" || legacy.ClusterID != "" {
		t.Fatalf("Publish recorded ids: %+v", legacy)
	}
	b, err := os.ReadFile(filepath.Join(legacy.Dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "topic_id") || strings.Contains(string(b), "cluster_id") {
		t.Fatalf("metadata without ids should not mention them (older binaries read it):\n%s", b)
	}

	want := Want{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterA, MaxOffset: 1000}
	dst := filepath.Join(tmp, "r1")
	got, err := s.RestoreFrom(ctx, want, dst)
	if err != nil || got.ID != legacy.ID {
		t.Fatalf("RestoreFrom(legacy) = %s, %v; want %s", got.ID, err, legacy.ID)
	}
	checkDB(t, dst, 300, expect{0, 300, "legacy", 40})
	var noted bool
	for _, e := range logs.FilterLevelExact(zapcore.InfoLevel).All() {
		if strings.Contains(e.Message, "topic id or cluster id") && e.ContextMap()["snapshot"] == legacy.ID {
			noted = true
		}
	}
	if !noted {
		t.Fatalf("restoring a snapshot without ids was not logged at info level: %+v", logs.All())
	}
	if w := warnings(logs); len(w) != 0 {
		t.Fatalf("legacy restore warned: %q", w)
	}

	// A newer snapshot of a foreign incarnation does not shadow it.
	other := openDB(t, filepath.Join(tmp, "live-other"))
	defer other.Close()
	put(t, other, 0, 10, "foreign", 40)
	foreign := publishFrom(t, s, Source{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterA}, 400, stage(t, other, tmp))
	dst = filepath.Join(tmp, "r2")
	got, err = s.RestoreFrom(ctx, want, dst)
	if err != nil || got.ID != legacy.ID {
		t.Fatalf("RestoreFrom with a foreign newer snapshot = %s, %v; want legacy %s (not %s)", got.ID, err, legacy.ID, foreign.ID)
	}
	checkDB(t, dst, 300, expect{0, 300, "legacy", 40})

	// Partially recorded identity: the topic id matches, the cluster id
	// is unknown on the snapshot side: usable.
	part := publishFrom(t, s, Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID}, 500, stage(t, db, tmp))
	got, err = s.RestoreFrom(ctx, want, filepath.Join(tmp, "r3"))
	if err != nil || got.ID != part.ID {
		t.Fatalf("RestoreFrom(topic id only) = %s, %v; want %s", got.ID, err, part.ID)
	}
}

func TestSavepointForeignSource(t *testing.T) {
	tmp := t.TempDir()
	ctx := context.Background()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 80, "sp", 40)
	src := stage(t, db, tmp)

	sp, err := s.Savepoint(ctx, "with-ids", []SavepointPart{
		{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterA, Offset: 80, SrcDir: src},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadSavepoint(sp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := loaded.Partition(tp0.Topic, 0); !ok || p.TopicID != oldTopicID || p.ClusterID != clusterA {
		t.Fatalf("savepoint partition %+v does not record the ids", p)
	}

	for _, c := range []struct {
		name string
		want Source
	}{
		{"topic re-created", Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterA}},
		{"other cluster", Source{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterB}},
	} {
		dst := filepath.Join(tmp, "r-"+strings.ReplaceAll(c.name, " ", "-"))
		off, err := RestoreSavepointFrom(ctx, loaded, c.want, dst, false)
		var fe *ForeignSourceError
		if !errors.Is(err, ErrForeignSource) || !errors.As(err, &fe) || off != 0 {
			t.Fatalf("%s: RestoreSavepointFrom = %d, %v; want ErrForeignSource", c.name, off, err)
		}
		if fe.Got.TopicID != oldTopicID || fe.Want != c.want || !strings.Contains(err.Error(), "savepoint with-ids") {
			t.Fatalf("%s: error details %+v (%v)", c.name, fe, err)
		}
		if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
			t.Fatalf("%s: a refused restore created %s (%v)", c.name, dst, serr)
		}
	}

	// The override restores it anyway.
	dst := filepath.Join(tmp, "r-override")
	off, err := RestoreSavepointFrom(ctx, loaded, Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID}, dst, true)
	if err != nil || off != 80 {
		t.Fatalf("RestoreSavepointFrom(allowForeign) = %d, %v", off, err)
	}
	checkDB(t, dst, 80, expect{0, 80, "sp", 40})

	// Matching ids, expected ids unknown, and the old entry point: all fine.
	for i, want := range []Source{
		{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterA},
		{Topic: tp0.Topic, Partition: 0},
	} {
		if off, err := RestoreSavepointFrom(ctx, loaded, want, filepath.Join(tmp, "r-ok", string(rune('a'+i))), false); err != nil || off != 80 {
			t.Fatalf("RestoreSavepointFrom(%+v) = %d, %v", want, off, err)
		}
	}
	if off, err := RestoreSavepointPartition(ctx, loaded, tp0.Topic, 0, filepath.Join(tmp, "r-ok", "legacy-api")); err != nil || off != 80 {
		t.Fatalf("RestoreSavepointPartition = %d, %v", off, err)
	}

	// A savepoint without ids (written before they were recorded) is usable.
	old, err := s.Savepoint(ctx, "no-ids", []SavepointPart{{Topic: tp0.Topic, Partition: 0, Offset: 80, SrcDir: src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if off, err := RestoreSavepointFrom(ctx, old, Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterB},
		filepath.Join(tmp, "r-no-ids"), false); err != nil || off != 80 {
		t.Fatalf("RestoreSavepointFrom(savepoint without ids) = %d, %v", off, err)
	}
}

func TestCheckSource(t *testing.T) {
	zeroIDs := []string{"AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA", "00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000"}
	for _, c := range []struct {
		got, want Source
		foreign   bool
	}{
		{Source{}, Source{}, false},
		{Source{TopicID: "a"}, Source{TopicID: "a"}, false},
		{Source{TopicID: "a"}, Source{TopicID: "b"}, true},
		{Source{TopicID: "a"}, Source{}, false},
		{Source{}, Source{TopicID: "b", ClusterID: "c"}, false},
		{Source{TopicID: "a", ClusterID: "c"}, Source{TopicID: "a", ClusterID: "d"}, true},
		{Source{TopicID: "a", ClusterID: "c"}, Source{TopicID: "a", ClusterID: "c"}, false},
		{Source{TopicID: " a "}, Source{TopicID: "a"}, false},
		{Source{TopicID: zeroIDs[0]}, Source{TopicID: "b"}, false},
		{Source{TopicID: "a"}, Source{TopicID: zeroIDs[2]}, false},
	} {
		err := CheckSource("snapshot x", c.got, c.want)
		if (err != nil) != c.foreign || (err != nil && !errors.Is(err, ErrForeignSource)) {
			t.Errorf("CheckSource(%+v, %+v) = %v, want foreign=%v", c.got, c.want, err, c.foreign)
		}
	}
	for _, z := range zeroIDs {
		if normID(z) != "" {
			t.Errorf("normID(%q) = %q, want empty (no topic id)", z, normID(z))
		}
	}
	if normID(oldTopicID) != oldTopicID || normID(clusterA) != clusterA {
		t.Error("normID changed a real id")
	}
}

func TestPublishFromIDs(t *testing.T) {
	tmp := t.TempDir()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 10, "a", 10)
	src := stage(t, db, tmp)
	ctx := context.Background()
	for _, bad := range []Source{
		{Topic: tp0.Topic, TopicID: "bad\nid"},
		{Topic: tp0.Topic, ClusterID: "has space"},
		{Topic: tp0.Topic, TopicID: strings.Repeat("x", 200)},
	} {
		if _, _, err := s.PublishFrom(ctx, bad, 10, src, nil); err == nil {
			t.Errorf("PublishFrom(%+v) accepted an invalid id", bad)
		}
	}
	// An all-zero topic id (a broker without topic ids) is recorded as unknown.
	m := publishFrom(t, s, Source{Topic: tp0.Topic, TopicID: "AAAAAAAAAAAAAAAAAAAAAA==", ClusterID: clusterA}, 10, src)
	if m.TopicID != "" || m.ClusterID != clusterA {
		t.Fatalf("meta ids %q %q", m.TopicID, m.ClusterID)
	}
	// Metadata with a damaged id is torn, not trusted.
	ms, err := s.List(tp0.Topic, 0)
	if err != nil || len(ms) != 1 || ms[0].ClusterID != clusterA {
		t.Fatalf("List = %+v, %v", ms, err)
	}
	p := filepath.Join(m.Dir, metaFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), clusterA, `bad\u0007id`, 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	if ms, err := s.List(tp0.Topic, 0); err != nil || len(ms) != 0 {
		t.Fatalf("List with a damaged cluster id = %+v, %v; want it skipped as torn", ms, err)
	}
}

// After the topic is re-created, the old incarnation's snapshots (higher
// offsets) must not take the whole retention budget: the new incarnation
// keeps Retain snapshots of its own, and the old one keeps its newest.
func TestRetentionPerSource(t *testing.T) {
	tmp := t.TempDir()
	s := newStore(t, filepath.Join(tmp, "ckpt"), Options{Retain: 2, Grace: -1})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	oldSrc := Source{Topic: tp0.Topic, Partition: 0, TopicID: oldTopicID, ClusterID: clusterA}
	newSrc := Source{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, ClusterID: clusterA}

	var olds, news []Meta
	for i := 0; i < 3; i++ {
		put(t, db, i*10, i*10+10, "o", 20)
		olds = append(olds, publishFrom(t, s, oldSrc, int64(1000+i*100), stage(t, db, tmp)))
	}
	for i := 0; i < 3; i++ {
		put(t, db, i*10, i*10+10, "n", 20)
		news = append(news, publishFrom(t, s, newSrc, int64(10+i*10), stage(t, db, tmp)))
	}
	ms, err := s.List(tp0.Topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range ms {
		got[m.ID] = true
	}
	for _, m := range []Meta{olds[2], olds[1], news[2], news[1]} {
		if !got[m.ID] {
			t.Errorf("snapshot %s (topic id %s, offset %d) was removed by retention", m.ID, m.TopicID, m.Offset)
		}
	}
	if len(ms) != 4 {
		t.Errorf("kept %d snapshots, want 2 per source: %+v", len(ms), ms)
	}
	// Every kept snapshot still restores (the pool kept their files).
	for _, m := range ms {
		if err := s.Verify(context.Background(), m); err != nil {
			t.Errorf("Verify %s: %v", m.ID, err)
		}
	}
	got2, err := s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: 0, TopicID: newTopicID, MaxOffset: 5000}, filepath.Join(tmp, "r"))
	if err != nil || got2.ID != news[2].ID {
		t.Fatalf("RestoreFrom = %s, %v; want %s", got2.ID, err, news[2].ID)
	}

	// Offline retention (no snapshot just published) uses the most
	// recently created snapshot as the current source.
	off, err := Open(s.dir, Options{MustExist: true, Retain: 1, Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.GC(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	ms, _ = off.List(tp0.Topic, 0)
	if len(ms) != 2 || ms[0].ID != olds[2].ID || ms[1].ID != news[2].ID {
		t.Fatalf("offline GC with Retain 1 kept %+v; want %s and %s", ms, olds[2].ID, news[2].ID)
	}
}
