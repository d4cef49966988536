package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// metaError marks snapshot metadata that is missing, unparseable or invalid:
// the snapshot is torn. Other errors reading metadata are I/O errors and
// must not make GC treat the snapshot as garbage.
type metaError struct{ err error }

func (e *metaError) Error() string { return e.err.Error() }
func (e *metaError) Unwrap() error { return e.err }

// corruptError reports an unusable file of a snapshot or savepoint. It
// matches ErrCorrupt and its cause with errors.Is.
type corruptError struct {
	what     string // "snapshot <id>" or "savepoint <name>"
	file     string // file name in the snapshot
	path     string // where it was read from
	mismatch bool   // the file was read completely and its size or checksum is wrong
	err      error
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("checkpoint: %s: file %s (%s): %v", e.what, e.file, e.path, e.err)
}
func (e *corruptError) Unwrap() []error { return []error{ErrCorrupt, e.err} }

type tornEntry struct {
	name, path string
	mtime      time.Time
	err        error
}

type tempEntry struct {
	name, path string
	mtime      time.Time
}

type partScan struct {
	metas []Meta // newest first
	torn  []tornEntry
	temps []tempEntry
}

// scanPartition reads the metadata of every snapshot directory of tp.
func (s *Store) scanPartition(tp TopicPartition) (partScan, error) {
	var sc partScan
	dir := s.partDir(tp)
	ents, err := readDirIfExists(dir)
	if err != nil {
		return sc, fmt.Errorf("checkpoint: list %s: %w", tp, err)
	}
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed concurrently
		}
		if err != nil {
			return sc, fmt.Errorf("checkpoint: list %s: %w", tp, err)
		}
		if strings.HasPrefix(name, tmpPrefix) {
			sc.temps = append(sc.temps, tempEntry{name: name, path: p, mtime: info.ModTime()})
			continue
		}
		if !e.IsDir() {
			sc.torn = append(sc.torn, tornEntry{name: name, path: p, mtime: info.ModTime(), err: errors.New("not a directory")})
			continue
		}
		m, err := s.loadMeta(tp, p)
		if err != nil {
			if _, serr := os.Stat(p); errors.Is(serr, fs.ErrNotExist) {
				continue // removed concurrently (retention in another process)
			}
			var me *metaError
			if !errors.As(err, &me) {
				return sc, fmt.Errorf("checkpoint: read snapshot %s/%s metadata: %w", tp, name, err)
			}
			sc.torn = append(sc.torn, tornEntry{name: name, path: p, mtime: info.ModTime(), err: err})
			continue
		}
		sc.metas = append(sc.metas, m)
	}
	sortMetas(sc.metas)
	return sc, nil
}

// sortMetas orders snapshots newest first: by offset, then creation time,
// then ID.
func sortMetas(ms []Meta) {
	sort.SliceStable(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if a.Offset != b.Offset {
			return a.Offset > b.Offset
		}
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.ID > b.ID
	})
}

// loadMeta reads and validates the metadata of snapshot directory dir.
// Missing, unparseable or invalid metadata is a *metaError.
func (s *Store) loadMeta(tp TopicPartition, dir string) (Meta, error) {
	var m Meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Meta{}, &metaError{fmt.Errorf("metadata file %s missing", metaFile)}
		}
		if errors.Is(err, errBadJSON) {
			return Meta{}, &metaError{err}
		}
		return Meta{}, err
	}
	m.Dir = dir
	if err := validateMeta(m, tp); err != nil {
		return Meta{}, &metaError{fmt.Errorf("metadata invalid: %w", err)}
	}
	if m.ID != filepath.Base(dir) {
		return Meta{}, &metaError{fmt.Errorf("metadata id %q does not match directory %q", m.ID, filepath.Base(dir))}
	}
	return m, nil
}

// List returns the published snapshots of one partition, newest first (by
// offset, then creation time). A snapshot is published when its metadata
// file is present and valid; checksums are not verified (see Verify).
func (s *Store) List(topic string, partition int32) ([]Meta, error) {
	tp := TopicPartition{Topic: topic, Partition: partition}
	if err := validateTP(tp); err != nil {
		return nil, err
	}
	sc, err := s.scanPartition(tp)
	if err != nil {
		return nil, err
	}
	return sc.metas, nil
}

// Restore is RestoreFrom without an expected identity: the newest verified
// snapshot of topic/partition with Offset <= maxOffset, whatever topic
// incarnation or cluster it was taken from.
func (s *Store) Restore(ctx context.Context, topic string, partition int32, maxOffset int64, dstDir string) (Meta, error) {
	return s.RestoreFrom(ctx, Want{Topic: topic, Partition: partition, MaxOffset: maxOffset}, dstDir)
}

// RestoreFrom materialises into dstDir the newest snapshot of
// w.Topic/w.Partition with Offset <= w.MaxOffset whose identity matches w
// and whose files all exist and verify. dstDir must not exist (it is then
// created atomically: files go to a .tmp-restore- sibling that is renamed
// into place) or be an empty directory. Every file is copied with its size
// and CRC32C verified in the same pass.
//
// A snapshot that recorded a topic id or cluster id other than a non-empty
// w.TopicID or w.ClusterID was taken from another incarnation of the topic
// or another cluster: it is skipped with a warning naming the snapshot, its
// ids and the expected ones, and the next older one is tried. A snapshot
// without ids (written before they were recorded) is usable; restoring one
// while ids are expected is logged at info level. A torn snapshot (no valid
// metadata) or one with a missing or corrupt file is skipped with a warning
// naming the snapshot and the file. ErrNoSnapshot (errors.Is) means none is
// usable; if snapshots were skipped as foreign, the error also matches
// ErrForeignSource, so that a caller can refuse to start empty in that case.
func (s *Store) RestoreFrom(ctx context.Context, w Want, dstDir string) (Meta, error) {
	tp := TopicPartition{Topic: w.Topic, Partition: w.Partition}
	if err := validateTP(tp); err != nil {
		return Meta{}, err
	}
	maxOffset := w.MaxOffset
	want := w.source()
	l := s.partLock(tp)
	l.Lock()
	defer l.Unlock()

	sc, err := s.scanPartition(tp)
	if err != nil {
		return Meta{}, err
	}
	for _, t := range sc.torn {
		s.log.Warn("checkpoint: skipping torn snapshot",
			zap.String("partition", tp.String()), zap.String("snapshot", t.name), zap.String("file", metaFile), zap.Error(t.err))
	}
	var cands []Meta
	foreign := 0
	for _, m := range sc.metas {
		if m.Offset > maxOffset {
			s.log.Warn("checkpoint: skipping snapshot ahead of the committed offset",
				zap.String("partition", tp.String()), zap.String("snapshot", m.ID),
				zap.Int64("offset", m.Offset), zap.Int64("max_offset", maxOffset))
			continue
		}
		if err := CheckSource("snapshot "+m.ID, m.Source(), want); err != nil {
			foreign++
			s.log.Warn("checkpoint: skipping snapshot of another topic incarnation or cluster",
				zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset),
				zap.String("topic_id", m.TopicID), zap.String("cluster_id", m.ClusterID),
				zap.String("expected_topic_id", want.TopicID), zap.String("expected_cluster_id", want.ClusterID))
			continue
		}
		cands = append(cands, m)
	}
	if len(cands) == 0 {
		if foreign > 0 {
			return Meta{}, fmt.Errorf("%w: %s: no snapshot with offset <= %d of topic id %q cluster id %q (%d published, %d torn, %d skipped: %w)",
				ErrNoSnapshot, tp, maxOffset, want.TopicID, want.ClusterID, len(sc.metas), len(sc.torn), foreign, ErrForeignSource)
		}
		return Meta{}, fmt.Errorf("%w: %s: no snapshot with offset <= %d (%d published, %d torn)",
			ErrNoSnapshot, tp, maxOffset, len(sc.metas), len(sc.torn))
	}

	dst, err := prepareDst(dstDir)
	if err != nil {
		return Meta{}, fmt.Errorf("checkpoint: restore %s: %w", tp, err)
	}
	for _, m := range cands {
		err := materialize(ctx, s.log, "snapshot "+m.ID, m.Files, func(f FileInfo) string { return s.filePath(m, f) }, dst.into)
		if err == nil {
			if err := dst.finish(); err != nil {
				dst.abort()
				return Meta{}, fmt.Errorf("checkpoint: restore %s: %w", tp, err)
			}
			s.seedCache(tp, m, dst.final)
			if unchecked := uncheckedIDs(m.Source(), want); len(unchecked) > 0 {
				s.log.Info("checkpoint: restored snapshot records no "+strings.Join(unchecked, " or ")+" (written before ids were recorded, or by a publisher that did not know them): cannot check that it comes from this topic incarnation and cluster",
					zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset),
					zap.String("topic_id", m.TopicID), zap.String("cluster_id", m.ClusterID),
					zap.String("expected_topic_id", want.TopicID), zap.String("expected_cluster_id", want.ClusterID))
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
			return Meta{}, fmt.Errorf("checkpoint: restore %s snapshot %s: %w", tp, m.ID, err)
		}
		s.log.Warn("checkpoint: skipping unusable snapshot",
			zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset),
			zap.String("file", ce.file), zap.String("path", ce.path), zap.Error(ce.err))
		if ce.mismatch {
			s.quarantineLocked(tp, m, ce.file)
		}
		if err := dst.clear(); err != nil {
			dst.abort()
			return Meta{}, fmt.Errorf("checkpoint: restore %s: clean destination: %w", tp, err)
		}
	}
	dst.abort()
	if foreign > 0 {
		return Meta{}, fmt.Errorf("%w: %s: all %d matching snapshots with offset <= %d have missing or corrupt files (%d skipped: %w)",
			ErrNoSnapshot, tp, len(cands), maxOffset, foreign, ErrForeignSource)
	}
	return Meta{}, fmt.Errorf("%w: %s: all %d snapshots with offset <= %d have missing or corrupt files",
		ErrNoSnapshot, tp, len(cands), maxOffset)
}

// quarantineLocked moves a pool file whose content does not match the
// identity in its name out of the pool, so that the next publish copies
// the file again instead of referencing the damaged one. Every snapshot
// referencing it was unusable already. Caller holds the partition lock.
func (s *Store) quarantineLocked(tp TopicPartition, m Meta, file string) {
	for _, f := range m.Files {
		if f.Name != file || f.Pool == "" {
			continue
		}
		p := s.filePath(m, f)
		n, crc, err := hashFile(context.Background(), p)
		if err != nil || (n == f.Size && crc == f.CRC32C) {
			return
		}
		q := filepath.Join(filepath.Dir(p), corruptPrefix+filepath.Base(p)+"-"+randSuffix())
		if err := os.Rename(p, q); err != nil {
			s.log.Warn("checkpoint: cannot quarantine corrupt pool file", zap.String("file", p), zap.Error(err))
			return
		}
		s.log.Warn("checkpoint: corrupt pool file quarantined; the next snapshot copies it again",
			zap.String("partition", tp.String()), zap.String("file", p), zap.String("moved_to", q))
	}
}

// seedCache records the checksums of restored immutable files under the
// identity of the restored copies: the live store opened on them hands
// the same inodes to the next pebble checkpoint, so the first publish
// after a restore need not hash them again.
func (s *Store) seedCache(tp TopicPartition, m Meta, dir string) {
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

// restoreDst is the destination of a restore.
type restoreDst struct {
	final string // dstDir
	into  string // where files are written (final, or a temporary sibling)
	tmp   bool
}

// prepareDst accepts a missing or empty dstDir.
func prepareDst(dstDir string) (*restoreDst, error) {
	if dstDir == "" {
		return nil, errors.New("empty destination path")
	}
	abs, err := filepath.Abs(dstDir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	switch {
	case err == nil:
		if !st.IsDir() {
			return nil, fmt.Errorf("destination %s is not a directory", abs)
		}
		empty, err := dirIsEmpty(abs)
		if err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		if !empty {
			return nil, fmt.Errorf("destination %s is not empty", abs)
		}
		return &restoreDst{final: abs, into: abs}, nil
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(abs)
		if err := ensureDir(parent); err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		tmp := filepath.Join(parent, tmpPrefix+"restore-"+filepath.Base(abs)+"-"+randSuffix())
		if err := os.Mkdir(tmp, dirPerm); err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		return &restoreDst{final: abs, into: tmp, tmp: true}, nil
	default:
		return nil, fmt.Errorf("destination: %w", err)
	}
}

func (d *restoreDst) finish() error {
	if !d.tmp {
		return nil
	}
	if err := os.Rename(d.into, d.final); err != nil {
		return err
	}
	d.into = d.final
	d.tmp = false
	return syncDir(filepath.Dir(d.final))
}

// clear removes what a failed attempt wrote.
func (d *restoreDst) clear() error {
	ents, err := os.ReadDir(d.into)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d.into, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// abort leaves the destination as it was found.
func (d *restoreDst) abort() {
	if d.tmp {
		os.RemoveAll(d.into)
		return
	}
	_ = d.clear()
}

// materialize copies files into dir, verifying size and CRC32C of each in
// the same pass, and fsyncs dir. Source-side problems are *corruptError.
// A large copy logs its progress every few seconds (log may be nil).
func materialize(ctx context.Context, log *zap.Logger, what string, files []FileInfo, resolve func(FileInfo) string, dir string) error {
	// Fail fast on a missing or truncated file before writing anything.
	for _, f := range files {
		p := resolve(f)
		info, err := os.Stat(p)
		if err != nil {
			return &corruptError{what: what, file: f.Name, path: p, err: err}
		}
		if info.Size() != f.Size {
			return &corruptError{what: what, file: f.Name, path: p, mismatch: true,
				err: fmt.Errorf("size %d, want %d", info.Size(), f.Size)}
		}
	}
	var total, done int64
	for _, f := range files {
		total += f.Size
	}
	start, lastLog := time.Now(), time.Now()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if log != nil && total >= progressMinBytes && time.Since(lastLog) >= progressEvery {
			lastLog = time.Now()
			log.Info("restore progress", zap.String("restoring", what), zap.Int64("bytes_done", done),
				zap.Int64("bytes_total", total), zap.Float64("percent", 100*float64(done)/float64(total)),
				zap.Duration("elapsed", time.Since(start)))
		}
		done += f.Size
		p := resolve(f)
		dst := filepath.Join(dir, f.Name)
		n, crc, err := copyFileSync(ctx, p, dst, false) // see the end
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isReadError(err) {
				return &corruptError{what: what, file: f.Name, path: p, err: err}
			}
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if n != f.Size || crc != f.CRC32C {
			os.Remove(dst)
			return &corruptError{what: what, file: f.Name, path: p, mismatch: true,
				err: fmt.Errorf("size %d crc32c %08x, want size %d crc32c %08x", n, crc, f.Size, f.CRC32C)}
		}
	}
	// No fsync: a restore writes the live store, which is a cache that the
	// engine deletes and restores again on every assignment (DESIGN.md:
	// the checkpoint directory and the sink hold the truth). After a power
	// loss the next start restores again; syncing here would only make
	// every recovery wait for the disk.
	return nil
}

// Progress of large restores is logged every progressEvery.
const (
	progressEvery    = 2 * time.Second
	progressMinBytes = 64 << 20
)

// Verify reads every file of m and checks its size and CRC32C. The error
// (matching ErrCorrupt) names the first bad file. A pool file whose content
// does not match its name is quarantined so the next publish replaces it.
func (s *Store) Verify(ctx context.Context, m Meta) error {
	tp := TopicPartition{Topic: m.Topic, Partition: m.Partition}
	if err := validateTP(tp); err != nil {
		return err
	}
	if m.Dir == "" {
		m.Dir = filepath.Join(s.partDir(tp), m.ID)
	}
	what := "snapshot " + m.ID
	if err := validateMeta(m, tp); err != nil {
		return fmt.Errorf("%w: %s: metadata invalid: %w", ErrCorrupt, what, err)
	}
	for _, f := range m.Files {
		p := s.filePath(m, f)
		n, crc, err := hashFile(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &corruptError{what: what, file: f.Name, path: p, err: err}
		}
		if n != f.Size || crc != f.CRC32C {
			if f.Pool != "" {
				l := s.partLock(tp)
				l.Lock()
				s.quarantineLocked(tp, m, f.Name)
				l.Unlock()
			}
			return &corruptError{what: what, file: f.Name, path: p, mismatch: true,
				err: fmt.Errorf("size %d crc32c %08x, want size %d crc32c %08x", n, crc, f.Size, f.CRC32C)}
		}
	}
	return nil
}
