package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/txstream/txstream/test/s3test"
)

// The tests below run the object storage implementation against a real S3
// server (versitygw, test/s3test); they skip when it cannot be built.

func s3Config(endpoint string, srv *s3test.Server) S3Config {
	return S3Config{Endpoint: "http://" + endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
		Timeout: 20 * time.Second}
}

func newS3(t testing.TB, srv *s3test.Server, prefix string, opts Options) *S3Store {
	t.Helper()
	s, err := OpenS3(context.Background(), srv.Location(prefix), s3Config(srv.Endpoint, srv), opts)
	if err != nil {
		t.Fatalf("OpenS3: %v", err)
	}
	return s
}

func publishTo(t testing.TB, s Storage, tp TopicPartition, offset int64, src string) (Meta, PublishStats) {
	t.Helper()
	m, st, err := s.PublishFrom(context.Background(), Source{Topic: tp.Topic, Partition: tp.Partition}, offset, src, map[string]string{"operator": "test/v1"})
	if err != nil {
		t.Fatalf("Publish offset %d: %v", offset, err)
	}
	return m, st
}

// objectPath is where the POSIX back end keeps an object.
func objectPath(srv *s3test.Server, s *S3Store, rel string) string {
	return filepath.Join(srv.Dir, "root", srv.Bucket, filepath.FromSlash(s.key(rel)))
}

func objectKeys(t testing.TB, s *S3Store, rel string) []string {
	t.Helper()
	objs, err := s.list(context.Background(), rel, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, s.rel(o.Key))
	}
	return out
}

func TestS3RoundTrip(t *testing.T) {
	srv := s3test.Start(t)
	for _, mode := range []Mode{ModeFull, ModeIncremental} {
		t.Run(string(mode), func(t *testing.T) {
			tmp := t.TempDir()
			db := openDB(t, filepath.Join(tmp, "live"))
			defer db.Close()
			s := newS3(t, srv, "rt-"+string(mode), Options{Mode: mode})

			put(t, db, 0, 500, "a", 100)
			putNoFlush(t, db, 500, 600, "a", 100)
			m1, st1 := publishTo(t, s, tp0, 600, stage(t, db, tmp))
			if m1.Mode != mode || m1.Offset != 600 || st1.FilesCopied != st1.Files || st1.TotalBytes != m1.Bytes() {
				t.Fatalf("first publish: meta %+v stats %+v", m1, st1)
			}
			for _, f := range m1.Files {
				if (f.Pool != "") != (mode == ModeIncremental && isImmutable(f.Name)) {
					t.Fatalf("file %+v in %s mode", f, mode)
				}
			}
			put(t, db, 600, 700, "b", 100)
			m2, st2 := publishTo(t, s, tp0, 700, stage(t, db, tmp))
			if mode == ModeIncremental {
				// Only the new SST and the mutable files are uploaded.
				if st2.FilesCopied >= st2.Files || st2.BytesWritten >= st2.TotalBytes {
					t.Fatalf("incremental publish uploaded %d of %d files, %d of %d bytes", st2.FilesCopied, st2.Files, st2.BytesWritten, st2.TotalBytes)
				}
			}
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
			dst := filepath.Join(tmp, "restored", "a")
			got, err := s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, dst)
			if err != nil || got.ID != m2.ID {
				t.Fatalf("Restore = %s, %v; want %s", got.ID, err, m2.ID)
			}
			checkDB(t, dst, 700, expect{0, 600, "a", 100}, expect{600, 700, "b", 100})
			dst2 := filepath.Join(tmp, "restored", "b")
			got, err = s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 650}, dst2)
			if err != nil || got.ID != m1.ID {
				t.Fatalf("Restore(650) = %s, %v; want %s", got.ID, err, m1.ID)
			}
			checkDB(t, dst2, 600, expect{0, 600, "a", 100})
			if _, err := s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 10}, filepath.Join(tmp, "none")); !errors.Is(err, ErrNoSnapshot) {
				t.Fatalf("Restore(10) = %v, want ErrNoSnapshot", err)
			}

			// Another process (a fresh store: empty checksum cache) reopens
			// the bucket and publishes: it finds the SSTs in the pool by
			// hashing them instead of uploading them again.
			s2 := newS3(t, srv, "rt-"+string(mode), Options{Mode: mode})
			_, st3 := publishTo(t, s2, tp0, 700, stage(t, db, tmp))
			if mode == ModeIncremental && (st3.BytesHashed == 0 || st3.FilesCopied >= st3.Files) {
				t.Fatalf("publish after reopen: %+v", st3)
			}
		})
	}
}

func TestS3Open(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	cfg := s3Config(srv.Endpoint, srv)
	if _, err := OpenS3(ctx, srv.Location("fresh"), cfg, Options{MustExist: true}); !errors.Is(err, ErrNotCheckpointDir) {
		t.Fatalf("MustExist on an empty prefix: %v", err)
	}
	s := newS3(t, srv, "fresh", Options{})
	if b, err := s.getSmall(ctx, formatFile); err != nil || !strings.Contains(string(b), FormatName) {
		t.Fatalf("FORMAT = %q, %v", b, err)
	}
	newS3(t, srv, "fresh", Options{MustExist: true}) // now it exists

	// A prefix holding something else is refused.
	if _, err := srv.Client().PutObject(ctx, srv.Bucket, "other/data.csv", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenS3(ctx, srv.Location("other"), cfg, Options{}); !errors.Is(err, ErrNotCheckpointDir) || !strings.Contains(err.Error(), "data.csv") {
		t.Fatalf("non-empty prefix: %v", err)
	}
	// A missing bucket, bad locations and missing credentials.
	if _, err := OpenS3(ctx, "s3://no-such-bucket/x", cfg, Options{}); !errors.Is(err, ErrNotCheckpointDir) {
		t.Fatalf("missing bucket: %v", err)
	}
	for _, loc := range []string{"s3://key:secret@bucket/x", "s3://b/x", "s3://bucket/a//b", "s3://bucket/../x", "s3://Bucket/x"} {
		if _, err := OpenS3(ctx, loc, cfg, Options{}); err == nil {
			t.Fatalf("OpenS3(%q) accepted", loc)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	nocreds := cfg
	nocreds.AccessKeyID, nocreds.SecretAccessKey = "", ""
	if _, err := OpenS3(ctx, srv.Location("fresh"), nocreds, Options{}); err == nil || !strings.Contains(err.Error(), "no S3 credentials") {
		t.Fatalf("no credentials: %v", err)
	}
	// Credentials from a shared credentials file.
	f := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(f, []byte("[ck]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = "+srv.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := nocreds
	fromFile.CredentialsFile, fromFile.Profile = f, "ck"
	if _, err := OpenS3(ctx, srv.Location("fresh"), fromFile, Options{MustExist: true}); err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	for k, v := range fromFile.Redacted() {
		if strings.Contains(toString(v), srv.SecretKey) {
			t.Fatalf("Redacted %s = %v shows the secret", k, v)
		}
	}
	// Environment variables: the secret never shows either.
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	if _, err := OpenS3(ctx, srv.Location("fresh"), nocreds, Options{MustExist: true}); err != nil {
		t.Fatalf("credentials from the environment: %v", err)
	}
	for k, v := range nocreds.Redacted() {
		if strings.Contains(toString(v), srv.SecretKey) || strings.Contains(toString(v), srv.AccessKey) {
			t.Fatalf("Redacted %s = %v shows a credential", k, v)
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	default:
		return ""
	}
}

// TestS3CorruptObject: a flipped byte in an object is found by Verify and
// by a restore, which falls back to the older snapshot; the damaged pool
// object is quarantined and the next publish uploads the SST again.
func TestS3CorruptObject(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	log, logs := observed()
	s := newS3(t, srv, "corrupt", Options{Mode: ModeIncremental, Logger: log})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 300, "a", 200)
	m1, _ := publishTo(t, s, tp0, 300, stage(t, db, tmp))
	put(t, db, 300, 600, "b", 200)
	m2, _ := publishTo(t, s, tp0, 600, stage(t, db, tmp))
	bad := fileOnlyIn(t, m2, m1)
	flipByte(t, objectPath(srv, s, bad.Pool), bad.Size/2)

	err := s.Verify(context.Background(), m2)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad.Name) {
		t.Fatalf("Verify = %v, want ErrCorrupt naming %s", err, bad.Name)
	}
	if err := s.Verify(context.Background(), m1); err != nil {
		t.Fatalf("Verify older: %v", err)
	}
	// Verify quarantined the object: a restore finds it missing and falls
	// back to m1.
	keys := strings.Join(objectKeys(t, s, poolRel(tp0)), " ")
	if strings.Contains(keys, bad.Pool+" ") || !strings.Contains(keys, corruptPrefix) {
		t.Fatalf("pool after Verify: %s", keys)
	}
	got, err := s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, filepath.Join(tmp, "r1"))
	if err != nil || got.ID != m1.ID {
		t.Fatalf("Restore = %s, %v; want the older %s", got.ID, err, m1.ID)
	}
	checkDB(t, filepath.Join(tmp, "r1"), 300, expect{0, 300, "a", 200})
	if w := strings.Join(warnings(logs), "\n"); !strings.Contains(w, "skipping unusable snapshot") || !strings.Contains(w, bad.Name) {
		t.Fatalf("warnings: %s", w)
	}
	// The next publish uploads the SST again; the restore verifies.
	m3, st := publishTo(t, s, tp0, 600, stage(t, db, tmp))
	if st.FilesCopied == 0 {
		t.Fatalf("publish after quarantine: %+v", st)
	}
	got, err = s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, filepath.Join(tmp, "r2"))
	if err != nil || got.ID != m3.ID {
		t.Fatalf("Restore = %s, %v; want %s", got.ID, err, m3.ID)
	}
	checkDB(t, filepath.Join(tmp, "r2"), 600, expect{0, 300, "a", 200}, expect{300, 600, "b", 200})

	// A corrupted restore of a snapshot-private file is detected too.
	var priv FileInfo
	for _, f := range m3.Files {
		if f.Pool == "" && f.Size > 0 {
			priv = f
		}
	}
	flipByte(t, objectPath(srv, s, snapObject(m3, priv)), 0)
	got, err = s.RestoreFrom(context.Background(), Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, filepath.Join(tmp, "r3"))
	if err != nil || got.ID == m3.ID {
		t.Fatalf("Restore with a corrupt %s = %s, %v", priv.Name, got.ID, err)
	}
}

// TestS3MetadataNeverOverwritten: the metadata write is conditional; the
// server refuses to replace an existing metadata object.
func TestS3MetadataNeverOverwritten(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	s := newS3(t, srv, "cond", Options{})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 100, "a", 50)
	m, _ := publishTo(t, s, tp0, 100, stage(t, db, tmp))
	rel := partRel(tp0) + m.ID + "/" + metaFile
	before, err := s.getSmall(context.Background(), rel)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.putNew(context.Background(), rel, []byte(`{"format":1}`)); !errors.Is(err, errExists) {
		t.Fatalf("overwriting metadata: %v, want errExists", err)
	}
	after, err := s.getSmall(context.Background(), rel)
	if err != nil || string(after) != string(before) {
		t.Fatalf("metadata changed: %v", err)
	}
	// Writing the same bytes again (a retried request) is success.
	if err := s.putNew(context.Background(), rel, before); err != nil {
		t.Fatalf("idempotent retry: %v", err)
	}

	// Two stores race for one savepoint name: exactly one wins.
	s2 := newS3(t, srv, "cond", Options{})
	stageDir := stage(t, db, tmp)
	parts := []SavepointPart{{Topic: tp0.Topic, Partition: tp0.Partition, Offset: 100, SrcDir: stageDir}}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, st := range []*S3Store{s, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Savepoint(context.Background(), "race", parts, nil)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrSavepointExists):
			t.Fatalf("savepoint race: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("savepoint race: %d winners (%v)", won, errs)
	}
	sp, err := s.LoadSavepoint(context.Background(), "race")
	if err != nil {
		t.Fatalf("the winner's savepoint does not verify: %v", err)
	}
	if _, err := RestoreSavepointFrom(context.Background(), sp, Source{Topic: tp0.Topic, Partition: tp0.Partition}, filepath.Join(tmp, "sp"), false); err != nil {
		t.Fatal(err)
	}
	checkDB(t, filepath.Join(tmp, "sp"), 100, expect{0, 100, "a", 50})
}

// TestS3GCGrace: retention removes snapshots (metadata first); objects no
// snapshot references are kept while younger than the grace period (an
// upload in progress) and removed after it.
func TestS3GCGrace(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	ctx := context.Background()
	s := newS3(t, srv, "gc", Options{Retain: 1, Grace: time.Hour})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	var metas []Meta
	for i := range 3 {
		put(t, db, i*100, i*100+100, "g", 80)
		if i == 1 {
			// Overlapping files and a compaction that rewrites them make the
			// earlier SSTs unreferenced.
			put(t, db, 0, 100, "g", 80)
			if err := db.Compact(ctx, key(0), key(1000), true); err != nil {
				t.Fatal(err)
			}
		}
		m, _ := publishTo(t, s, tp0, int64(i*100+100), stage(t, db, tmp))
		metas = append(metas, m)
	}
	ms, err := s.List(tp0.Topic, tp0.Partition)
	if err != nil || len(ms) != 1 || ms[0].ID != metas[2].ID {
		t.Fatalf("after retention 1: %v, %v", ms, err)
	}
	for _, m := range metas[:2] {
		if keys := objectKeys(t, s, partRel(tp0)+m.ID+"/"); len(keys) != 0 {
			t.Fatalf("retention left %v", keys)
		}
	}
	// A torn snapshot (files, no metadata) and an orphan pool object, as a
	// publish in flight in another process leaves them.
	cl := srv.Client()
	for _, k := range []string{partRel(tp0) + "00000000000000000999-x-y/000001.log", poolRel(tp0) + "000999.sst.00000000.1"} {
		if _, err := cl.PutObject(ctx, srv.Bucket, s.key(k), strings.NewReader("z"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Removed {
		t.Fatalf("GC within the grace period removed %+v", it)
	}
	if rep.SkippedRecent < 3 { // unreferenced old SSTs, the orphan, the torn prefix
		t.Fatalf("GC report %+v", rep)
	}
	if err := s.Verify(ctx, metas[2]); err != nil {
		t.Fatal(err)
	}
	// Past the grace period (a store with none): garbage goes, the retained
	// snapshot stays whole.
	s0 := newS3(t, srv, "gc", Options{Retain: 1, Grace: -1})
	dry, err := s0.GC(ctx, true)
	if err != nil || len(dry.Removed) == 0 {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	rep, err = s0.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, it := range rep.Removed {
		kinds[it.Kind]++
	}
	if kinds[GCTorn] != 1 || kinds[GCPool] < 2 || len(rep.Removed) != len(dry.Removed) {
		t.Fatalf("GC removed %v (dry run said %d items)", kinds, len(dry.Removed))
	}
	if err := s0.Verify(ctx, metas[2]); err != nil {
		t.Fatalf("retained snapshot after GC: %v", err)
	}
	refs := map[string]bool{}
	for _, f := range metas[2].Files {
		refs[f.Pool] = f.Pool != ""
	}
	for _, k := range objectKeys(t, s, poolRel(tp0)) {
		if !refs[k] {
			t.Fatalf("unreferenced pool object %s survived GC", k)
		}
	}
	got, err := s0.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, filepath.Join(tmp, "r"))
	if err != nil || got.ID != metas[2].ID {
		t.Fatalf("restore after GC: %s, %v", got.ID, err)
	}
	checkDB(t, filepath.Join(tmp, "r"), 300, expect{0, 300, "g", 80})
}

func TestS3Savepoint(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	ctx := context.Background()
	s := newS3(t, srv, "sp", Options{})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 200, "a", 60)
	tp1 := TopicPartition{Topic: tp0.Topic, Partition: 1}
	parts := []SavepointPart{
		{Topic: tp1.Topic, Partition: 1, Offset: 7, SrcDir: stage(t, db, tmp), TopicID: "tid", ClusterID: "cid"},
		{Topic: tp0.Topic, Partition: 0, Offset: 200, SrcDir: stage(t, db, tmp), TopicID: "tid", ClusterID: "cid"},
	}
	sp, err := s.Savepoint(ctx, "pre-upgrade", parts, map[string]string{"operator": "test/v1"})
	if err != nil {
		t.Fatal(err)
	}
	if sp.Dir != srv.Location("sp")+"/savepoints/pre-upgrade" || len(sp.Partitions) != 2 || sp.Partitions[0].Partition != 0 {
		t.Fatalf("savepoint %+v", sp)
	}
	if _, err := s.Savepoint(ctx, "pre-upgrade", parts, nil); !errors.Is(err, ErrSavepointExists) {
		t.Fatalf("second savepoint with the name: %v", err)
	}
	list, err := s.ListSavepoints()
	if err != nil || len(list) != 1 || list[0].Name != "pre-upgrade" || list[0].ID != sp.ID {
		t.Fatalf("ListSavepoints = %+v, %v", list, err)
	}
	loaded, err := LoadSavepointAt(ctx, sp.Dir, s3Config(srv.Endpoint, srv), nil)
	if err != nil {
		t.Fatalf("LoadSavepointAt(%s): %v", sp.Dir, err)
	}
	off, err := RestoreSavepointFrom(ctx, loaded, Source{Topic: tp0.Topic, Partition: 0, TopicID: "tid"}, filepath.Join(tmp, "r0"), false)
	if err != nil || off != 200 {
		t.Fatalf("restore savepoint: %d, %v", off, err)
	}
	checkDB(t, filepath.Join(tmp, "r0"), 200, expect{0, 200, "a", 60})
	if _, err := RestoreSavepointFrom(ctx, loaded, Source{Topic: tp0.Topic, Partition: 0, TopicID: "other"}, filepath.Join(tmp, "rx"), false); !errors.Is(err, ErrForeignSource) {
		t.Fatalf("foreign topic id: %v", err)
	}
	// A damaged file fails the load, naming the file.
	p := loaded.Partitions[0]
	f := p.Files[len(p.Files)-1]
	for _, g := range p.Files {
		if strings.HasSuffix(g.Name, ".sst") {
			f = g
		}
	}
	flipByte(t, objectPath(srv, s, savepointObject(loaded, p, f)), f.Size/2)
	if _, err := s.LoadSavepoint(ctx, "pre-upgrade"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), f.Name) {
		t.Fatalf("load of a damaged savepoint: %v", err)
	}
	if err := s.DeleteSavepoint("pre-upgrade"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSavepoint("pre-upgrade"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if keys := objectKeys(t, s, savepointsDir+"/"); len(keys) != 0 {
		t.Fatalf("delete left %v", keys)
	}
	// Savepoints are not touched by GC.
	if _, err := s.Savepoint(ctx, "keep", parts, nil); err != nil {
		t.Fatal(err)
	}
	s0 := newS3(t, srv, "sp", Options{Grace: -1})
	if rep, err := s0.GC(ctx, false); err != nil || len(rep.Removed) != 0 {
		t.Fatalf("GC with a savepoint: %+v, %v", rep, err)
	}
	if _, err := s0.LoadSavepoint(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
}

// TestS3ServerKilledMidUpload: the server dies while a publish uploads;
// the publish fails, no half snapshot is ever listed, and a retry after
// the server is back succeeds.
func TestS3ServerKilledMidUpload(t *testing.T) {
	srv := s3test.Start(t)
	proxy := s3test.NewProxy(t, srv.Endpoint)
	tmp := t.TempDir()
	ctx := context.Background()
	cfg := s3Config(proxy.Endpoint, srv)
	cfg.Concurrency = 1
	s, err := OpenS3(ctx, srv.Location("kill"), cfg, Options{Mode: ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 200, "a", 100)
	m1, _ := publishTo(t, s, tp0, 200, stage(t, db, tmp))
	put(t, db, 200, 400, "b", 100)
	src := stage(t, db, tmp)

	proxy.SetDelay(300 * time.Millisecond)
	before := proxy.Requests.Load()
	done := make(chan error, 1)
	go func() {
		_, _, err := s.PublishFrom(ctx, Source{Topic: tp0.Topic, Partition: tp0.Partition}, 400, src, nil)
		done <- err
	}()
	// Kill the server once the publish has uploaded a file or two.
	for proxy.Requests.Load() < before+2 {
		select {
		case err := <-done:
			t.Fatalf("publish finished before the kill: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	srv.Kill()
	if err := <-done; err == nil {
		t.Fatal("publish succeeded although the server was killed during it")
	}
	proxy.SetDelay(0)
	srv.Restart()
	ms, err := s.List(tp0.Topic, tp0.Partition)
	if err != nil || len(ms) != 1 || ms[0].ID != m1.ID {
		t.Fatalf("after the failed publish: List = %v, %v", ms, err)
	}
	m2, _ := publishTo(t, s, tp0, 400, src)
	got, err := s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 1000}, filepath.Join(tmp, "r"))
	if err != nil || got.ID != m2.ID {
		t.Fatalf("restore = %s, %v; want %s", got.ID, err, m2.ID)
	}
	checkDB(t, filepath.Join(tmp, "r"), 400, expect{0, 200, "a", 100}, expect{200, 400, "b", 100})
}

// TestS3Throttled: a server answering 503 Slow Down fails a publish (after
// the client's few retries) and a restore cleanly; with latency, and once
// it recovers, both succeed.
func TestS3Throttled(t *testing.T) {
	srv := s3test.Start(t)
	proxy := s3test.NewProxy(t, srv.Endpoint)
	tmp := t.TempDir()
	ctx := context.Background()
	s, err := OpenS3(ctx, srv.Location("throttle"), s3Config(proxy.Endpoint, srv), Options{})
	if err != nil {
		t.Fatal(err)
	}
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 100, "a", 100)
	src := stage(t, db, tmp)
	proxy.SetFailing(true)
	if _, _, err := s.PublishFrom(ctx, Source{Topic: tp0.Topic, Partition: tp0.Partition}, 100, src, nil); err == nil || !strings.Contains(err.Error(), "reduce your request rate") {
		t.Fatalf("publish against a throttling server: %v", err)
	}
	if proxy.Failed.Load() < 2 {
		t.Fatalf("the client did not retry: %d refused requests", proxy.Failed.Load())
	}
	proxy.SetFailing(false)
	proxy.SetDelay(50 * time.Millisecond)
	m, _ := publishTo(t, s, tp0, 100, src)
	proxy.SetFailing(true)
	if _, err := s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 100}, filepath.Join(tmp, "r")); err == nil || errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("restore against a throttling server: %v (must fail, and not as 'no snapshot')", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "r")); !os.IsNotExist(err) {
		t.Fatalf("a failed restore left its destination: %v", err)
	}
	proxy.SetFailing(false)
	// A few refused requests are absorbed by the client's retries.
	proxy.FailNext(2)
	got, err := s.RestoreFrom(ctx, Want{Topic: tp0.Topic, Partition: tp0.Partition, MaxOffset: 100}, filepath.Join(tmp, "r"))
	if err != nil || got.ID != m.ID {
		t.Fatalf("restore = %s, %v", got.ID, err)
	}
	checkDB(t, filepath.Join(tmp, "r"), 100, expect{0, 100, "a", 100})
}

// TestS3ReusedPoolObjectRefreshed: a pool object older than half the grace
// period is copied onto itself before a new snapshot references it (so a
// GC elsewhere cannot take it in the meantime), not uploaded again.
func TestS3ReusedPoolObjectRefreshed(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	log, logs := observed()
	s := newS3(t, srv, "refresh", Options{Grace: time.Nanosecond, Logger: log})
	db := openDB(t, filepath.Join(tmp, "live"))
	defer db.Close()
	put(t, db, 0, 300, "a", 100)
	m1, _ := publishTo(t, s, tp0, 300, stage(t, db, tmp))
	info := func(f FileInfo) minio.ObjectInfo {
		o, err := srv.Client().StatObject(context.Background(), srv.Bucket, s.key(f.Pool), minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	var sst FileInfo
	for _, f := range m1.Files {
		if f.Pool != "" {
			sst = f
		}
	}
	if info(sst).UserMetadata["Txstream-Refreshed"] != "" {
		t.Fatal("a new pool object is marked refreshed")
	}
	m2, st := publishTo(t, s, tp0, 300, stage(t, db, tmp))
	for _, f := range m2.Files {
		if f.Pool != "" && f.Pool != sst.Pool {
			t.Fatalf("second snapshot references %s", f.Pool)
		}
	}
	if st.FilesCopied != st.Files-1 {
		t.Fatalf("publish uploaded %d of %d files; want all but the reused SST", st.FilesCopied, st.Files)
	}
	if info(sst).UserMetadata["Txstream-Refreshed"] == "" {
		t.Fatalf("reused pool object was not refreshed; logs: %v", logs.All())
	}
	if err := s.Verify(context.Background(), m2); err != nil {
		t.Fatal(err)
	}
}

// Members of a group start at the same time and open the same fresh
// prefix: each must find (or create) FORMAT, none may take the other's
// FORMAT for foreign data.
func TestS3OpenConcurrently(t *testing.T) {
	srv := s3test.Start(t)
	cfg := s3Config(srv.Endpoint, srv)
	for round := 0; round < 5; round++ {
		loc := srv.Location(fmt.Sprintf("together-%d", round))
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = OpenS3(context.Background(), loc, cfg, Options{})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, opener %d of %d: %v", round, i, len(errs), err)
			}
		}
	}
}
