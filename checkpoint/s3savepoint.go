package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"go.uber.org/zap"
)

func savepointRel(name string) string { return savepointsDir + "/" + name + "/" }

// savepointObject is the key of a savepoint file: under the savepoint's
// id, so that two processes racing for one name never write the same
// keys (the loser's objects are garbage once the winner's metadata is in
// place).
func savepointObject(sp SavepointMeta, p SavepointPartition, f FileInfo) string {
	return savepointRel(sp.Name) + sp.ID + "/" + p.Dir + "/" + f.Name
}

// Savepoint implements Storage: the files of every part are uploaded under
// savepoints/<name>/<id>/<topic>-<partition>/, then _savepoint.json with
// If-None-Match: *. A name that exists is ErrSavepointExists (also when
// another process wins the race for it).
func (s *S3Store) Savepoint(ctx context.Context, name string, parts []SavepointPart, job map[string]string) (SavepointMeta, error) {
	name, created, parts, err := checkSavepointParts(name, parts)
	if err != nil {
		return SavepointMeta{}, err
	}
	s.spMu.Lock()
	defer s.spMu.Unlock()
	sp, err := s.savepointLocked(ctx, name, created, parts, job)
	if err != nil {
		return SavepointMeta{}, fmt.Errorf("checkpoint: savepoint %s: %w", name, err)
	}
	s.log.Debug("checkpoint: savepoint written", zap.String("savepoint", name), zap.Int("partitions", len(sp.Partitions)),
		zap.Int64("bytes", sp.Bytes()), zap.Duration("duration", time.Since(created)))
	return sp, nil
}

func (s *S3Store) savepointLocked(ctx context.Context, name string, created time.Time, parts []SavepointPart, job map[string]string) (SavepointMeta, error) {
	metaRel := savepointRel(name) + savepointFile
	if _, err := s.getSmall(ctx, metaRel); err == nil {
		return SavepointMeta{}, fmt.Errorf("%w: %s", ErrSavepointExists, s.url(savepointRel(name)))
	} else if !isNotFound(err) {
		return SavepointMeta{}, err
	}
	sp := SavepointMeta{
		Format:    FormatVersion,
		Name:      name,
		ID:        created.Format(idTimeLayout) + "-" + randSuffix(),
		CreatedAt: created,
		Job:       maps.Clone(job),
	}
	type upload struct {
		part, file int
		src        srcFile
	}
	var ups []upload
	for _, p := range parts {
		tp := TopicPartition{Topic: p.Topic, Partition: p.Partition}
		src, err := listSource(p.SrcDir)
		if err != nil {
			return SavepointMeta{}, fmt.Errorf("%s: %w", tp, err)
		}
		part := SavepointPartition{Topic: p.Topic, Partition: p.Partition, TopicID: p.TopicID, ClusterID: p.ClusterID,
			Offset: p.Offset, Dir: tp.String(), Files: make([]FileInfo, len(src))}
		for i, f := range src {
			ups = append(ups, upload{part: len(sp.Partitions), file: i, src: f})
		}
		sp.Partitions = append(sp.Partitions, part)
	}
	var written []string
	err := forEach(ctx, len(ups), s.conc, func(ctx context.Context, i int) error {
		u := ups[i]
		n, crc, err := hashFile(ctx, u.src.path)
		if err != nil {
			return fmt.Errorf("hash %s: %w", u.src.path, err)
		}
		if n != u.src.size {
			return fmt.Errorf("source file %s changed while hashing (size %d, then %d)", u.src.path, u.src.size, n)
		}
		p := &sp.Partitions[u.part]
		fi := FileInfo{Name: u.src.name, Size: n, CRC32C: crc}
		// Distinct elements of Files: no lock needed.
		p.Files[u.file] = fi
		return s.uploadFile(ctx, savepointObject(sp, *p, fi), u.src)
	})
	if err != nil {
		for _, u := range ups {
			written = append(written, savepointObject(sp, sp.Partitions[u.part], FileInfo{Name: u.src.name}))
		}
		s.removeQuietly(written)
		return SavepointMeta{}, err
	}
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return SavepointMeta{}, err
	}
	if err := s.putNew(ctx, metaRel, append(b, '\n')); err != nil {
		if errors.Is(err, errExists) {
			return SavepointMeta{}, fmt.Errorf("%w: %s", ErrSavepointExists, s.url(savepointRel(name)))
		}
		return SavepointMeta{}, fmt.Errorf("write metadata: %w", err)
	}
	sp.Dir = s.url(strings.TrimSuffix(savepointRel(name), "/"))
	sp.remote = s
	return sp, nil
}

// readSavepoint reads and validates the metadata of savepoint name.
func (s *S3Store) readSavepoint(ctx context.Context, name string) (SavepointMeta, error) {
	var sp SavepointMeta
	rel := savepointRel(name) + savepointFile
	if err := s.getJSON(ctx, rel, &sp); err != nil {
		if isNotFound(err) {
			return SavepointMeta{}, fmt.Errorf("%w: %s has no %s", ErrNotFound, s.url(savepointRel(name)), savepointFile)
		}
		if errors.Is(err, errBadJSON) {
			return SavepointMeta{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return SavepointMeta{}, err
	}
	if err := validateSavepoint(sp); err != nil {
		return SavepointMeta{}, err
	}
	if sp.Name != name {
		return SavepointMeta{}, fmt.Errorf("%w: savepoint metadata names %q, stored as %q", ErrCorrupt, sp.Name, name)
	}
	if !validFileName(sp.ID) || strings.HasPrefix(sp.ID, ".") {
		return SavepointMeta{}, fmt.Errorf("%w: savepoint %s: invalid id %q", ErrCorrupt, name, sp.ID)
	}
	sp.Dir = s.url(strings.TrimSuffix(savepointRel(name), "/"))
	sp.remote = s
	return sp, nil
}

// ListSavepoints implements Storage: savepoints whose metadata exists and
// validates, newest first. A savepoint being written (no metadata yet) is
// not listed; invalid metadata is skipped with a warning.
func (s *S3Store) ListSavepoints() ([]SavepointMeta, error) {
	ctx := context.Background()
	objs, err := s.list(ctx, savepointsDir+"/", false, 0)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list savepoints: %w", err)
	}
	var out []SavepointMeta
	for _, o := range objs {
		r := s.rel(o.Key)
		if !strings.HasSuffix(r, "/") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(r, savepointsDir+"/"), "/")
		if validateSavepointName(name) != nil {
			continue
		}
		sp, err := s.readSavepoint(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			s.log.Warn("checkpoint: skipping invalid savepoint", zap.String("savepoint", name), zap.Error(err))
			continue
		}
		out = append(out, sp)
	}
	sortSavepoints(out)
	return out, nil
}

// LoadSavepoint implements Storage: the metadata is validated and every
// file read and checked (size and CRC32C).
func (s *S3Store) LoadSavepoint(ctx context.Context, name string) (SavepointMeta, error) {
	if err := validateSavepointName(name); err != nil {
		return SavepointMeta{}, err
	}
	sp, err := s.readSavepoint(ctx, name)
	if err != nil {
		return SavepointMeta{}, fmt.Errorf("checkpoint: load savepoint %s: %w", s.url(savepointRel(name)), err)
	}
	for _, p := range sp.Partitions {
		err := s.download(ctx, "savepoint "+sp.Name, p.Files, func(f FileInfo) string { return savepointObject(sp, p, f) }, "")
		if err != nil {
			return SavepointMeta{}, err
		}
	}
	return sp, nil
}

// restoreSavepoint is RestoreSavepointFrom for a savepoint in s.
func (s *S3Store) restoreSavepoint(ctx context.Context, sp SavepointMeta, want Source, dstDir string, allowForeign bool) (int64, error) {
	if err := validateSavepoint(sp); err != nil {
		return 0, fmt.Errorf("checkpoint: savepoint %s: %w", sp.Name, err)
	}
	p, ok := sp.Partition(want.Topic, want.Partition)
	if !ok {
		return 0, fmt.Errorf("%w: savepoint %s has no partition %s-%d", ErrNotFound, sp.Name, want.Topic, want.Partition)
	}
	if !allowForeign {
		if err := CheckSource("savepoint "+sp.Name, p.Source(), want); err != nil {
			return 0, err
		}
	}
	dst, err := prepareDst(dstDir)
	if err != nil {
		return 0, fmt.Errorf("checkpoint: restore savepoint %s: %w", sp.Name, err)
	}
	err = s.download(ctx, "savepoint "+sp.Name, p.Files, func(f FileInfo) string { return savepointObject(sp, p, f) }, dst.into)
	if err == nil {
		err = dst.finish()
	}
	if err != nil {
		dst.abort()
		var ce *corruptError
		if errors.As(err, &ce) {
			return 0, err
		}
		return 0, fmt.Errorf("checkpoint: restore savepoint %s partition %s-%d: %w", sp.Name, want.Topic, want.Partition, err)
	}
	return p.Offset, nil
}

// DeleteSavepoint implements Storage: the metadata object goes first (the
// savepoint is then gone), then its files; what a crash leaves behind is
// removed by GC.
func (s *S3Store) DeleteSavepoint(name string) error {
	if err := validateSavepointName(name); err != nil {
		return err
	}
	s.spMu.Lock()
	defer s.spMu.Unlock()
	ctx := context.Background()
	rel := savepointRel(name)
	if _, err := s.getSmall(ctx, rel+savepointFile); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: savepoint %s", ErrNotFound, name)
		}
		return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
	}
	if err := s.remove(ctx, rel+savepointFile); err != nil {
		return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
	}
	objs, err := s.list(ctx, rel, true, 0)
	if err != nil {
		return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
	}
	for _, o := range objs {
		if err := s.remove(ctx, s.rel(o.Key)); err != nil {
			return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
		}
	}
	return nil
}
