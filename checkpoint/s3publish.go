package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

// PublishFrom implements Storage. Files are uploaded in parallel (at most
// S3Config.Concurrency at a time): in incremental mode the immutable ones
// to the content-addressed pool unless it already holds them, every other
// file under the snapshot's own prefix. The metadata object is written
// last, with If-None-Match: *; only then is the snapshot listed. A
// failure before that leaves objects that no metadata names: the snapshot
// is not published, its private objects are removed (or, if that fails
// too, by GC once older than the grace period) and new pool objects stay
// for the retry to reuse. After a successful publish the retention and GC
// of the partition run; their failures are logged, not returned.
func (s *S3Store) PublishFrom(ctx context.Context, src Source, offset int64, srcDir string, job map[string]string) (Meta, PublishStats, error) {
	return publishPartition(ctx, s, s.log, s.loc, src, offset, srcDir, job)
}

func (s *S3Store) publishLocked(ctx context.Context, from Source, offset int64, src []srcFile, job map[string]string) (Meta, PublishStats, error) {
	var st PublishStats
	tp := TopicPartition{Topic: from.Topic, Partition: from.Partition}
	created := time.Now().UTC()
	id := newSnapshotID(offset, created)
	snapDir := partRel(tp) + id + "/"
	incremental := s.mode.pooled()

	pool := map[string]minio.ObjectInfo{}
	var oldCache map[fileKey]uint32
	if incremental {
		objs, err := s.list(ctx, poolRel(tp), true, 0)
		if err != nil {
			return Meta{}, st, fmt.Errorf("pool: %w", err)
		}
		for _, o := range objs {
			pool[strings.TrimPrefix(s.rel(o.Key), poolRel(tp))] = o
		}
		s.cacheMu.Lock()
		oldCache = maps.Clone(s.cache[tp])
		s.cacheMu.Unlock()
	}

	infos := make([]FileInfo, len(src))
	var (
		stMu     sync.Mutex
		private  []string // objects written under snapDir
		newCache = make(map[fileKey]uint32, len(src))
	)
	err := forEach(ctx, len(src), s.conc, func(ctx context.Context, i int) error {
		f := src[i]
		crc, known := oldCache[f.key]
		var hashed int64
		if !known {
			n, c, err := hashFile(ctx, f.path)
			if err != nil {
				return fmt.Errorf("hash %s: %w", f.path, err)
			}
			if n != f.size {
				return fmt.Errorf("source file %s changed while hashing (size %d, then %d)", f.path, f.size, n)
			}
			crc, hashed = c, n
		}
		fi := FileInfo{Name: f.name, Size: f.size, CRC32C: crc}
		var rel string
		upload := true
		if incremental && isImmutable(f.name) {
			pn := poolName(f.name, crc, f.size)
			fi.Pool = poolRef(tp, pn)
			rel = fi.Pool
			if o, ok := pool[pn]; ok && o.Size == f.size {
				upload = !s.reusePoolObject(ctx, rel, o)
			}
		} else {
			rel = snapDir + f.name
		}
		if upload {
			if err := s.uploadFile(ctx, rel, f); err != nil {
				return err
			}
		}
		stMu.Lock()
		defer stMu.Unlock()
		infos[i] = fi
		if incremental && isImmutable(f.name) {
			newCache[f.key] = crc
			if !known && !upload {
				st.BytesHashed += hashed // hashed only to find it in the pool
			}
		}
		if upload {
			st.FilesCopied++
			st.BytesWritten += f.size
			if fi.Pool == "" {
				private = append(private, rel)
			}
		}
		faults.Hit(faults.SnapshotCopy) // crash tests: a torn snapshot
		return nil
	})
	if err != nil {
		s.removeQuietly(private)
		return Meta{}, st, err
	}
	for _, fi := range infos {
		st.Files++
		st.TotalBytes += fi.Size
	}
	m := Meta{
		Format:    FormatVersion,
		ID:        id,
		Topic:     tp.Topic,
		Partition: tp.Partition,
		TopicID:   from.TopicID,
		ClusterID: from.ClusterID,
		Offset:    offset,
		Mode:      s.mode,
		CreatedAt: created,
		Files:     infos,
		Job:       maps.Clone(job),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Meta{}, st, err
	}
	b = append(b, '\n')
	faults.Hit(faults.SnapshotPublish) // crash tests: files written, no metadata
	// From here on nothing is removed on failure: an answer lost after the
	// server stored the metadata would otherwise leave a listed snapshot
	// without its files. GC removes a torn prefix after the grace period.
	if err := s.putNew(ctx, snapDir+metaFile, b); err != nil {
		return Meta{}, st, fmt.Errorf("write metadata: %w", err)
	}
	st.BytesWritten += int64(len(b))
	m.Dir = s.url(partRel(tp) + id)
	if incremental {
		s.cacheMu.Lock()
		s.cache[tp] = newCache
		s.cacheMu.Unlock()
	}
	return m, st, nil
}

// uploadFile uploads a local file to rel. Large files go as a multipart
// upload in parts read straight from the file (no part buffers).
func (s *S3Store) uploadFile(ctx context.Context, rel string, f srcFile) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", f.name, err)
	}
	defer fh.Close()
	_, err = s.cl.PutObject(ctx, s.bucket, s.key(rel), io.NewSectionReader(fh, 0, f.size), f.size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: s3PartSize})
	if err != nil {
		return fmt.Errorf("upload %s to %s: %w", f.name, s.url(rel), err)
	}
	return nil
}

// reusePoolObject decides whether an existing pool object can be
// referenced. An object older than half the grace period is copied onto
// itself first (which renews its modification time), so that a GC in
// another process, which spares objects younger than the grace period,
// cannot remove it before this publish's metadata references it. When
// the copy fails the caller uploads the file again.
func (s *S3Store) reusePoolObject(ctx context.Context, rel string, o minio.ObjectInfo) bool {
	if time.Since(o.LastModified) < s.grace/2 {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.cl.CopyObject(cctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(rel), ReplaceMetadata: true,
			UserMetadata: map[string]string{"Txstream-Refreshed": time.Now().UTC().Format(time.RFC3339)}},
		minio.CopySrcOptions{Bucket: s.bucket, Object: s.key(rel)})
	if err != nil {
		s.log.Debug("checkpoint: cannot refresh pool object, uploading it again", zap.String("object", s.url(rel)), zap.Error(err))
		return false
	}
	return true
}

func (s *S3Store) removeQuietly(rels []string) {
	for _, r := range rels {
		if err := s.remove(context.Background(), r); err != nil {
			s.log.Debug("checkpoint: cannot remove object of a failed publish; GC will", zap.String("object", s.url(r)), zap.Error(err))
		}
	}
}

// RestoreFrom implements Storage; it behaves like (*Store).RestoreFrom.
// Files are downloaded in parallel (at most S3Config.Concurrency at a
// time) into a local directory, each verified (size and CRC32C) while it
// is written. A missing or corrupt object skips the snapshot for the next
// older one; any other failure (network, server) is returned.
func (s *S3Store) RestoreFrom(ctx context.Context, w Want, dstDir string) (Meta, error) {
	tp := TopicPartition{Topic: w.Topic, Partition: w.Partition}
	if err := validateTP(tp); err != nil {
		return Meta{}, err
	}
	want := w.source()
	l := s.partLock(tp)
	l.Lock()
	defer l.Unlock()

	sc, err := s.scanPartition(ctx, tp)
	if err != nil {
		return Meta{}, err
	}
	for _, t := range sc.torn {
		s.log.Warn("checkpoint: skipping torn snapshot",
			zap.String("partition", tp.String()), zap.String("snapshot", t.name), zap.String("file", metaFile), zap.Error(t.err))
	}
	cands, foreign := restoreCandidates(s.log, tp, sc.metas, w)
	if len(cands) == 0 {
		if foreign > 0 {
			return Meta{}, fmt.Errorf("%w: %s: no snapshot with offset <= %d of topic id %q cluster id %q (%d published, %d torn, %d skipped: %w)",
				ErrNoSnapshot, tp, w.MaxOffset, want.TopicID, want.ClusterID, len(sc.metas), len(sc.torn), foreign, ErrForeignSource)
		}
		return Meta{}, fmt.Errorf("%w: %s: no snapshot with offset <= %d (%d published, %d torn)",
			ErrNoSnapshot, tp, w.MaxOffset, len(sc.metas), len(sc.torn))
	}
	dst, err := prepareDst(dstDir)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint: restore %s: %w", tp, err)
	}
	for _, m := range cands {
		err := s.download(ctx, "snapshot "+m.ID, m.Files, func(f FileInfo) string { return snapObject(m, f) }, dst.into)
		if err == nil {
			if err := dst.finish(); err != nil {
				dst.abort()
				return Meta{}, fmt.Errorf("checkpoint: restore %s: %w", tp, err)
			}
			s.seedCache(tp, m, dst.final)
			if unchecked := uncheckedIDs(m.Source(), want); len(unchecked) > 0 {
				s.log.Info("checkpoint: restored snapshot records no "+strings.Join(unchecked, " or ")+": cannot check that it comes from this topic incarnation and cluster",
					zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset))
			}
			s.log.Debug("checkpoint: snapshot restored", zap.String("partition", tp.String()),
				zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset), zap.Int64("bytes", m.Bytes()))
			return m, nil
		}
		if ctx.Err() != nil {
			dst.abort()
			return Meta{}, fmt.Errorf("checkpoint: restore %s: %w", tp, ctx.Err())
		}
		var ce *corruptError
		if !errors.As(err, &ce) {
			dst.abort()
			return Meta{}, fmt.Errorf("checkpoint: restore %s snapshot %s from %s: %w", tp, m.ID, s.loc, err)
		}
		s.log.Warn("checkpoint: skipping unusable snapshot",
			zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset),
			zap.String("file", ce.file), zap.String("path", ce.path), zap.Error(ce.err))
		if ce.mismatch {
			s.quarantine(ctx, tp, m, ce.file)
		}
		if err := dst.clear(); err != nil {
			dst.abort()
			return Meta{}, fmt.Errorf("checkpoint: restore %s: clean destination: %w", tp, err)
		}
	}
	dst.abort()
	if foreign > 0 {
		return Meta{}, fmt.Errorf("%w: %s: all %d matching snapshots with offset <= %d have missing or corrupt files (%d skipped: %w)",
			ErrNoSnapshot, tp, len(cands), w.MaxOffset, foreign, ErrForeignSource)
	}
	return Meta{}, fmt.Errorf("%w: %s: all %d snapshots with offset <= %d have missing or corrupt files",
		ErrNoSnapshot, tp, len(cands), w.MaxOffset)
}

// restoreCandidates filters metas (newest first) to those RestoreFrom may
// use, logging the skipped ones; foreign counts snapshots of another
// topic incarnation or cluster.
func restoreCandidates(log *zap.Logger, tp TopicPartition, metas []Meta, w Want) (cands []Meta, foreign int) {
	want := w.source()
	for _, m := range metas {
		if m.Offset > w.MaxOffset {
			log.Warn("checkpoint: skipping snapshot ahead of the committed offset",
				zap.String("partition", tp.String()), zap.String("snapshot", m.ID),
				zap.Int64("offset", m.Offset), zap.Int64("max_offset", w.MaxOffset))
			continue
		}
		if err := CheckSource("snapshot "+m.ID, m.Source(), want); err != nil {
			foreign++
			log.Warn("checkpoint: skipping snapshot of another topic incarnation or cluster",
				zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset),
				zap.String("topic_id", m.TopicID), zap.String("cluster_id", m.ClusterID),
				zap.String("expected_topic_id", want.TopicID), zap.String("expected_cluster_id", want.ClusterID))
			continue
		}
		cands = append(cands, m)
	}
	return cands, foreign
}

// download fetches files into dir (nil dir: only hash them) in parallel,
// verifying the size and CRC32C of each. A missing object or a mismatch
// is a *corruptError; other failures are returned as they are.
func (s *S3Store) download(ctx context.Context, what string, files []FileInfo, object func(FileInfo) string, dir string) error {
	return forEach(ctx, len(files), s.conc, func(ctx context.Context, i int) error {
		f := files[i]
		rel := object(f)
		obj, err := s.cl.GetObject(ctx, s.bucket, s.key(rel), minio.GetObjectOptions{})
		if err != nil {
			return fmt.Errorf("get %s: %w", s.url(rel), err)
		}
		defer obj.Close()
		var out io.Writer
		var fh *os.File
		dst := ""
		if dir != "" {
			dst = filepath.Join(dir, f.Name)
			fh, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
			if err != nil {
				return fmt.Errorf("write %s: %w", dst, err)
			}
			defer fh.Close()
			out = fh
		}
		// Read one byte past the expected size to catch a longer object.
		n, crc, err := crcCopy(ctx, out, io.LimitReader(obj, f.Size+1))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isReadError(err) {
				if isNotFound(err) {
					return &corruptError{what: what, file: f.Name, path: s.url(rel), err: errors.New("object missing")}
				}
				return fmt.Errorf("get %s: %w", s.url(rel), err)
			}
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if fh != nil {
			if err := fh.Close(); err != nil {
				return fmt.Errorf("write %s: %w", dst, err)
			}
		}
		if n != f.Size || crc != f.CRC32C {
			if dst != "" {
				os.Remove(dst)
			}
			return &corruptError{what: what, file: f.Name, path: s.url(rel), mismatch: true,
				err: fmt.Errorf("size %d crc32c %08x, want size %d crc32c %08x", n, crc, f.Size, f.CRC32C)}
		}
		return nil
	})
}

// quarantine moves a pool object whose content does not match its name
// (checked again by reading it) to pool/<tp>/.tmp-corrupt-..., so the next
// publish uploads the file again instead of referencing the damaged copy.
func (s *S3Store) quarantine(ctx context.Context, tp TopicPartition, m Meta, file string) {
	for _, f := range m.Files {
		if f.Name != file || f.Pool == "" {
			continue
		}
		err := s.download(ctx, "snapshot "+m.ID, []FileInfo{f}, func(FileInfo) string { return f.Pool }, "")
		var ce *corruptError
		if !errors.As(err, &ce) || !ce.mismatch {
			return
		}
		q := poolRel(tp) + corruptPrefix + strings.TrimPrefix(f.Pool, poolRel(tp)) + "-" + randSuffix()
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		_, err = s.cl.CopyObject(cctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(q)},
			minio.CopySrcOptions{Bucket: s.bucket, Object: s.key(f.Pool)})
		cancel()
		if err == nil {
			err = s.remove(ctx, f.Pool)
		}
		if err != nil {
			s.log.Warn("checkpoint: cannot quarantine corrupt pool object", zap.String("object", s.url(f.Pool)), zap.Error(err))
			return
		}
		s.log.Warn("checkpoint: corrupt pool object quarantined; the next snapshot uploads it again",
			zap.String("partition", tp.String()), zap.String("object", s.url(f.Pool)), zap.String("moved_to", s.url(q)))
	}
}

// seedCache is (*Store).seedCache for this store's cache.
func (s *S3Store) seedCache(tp TopicPartition, m Meta, dir string) {
	if !m.Mode.pooled() && !s.mode.pooled() {
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	c := s.cache[tp]
	if c == nil {
		c = make(map[fileKey]uint32)
		s.cache[tp] = c
	}
	for _, f := range m.Files {
		if !isImmutable(f.Name) {
			continue
		}
		if info, err := os.Stat(filepath.Join(dir, f.Name)); err == nil && info.Size() == f.Size {
			c[makeFileKey(f.Name, info)] = f.CRC32C
		}
	}
}

// Verify implements Storage: every file of m is read (in parallel) and its
// size and CRC32C checked. A pool object whose content does not match its
// name is quarantined.
func (s *S3Store) Verify(ctx context.Context, m Meta) error {
	tp := TopicPartition{Topic: m.Topic, Partition: m.Partition}
	if err := validateTP(tp); err != nil {
		return err
	}
	what := "snapshot " + m.ID
	if err := validateMeta(m, tp); err != nil {
		return fmt.Errorf("%w: %s: metadata invalid: %w", ErrCorrupt, what, err)
	}
	err := s.download(ctx, what, m.Files, func(f FileInfo) string { return snapObject(m, f) }, "")
	var ce *corruptError
	if errors.As(err, &ce) && ce.mismatch {
		l := s.partLock(tp)
		l.Lock()
		s.quarantine(ctx, tp, m, ce.file)
		l.Unlock()
	}
	return err
}
