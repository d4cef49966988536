package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"
)

// S3Store is checkpoint storage in a bucket of S3-compatible object
// storage, under a key prefix. The layout mirrors the directory's
// (docs/CHECKPOINTS.md, "Object storage"):
//
//	<prefix>/FORMAT                                        created with If-None-Match: *
//	<prefix>/partitions/<tp>/<id>/_snapshot.json           metadata, written last, If-None-Match: *
//	<prefix>/partitions/<tp>/<id>/<file>                   full mode: every file; incremental: mutable files
//	<prefix>/pool/<tp>/<name>.<crc32c>.<size>              incremental pool, content-addressed
//	<prefix>/savepoints/<name>/_savepoint.json             written last, If-None-Match: *
//	<prefix>/savepoints/<name>/<savepoint-id>/<tp>/<file>
//
// Object storage has no rename, so a snapshot is published by its
// metadata object alone: every file it names is uploaded first, the
// metadata last with a conditional write that never overwrites. A listing
// shows only snapshots whose metadata exists and validates; anything else
// under partitions/<tp>/<id>/ is torn and removed by GC once older than
// the grace period. It is safe for concurrent use like Store.
type S3Store struct {
	cl      *minio.Client
	bucket  string
	prefix  string // "" or "a/b" (no slashes at the ends)
	loc     string // s3://bucket[/prefix]
	mode    Mode
	retain  int
	grace   time.Duration
	conc    int
	timeout time.Duration
	log     *zap.Logger

	mu    sync.Mutex
	parts map[TopicPartition]*sync.Mutex

	cacheMu sync.Mutex
	cache   map[TopicPartition]map[fileKey]uint32

	spMu sync.Mutex
}

// OpenS3 opens the checkpoint storage at loc (s3://bucket/prefix). The
// bucket must exist. Like Open it creates the FORMAT object under an empty
// prefix (unless opts.MustExist) and refuses a prefix that holds other
// objects but no FORMAT.
func OpenS3(ctx context.Context, loc string, cfg S3Config, opts Options) (*S3Store, error) {
	bucket, prefix, err := ParseS3URL(loc)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode
	if mode == "" {
		mode = ModeIncremental
	}
	if !mode.valid() {
		return nil, fmt.Errorf("checkpoint: unknown snapshot mode %q (want %q, %q or %q)", opts.Mode, ModeFull, ModeIncremental, ModeChangelog)
	}
	retain := opts.Retain
	if retain == 0 {
		retain = DefaultRetain
	}
	grace := opts.Grace
	if grace == 0 {
		grace = DefaultGrace
	} else if grace < 0 {
		grace = 0
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	cl, err := cfg.newClient()
	if err != nil {
		return nil, err
	}
	canon := "s3://" + bucket
	if prefix != "" {
		canon += "/" + prefix
	}
	s := &S3Store{cl: cl, bucket: bucket, prefix: prefix, loc: canon, mode: mode, retain: retain, grace: grace,
		conc: cfg.concurrency(), timeout: cfg.timeout(), log: log.With(zap.String("checkpoint_dir", canon)),
		parts: make(map[TopicPartition]*sync.Mutex), cache: make(map[TopicPartition]map[fileKey]uint32)}
	if err := s.init(ctx, opts.MustExist); err != nil {
		return nil, err
	}
	return s, nil
}

// Location implements Storage.
func (s *S3Store) Location() string { return s.loc }

// Mode implements Storage.
func (s *S3Store) Mode() Mode { return s.mode }

func (s *S3Store) key(rel string) string {
	if s.prefix == "" {
		return rel
	}
	return s.prefix + "/" + rel
}

func (s *S3Store) rel(key string) string {
	if s.prefix == "" {
		return key
	}
	return strings.TrimPrefix(key, s.prefix+"/")
}

func (s *S3Store) url(rel string) string { return s.loc + "/" + rel }

func (s *S3Store) partLock(tp TopicPartition) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.parts[tp]
	if l == nil {
		l = new(sync.Mutex)
		s.parts[tp] = l
	}
	return l
}

func (s *S3Store) init(ctx context.Context, mustExist bool) error {
	exists, err := s.bucketExists(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint: %s: %w", s.loc, err)
	}
	if !exists {
		return fmt.Errorf("%w: %s: bucket %s does not exist (create it first)", ErrNotCheckpointDir, s.loc, s.bucket)
	}
	for attempt := 0; ; attempt++ {
		var doc formatDoc
		err := s.getJSON(ctx, formatFile, &doc)
		if err == nil {
			if doc.Format != FormatName {
				return fmt.Errorf("%w: %s: %s says format %q, want %q", ErrNotCheckpointDir, s.loc, formatFile, doc.Format, FormatName)
			}
			if doc.Version != FormatVersion {
				return fmt.Errorf("%w: %s has format version %d, this binary supports version %d",
					ErrUnsupportedFormat, s.loc, doc.Version, FormatVersion)
			}
			return nil
		}
		if errors.Is(err, errBadJSON) {
			return fmt.Errorf("%w: %s: %s is not valid JSON: %w", ErrNotCheckpointDir, s.loc, formatFile, err)
		}
		if !isNotFound(err) {
			return fmt.Errorf("checkpoint: %s: read %s: %w", s.loc, formatFile, err)
		}
		if mustExist {
			return fmt.Errorf("%w: %s has no %s object", ErrNotCheckpointDir, s.loc, formatFile)
		}
		if attempt > 0 {
			// The store said FORMAT exists (our conditional write lost,
			// or a listing showed it) yet a read does not find it. Some
			// S3-compatible stores answer a conditional write from
			// metadata published before the object's data (versitygw
			// with sidecar metadata does): give it a moment, then call
			// it gone.
			if attempt >= formatReadAttempts {
				return fmt.Errorf("checkpoint: %s: %s vanished after it was created (not readable after %d attempts)",
					s.loc, formatFile, attempt)
			}
			if err := sleepCtx(ctx, time.Duration(10<<attempt)*time.Millisecond); err != nil {
				return fmt.Errorf("checkpoint: %s: wait for %s: %w", s.loc, formatFile, err)
			}
			continue
		}
		objs, err := s.list(ctx, "", true, 1)
		if err != nil {
			return fmt.Errorf("checkpoint: %s: %w", s.loc, err)
		}
		found := ""
		for _, o := range objs {
			if r := s.rel(o.Key); !strings.HasPrefix(r, tmpPrefix) {
				found = r
				break
			}
		}
		if found == formatFile {
			// Another process (a second member starting at the same
			// time) created it since the read above: read it again.
			continue
		}
		if found != "" {
			return fmt.Errorf("%w: %s is not empty and has no %s object (found %q); refusing to use it",
				ErrNotCheckpointDir, s.loc, formatFile, found)
		}
		b, err := json.MarshalIndent(formatDoc{Format: FormatName, Version: FormatVersion, CreatedAt: time.Now().UTC()}, "", "  ")
		if err != nil {
			return err
		}
		err = s.putNew(ctx, formatFile, append(b, '\n'))
		if err != nil && !errors.Is(err, errExists) {
			return fmt.Errorf("checkpoint: %s: write %s: %w", s.loc, formatFile, err)
		}
		// Created, or another process created it first: read it back.
	}
}

// formatReadAttempts bounds the reads of a FORMAT object the store says
// exists: waits of 20 ms doubling, about 5 s in all.
const formatReadAttempts = 9

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *S3Store) bucketExists(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.cl.BucketExists(ctx, s.bucket)
}

// errExists is returned by putNew when the object exists.
var errExists = errors.New("object exists")

// s3Error finds the server's error answer in err's chain.
func s3Error(err error) minio.ErrorResponse {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r
	}
	return minio.ErrorResponse{}
}

func isNotFound(err error) bool {
	r := s3Error(err)
	return r.Code == minio.NoSuchKey || r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket
}

func isPreconditionFailed(err error) bool {
	r := s3Error(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// putNew writes a small object only if no object has its key
// (If-None-Match: *), which makes the write of metadata a publication
// that never replaces anything. An existing object is errExists. A retry
// of the request by the client after a lost answer can see its own write:
// if the object holds exactly data, that is success.
func (s *S3Store) putNew(ctx context.Context, rel string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	opts := minio.PutObjectOptions{ContentType: "application/json"}
	opts.SetMatchETagExcept("*")
	_, err := s.cl.PutObject(ctx, s.bucket, s.key(rel), bytes.NewReader(data), int64(len(data)), opts)
	if err == nil {
		return nil
	}
	if !isPreconditionFailed(err) {
		return err
	}
	if got, gerr := s.getSmall(ctx, rel); gerr == nil && bytes.Equal(got, data) {
		return nil
	}
	return fmt.Errorf("%w: %s", errExists, s.url(rel))
}

// getSmall reads a metadata-sized object.
func (s *S3Store) getSmall(ctx context.Context, rel string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	obj, err := s.cl.GetObject(ctx, s.bucket, s.key(rel), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, maxMetaBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetaBytes {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", errBadJSON, s.url(rel), maxMetaBytes)
	}
	return b, nil
}

func (s *S3Store) getJSON(ctx context.Context, rel string, v any) error {
	b, err := s.getSmall(ctx, rel)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", errBadJSON, s.url(rel), err)
	}
	return nil
}

// list returns the objects under rel (a "dir/" prefix, or "" for all),
// recursively or one level (common prefixes are returned as keys ending
// in "/"). max > 0 stops after that many.
func (s *S3Store) list(ctx context.Context, rel string, recursive bool, max int) ([]minio.ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pfx := s.key(rel)
	if rel == "" && s.prefix != "" {
		pfx = s.prefix + "/"
	}
	var out []minio.ObjectInfo
	for o := range s.cl.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: pfx, Recursive: recursive}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list %s: %w", s.url(rel), o.Err)
		}
		out = append(out, o)
		if max > 0 && len(out) >= max {
			break
		}
	}
	return out, nil
}

func (s *S3Store) remove(ctx context.Context, rel string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.cl.RemoveObject(ctx, s.bucket, s.key(rel), minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("remove %s: %w", s.url(rel), err)
	}
	return nil
}

// Partitions implements Storage.
func (s *S3Store) Partitions() ([]TopicPartition, error) {
	tps, err := s.listTPs(context.Background(), partitionsDir)
	if err != nil {
		return nil, err
	}
	sortTPs(tps)
	return tps, nil
}

func (s *S3Store) listTPs(ctx context.Context, dir string) ([]TopicPartition, error) {
	objs, err := s.list(ctx, dir+"/", false, 0)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var out []TopicPartition
	for _, o := range objs {
		r := s.rel(o.Key)
		if !strings.HasSuffix(r, "/") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(r, dir+"/"), "/")
		tp, ok := parseTPDir(name)
		if !ok {
			s.log.Warn("checkpoint: ignoring unexpected prefix", zap.String("key", o.Key))
			continue
		}
		out = append(out, tp)
	}
	return out, nil
}

func partRel(tp TopicPartition) string { return partitionsDir + "/" + tp.String() + "/" }
func poolRel(tp TopicPartition) string { return poolDirName + "/" + tp.String() + "/" }

// s3Snap is what one partitions/<tp>/<id>/ prefix holds.
type s3Snap struct {
	id      string
	objs    []minio.ObjectInfo // every object under the prefix, metadata included
	hasMeta bool
	newest  time.Time
}

func (g *s3Snap) bytes() int64 {
	var n int64
	for _, o := range g.objs {
		n += o.Size
	}
	return n
}

type s3Scan struct {
	metas []Meta // newest first
	snaps map[string]*s3Snap
	torn  []tornEntry // path: the snapshot's prefix, relative
}

// scanPartition lists tp's snapshot prefixes and reads their metadata.
func (s *S3Store) scanPartition(ctx context.Context, tp TopicPartition) (s3Scan, error) {
	sc := s3Scan{snaps: map[string]*s3Snap{}}
	base := partRel(tp)
	objs, err := s.list(ctx, base, true, 0)
	if err != nil {
		return sc, fmt.Errorf("checkpoint: list %s: %w", tp, err)
	}
	var ids []string
	for _, o := range objs {
		r := strings.TrimPrefix(s.rel(o.Key), base)
		id, file, ok := strings.Cut(r, "/")
		if !ok {
			id, file = r, "" // an object named like a snapshot: torn
		}
		g := sc.snaps[id]
		if g == nil {
			g = &s3Snap{id: id}
			sc.snaps[id] = g
			ids = append(ids, id)
		}
		g.objs = append(g.objs, o)
		if file == metaFile {
			g.hasMeta = true
		}
		if o.LastModified.After(g.newest) {
			g.newest = o.LastModified
		}
	}
	for _, id := range ids {
		g := sc.snaps[id]
		path := base + id
		if !g.hasMeta {
			sc.torn = append(sc.torn, tornEntry{name: id, path: path, mtime: g.newest, err: fmt.Errorf("metadata object %s missing", metaFile)})
			continue
		}
		var m Meta
		err := s.getJSON(ctx, path+"/"+metaFile, &m)
		switch {
		case isNotFound(err):
			continue // removed concurrently (retention in another process)
		case errors.Is(err, errBadJSON):
			sc.torn = append(sc.torn, tornEntry{name: id, path: path, mtime: g.newest, err: err})
			continue
		case err != nil:
			return sc, fmt.Errorf("checkpoint: read snapshot %s/%s metadata: %w", tp, id, err)
		}
		if err := validateMeta(m, tp); err != nil {
			sc.torn = append(sc.torn, tornEntry{name: id, path: path, mtime: g.newest, err: fmt.Errorf("metadata invalid: %w", err)})
			continue
		}
		if m.ID != id {
			sc.torn = append(sc.torn, tornEntry{name: id, path: path, mtime: g.newest,
				err: fmt.Errorf("metadata id %q does not match prefix %q", m.ID, id)})
			continue
		}
		m.Dir = s.url(path)
		sc.metas = append(sc.metas, m)
	}
	sortMetas(sc.metas)
	return sc, nil
}

// List implements Storage: the snapshots whose metadata object exists and
// validates, newest first. Checksums are not verified (see Verify).
func (s *S3Store) List(topic string, partition int32) ([]Meta, error) {
	tp := TopicPartition{Topic: topic, Partition: partition}
	if err := validateTP(tp); err != nil {
		return nil, err
	}
	sc, err := s.scanPartition(context.Background(), tp)
	if err != nil {
		return nil, err
	}
	return sc.metas, nil
}

// objectOf returns the key (relative to the prefix) of a snapshot's file.
func snapObject(m Meta, f FileInfo) string {
	if f.Pool != "" {
		return f.Pool
	}
	return partRel(TopicPartition{Topic: m.Topic, Partition: m.Partition}) + m.ID + "/" + f.Name
}

// forEach runs fn for i in [0, n) on at most conc goroutines and returns
// the first error (fn sees a cancelled context after one failed).
func forEach(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, conc)
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// sortSavepoints orders savepoints newest first.
func sortSavepoints(out []SavepointMeta) {
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
}
