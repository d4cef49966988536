package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// SavepointPart is one partition of a savepoint: the staging directory of
// a pebble checkpoint of its store and the offset that store reflects.
type SavepointPart struct {
	Topic     string
	Partition int32
	TopicID   string // Kafka topic id (see Source); empty = unknown
	ClusterID string // Kafka cluster id; empty = unknown
	Offset    int64
	SrcDir    string
}

// SavepointPartition is one partition in a savepoint's metadata.
type SavepointPartition struct {
	Topic     string     `json:"topic"`
	Partition int32      `json:"partition"`
	TopicID   string     `json:"topic_id,omitempty"`   // Kafka topic id of the incarnation the state was read from; empty = unknown
	ClusterID string     `json:"cluster_id,omitempty"` // Kafka cluster id; empty = unknown
	Offset    int64      `json:"offset"`               // next offset to process
	Dir       string     `json:"dir"`                  // sub-directory of the savepoint holding the files: "<topic>-<partition>"
	Files     []FileInfo `json:"files"`                // never pool references
}

// Bytes returns the total size of the partition's files.
func (p SavepointPartition) Bytes() int64 {
	var n int64
	for _, f := range p.Files {
		n += f.Size
	}
	return n
}

// SavepointMeta is the metadata of a savepoint (_savepoint.json). A
// savepoint is self-contained and portable: every file is inside its
// directory and all paths are relative, so the directory can be copied
// elsewhere and loaded with LoadSavepoint.
type SavepointMeta struct {
	Format     int                  `json:"format"` // metadata format version (1)
	Name       string               `json:"name"`
	ID         string               `json:"id"` // creation time and a short random suffix
	CreatedAt  time.Time            `json:"created_at"`
	Partitions []SavepointPartition `json:"partitions"` // sorted by topic, partition
	Job        map[string]string    `json:"job,omitempty"`
	Dir        string               `json:"-"` // absolute path of the savepoint directory, or its s3:// URL (filled on load)

	remote *S3Store // the object storage holding the files; nil: the directory Dir
}

// Bytes returns the total size of the savepoint's files.
func (sp SavepointMeta) Bytes() int64 {
	var n int64
	for _, p := range sp.Partitions {
		n += p.Bytes()
	}
	return n
}

// Offsets returns the offset of every partition of the savepoint.
func (sp SavepointMeta) Offsets() map[TopicPartition]int64 {
	out := make(map[TopicPartition]int64, len(sp.Partitions))
	for _, p := range sp.Partitions {
		out[TopicPartition{Topic: p.Topic, Partition: p.Partition}] = p.Offset
	}
	return out
}

// Partition returns the entry of topic/partition.
func (sp SavepointMeta) Partition(topic string, partition int32) (SavepointPartition, bool) {
	for _, p := range sp.Partitions {
		if p.Topic == topic && p.Partition == partition {
			return p, true
		}
	}
	return SavepointPartition{}, false
}

func validateSavepointName(name string) error {
	if name == "" || len(name) > 200 || strings.HasPrefix(name, ".") {
		return fmt.Errorf("checkpoint: invalid savepoint name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("checkpoint: invalid savepoint name %q (allowed: letters, digits, '.', '_', '-')", name)
		}
	}
	return nil
}

// Savepoint copies the staging directories of all parts into a new,
// self-contained savepoint <dir>/savepoints/<name>/, published atomically
// like a snapshot (files fsynced in a .tmp- directory, metadata last,
// rename, parent fsync). An empty name gets a generated one. A name
// collision is ErrSavepointExists. Savepoints are never removed by
// retention or GC; see DeleteSavepoint.
//
// Unless ForceCopy is set, an immutable file whose identical twin is in the
// partition's pool (known from the checksum cache and verified by reading
// it) is hard-linked from the pool instead of copied; a failed link (e.g.
// savepoints/ on another filesystem) falls back to a copy.
func (s *Store) Savepoint(ctx context.Context, name string, parts []SavepointPart, job map[string]string) (SavepointMeta, error) {
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

// checkSavepointParts validates a savepoint request, generates a name
// when it is empty and returns the parts sorted with normalised ids.
func checkSavepointParts(name string, parts []SavepointPart) (string, time.Time, []SavepointPart, error) {
	created := time.Now().UTC()
	if name == "" {
		name = "savepoint-" + created.Format("20060102T150405Z")
	}
	if err := validateSavepointName(name); err != nil {
		return "", time.Time{}, nil, err
	}
	if len(parts) == 0 {
		return "", time.Time{}, nil, fmt.Errorf("checkpoint: savepoint %s: no partitions", name)
	}
	parts = append([]SavepointPart(nil), parts...)
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].Topic != parts[j].Topic {
			return parts[i].Topic < parts[j].Topic
		}
		return parts[i].Partition < parts[j].Partition
	})
	for i, p := range parts {
		tp := TopicPartition{Topic: p.Topic, Partition: p.Partition}
		if err := validateTP(tp); err != nil {
			return "", time.Time{}, nil, fmt.Errorf("checkpoint: savepoint %s: %w", name, err)
		}
		if p.Offset < 0 {
			return "", time.Time{}, nil, fmt.Errorf("checkpoint: savepoint %s: %s: negative offset %d", name, tp, p.Offset)
		}
		if i > 0 && parts[i-1].Topic == p.Topic && parts[i-1].Partition == p.Partition {
			return "", time.Time{}, nil, fmt.Errorf("checkpoint: savepoint %s: %s listed twice", name, tp)
		}
		parts[i].TopicID, parts[i].ClusterID = normID(p.TopicID), normID(p.ClusterID)
		if err := validateSourceIDs(parts[i].TopicID, parts[i].ClusterID); err != nil {
			return "", time.Time{}, nil, fmt.Errorf("checkpoint: savepoint %s: %s: %w", name, tp, err)
		}
	}
	return name, created, parts, nil
}

func (s *Store) savepointLocked(ctx context.Context, name string, created time.Time, parts []SavepointPart, job map[string]string) (SavepointMeta, error) {
	root := filepath.Join(s.dir, savepointsDir)
	final := filepath.Join(root, name)
	if _, err := os.Lstat(final); err == nil {
		return SavepointMeta{}, fmt.Errorf("%w: %s", ErrSavepointExists, final)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return SavepointMeta{}, err
	}
	if err := ensureDir(root); err != nil {
		return SavepointMeta{}, err
	}
	tmp := filepath.Join(root, tmpPrefix+"sp-"+name+"-"+randSuffix())
	if err := os.Mkdir(tmp, dirPerm); err != nil {
		return SavepointMeta{}, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()

	sp := SavepointMeta{
		Format:    FormatVersion,
		Name:      name,
		ID:        created.Format(idTimeLayout) + "-" + randSuffix(),
		CreatedAt: created,
		Job:       maps.Clone(job),
	}
	for _, p := range parts {
		tp := TopicPartition{Topic: p.Topic, Partition: p.Partition}
		src, err := listSource(p.SrcDir)
		if err != nil {
			return SavepointMeta{}, fmt.Errorf("%s: %w", tp, err)
		}
		sub := filepath.Join(tmp, tp.String())
		if err := os.Mkdir(sub, dirPerm); err != nil {
			return SavepointMeta{}, err
		}
		part := SavepointPartition{Topic: p.Topic, Partition: p.Partition, TopicID: p.TopicID, ClusterID: p.ClusterID,
			Offset: p.Offset, Dir: tp.String()}
		for _, f := range src {
			if err := ctx.Err(); err != nil {
				return SavepointMeta{}, err
			}
			fi, err := s.savepointFile(ctx, tp, f, filepath.Join(sub, f.name))
			if err != nil {
				return SavepointMeta{}, fmt.Errorf("%s: %w", tp, err)
			}
			part.Files = append(part.Files, fi)
		}
		if err := syncDir(sub); err != nil {
			return SavepointMeta{}, err
		}
		sp.Partitions = append(sp.Partitions, part)
	}
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return SavepointMeta{}, err
	}
	if err := writeFileSync(filepath.Join(tmp, savepointFile), append(b, '\n')); err != nil {
		return SavepointMeta{}, err
	}
	if err := syncDir(tmp); err != nil {
		return SavepointMeta{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Lstat(final); serr == nil {
			return SavepointMeta{}, fmt.Errorf("%w: %s", ErrSavepointExists, final)
		}
		return SavepointMeta{}, err
	}
	ok = true
	sp.Dir = final
	return sp, syncDir(root)
}

// savepointFile stores one source file at dst: a hard link to a verified
// identical pool file when possible, a checksummed copy otherwise.
func (s *Store) savepointFile(ctx context.Context, tp TopicPartition, f srcFile, dst string) (FileInfo, error) {
	if !s.forceCopy && isImmutable(f.name) {
		s.cacheMu.Lock()
		crc, known := s.cache[tp][f.key]
		s.cacheMu.Unlock()
		if known {
			pool := filepath.Join(s.poolDir(tp), poolName(f.name, crc, f.size))
			if n, c, err := hashFile(ctx, pool); err == nil && n == f.size && c == crc {
				if err := os.Link(pool, dst); err == nil {
					return FileInfo{Name: f.name, Size: f.size, CRC32C: crc}, nil
				} else {
					s.log.Debug("checkpoint: hard link from pool failed, copying", zap.String("file", pool), zap.Error(err))
				}
			}
		}
	}
	n, crc, err := copyFile(ctx, f.path, dst)
	if err != nil {
		return FileInfo{}, fmt.Errorf("copy %s: %w", f.name, err)
	}
	if n != f.size {
		return FileInfo{}, fmt.Errorf("source file %s changed while copying (size %d, then %d)", f.path, f.size, n)
	}
	return FileInfo{Name: f.name, Size: n, CRC32C: crc}, nil
}

// validateSavepoint checks the structure of savepoint metadata so that a
// damaged file cannot make us read outside the savepoint directory.
func validateSavepoint(sp SavepointMeta) error {
	if sp.Format != FormatVersion {
		return fmt.Errorf("%w: savepoint metadata format %d, this binary supports %d", ErrUnsupportedFormat, sp.Format, FormatVersion)
	}
	if err := validateSavepointName(sp.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(sp.Partitions) == 0 {
		return fmt.Errorf("%w: savepoint %s has no partitions", ErrCorrupt, sp.Name)
	}
	seen := map[TopicPartition]bool{}
	for _, p := range sp.Partitions {
		tp := TopicPartition{Topic: p.Topic, Partition: p.Partition}
		if err := validateTP(tp); err != nil {
			return fmt.Errorf("%w: savepoint %s: %w", ErrCorrupt, sp.Name, err)
		}
		if seen[tp] {
			return fmt.Errorf("%w: savepoint %s: %s listed twice", ErrCorrupt, sp.Name, tp)
		}
		seen[tp] = true
		if err := validateSourceIDs(p.TopicID, p.ClusterID); err != nil {
			return fmt.Errorf("%w: savepoint %s: %s: %w", ErrCorrupt, sp.Name, tp, err)
		}
		if p.Offset < 0 || p.Dir != tp.String() || len(p.Files) == 0 {
			return fmt.Errorf("%w: savepoint %s: %s: invalid entry (offset %d, dir %q, %d files)", ErrCorrupt, sp.Name, tp, p.Offset, p.Dir, len(p.Files))
		}
		names := map[string]bool{}
		for _, f := range p.Files {
			if !validFileName(f.Name) || names[f.Name] || f.Size < 0 || f.Pool != "" {
				return fmt.Errorf("%w: savepoint %s: %s: invalid file entry %q", ErrCorrupt, sp.Name, tp, f.Name)
			}
			names[f.Name] = true
		}
	}
	return nil
}

func readSavepoint(dir string) (SavepointMeta, error) {
	var sp SavepointMeta
	if err := readJSON(filepath.Join(dir, savepointFile), &sp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return SavepointMeta{}, fmt.Errorf("%w: %s has no %s", ErrNotFound, dir, savepointFile)
		}
		if errors.Is(err, errBadJSON) {
			return SavepointMeta{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return SavepointMeta{}, err
	}
	if err := validateSavepoint(sp); err != nil {
		return SavepointMeta{}, err
	}
	sp.Dir = dir
	return sp, nil
}

// LoadSavepoint loads the savepoint at path (its directory, or its
// _savepoint.json file), validates the metadata and verifies the size and
// CRC32C of every file. Errors match ErrNotFound, ErrUnsupportedFormat or
// ErrCorrupt (naming the file).
func LoadSavepoint(path string) (SavepointMeta, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return SavepointMeta{}, err
	}
	if filepath.Base(abs) == savepointFile {
		abs = filepath.Dir(abs)
	}
	sp, err := readSavepoint(abs)
	if err != nil {
		return SavepointMeta{}, fmt.Errorf("checkpoint: load savepoint %s: %w", abs, err)
	}
	for _, p := range sp.Partitions {
		for _, f := range p.Files {
			fp := filepath.Join(sp.Dir, p.Dir, f.Name)
			n, crc, err := hashFile(context.Background(), fp)
			if err != nil {
				return SavepointMeta{}, &corruptError{what: "savepoint " + sp.Name, file: p.Dir + "/" + f.Name, path: fp, err: err}
			}
			if n != f.Size || crc != f.CRC32C {
				return SavepointMeta{}, &corruptError{what: "savepoint " + sp.Name, file: p.Dir + "/" + f.Name, path: fp, mismatch: true,
					err: fmt.Errorf("size %d crc32c %08x, want size %d crc32c %08x", n, crc, f.Size, f.CRC32C)}
			}
		}
	}
	return sp, nil
}

// RestoreSavepointPartition is RestoreSavepointFrom without an expected
// identity: the savepoint's partition is restored whatever topic
// incarnation or cluster it was taken from.
func RestoreSavepointPartition(ctx context.Context, sp SavepointMeta, topic string, partition int32, dstDir string) (offset int64, err error) {
	return RestoreSavepointFrom(ctx, sp, Source{Topic: topic, Partition: partition}, dstDir, false)
}

// RestoreSavepointFrom materialises partition want.Topic/want.Partition of
// sp into dstDir (missing or empty, as for Restore), verifying every file
// in the same pass, and returns the partition's offset. There is no
// fallback: a missing or corrupt file is an error matching ErrCorrupt.
//
// If the savepoint recorded a topic id or cluster id that differs from a
// non-empty want.TopicID or want.ClusterID, it was taken from another
// incarnation of the topic or another cluster and its offsets do not apply
// to this log: the error is a *ForeignSourceError (errors.Is
// ErrForeignSource) and nothing is written, unless allowForeign is set (a
// deliberate migration of the state; the caller decides where to resume).
// Ids missing on either side are not checked; see CheckSource.
func RestoreSavepointFrom(ctx context.Context, sp SavepointMeta, want Source, dstDir string, allowForeign bool) (offset int64, err error) {
	topic, partition := want.Topic, want.Partition
	if sp.remote != nil {
		return sp.remote.restoreSavepoint(ctx, sp, want, dstDir, allowForeign)
	}
	if sp.Dir == "" {
		return 0, errors.New("checkpoint: savepoint has no directory (use LoadSavepoint or ListSavepoints)")
	}
	if err := validateSavepoint(sp); err != nil {
		return 0, fmt.Errorf("checkpoint: savepoint %s: %w", sp.Name, err)
	}
	p, ok := sp.Partition(topic, partition)
	if !ok {
		return 0, fmt.Errorf("%w: savepoint %s has no partition %s-%d", ErrNotFound, sp.Name, topic, partition)
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
	err = materialize(ctx, nil, "savepoint "+sp.Name, p.Files, func(f FileInfo) string {
		return filepath.Join(sp.Dir, p.Dir, f.Name)
	}, dst.into)
	if err == nil {
		err = dst.finish()
	}
	if err != nil {
		dst.abort()
		var ce *corruptError
		if errors.As(err, &ce) {
			return 0, err
		}
		return 0, fmt.Errorf("checkpoint: restore savepoint %s partition %s-%d: %w", sp.Name, topic, partition, err)
	}
	return p.Offset, nil
}

// ListSavepoints returns the savepoints under <dir>/savepoints, newest
// first. Metadata is validated, checksums are not (LoadSavepoint does);
// a directory with missing or invalid metadata is skipped with a warning.
func (s *Store) ListSavepoints() ([]SavepointMeta, error) {
	root := filepath.Join(s.dir, savepointsDir)
	ents, err := readVisible(root)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list savepoints: %w", err)
	}
	var out []SavepointMeta
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sp, err := readSavepoint(filepath.Join(root, e.Name()))
		if err != nil {
			s.log.Warn("checkpoint: skipping invalid savepoint", zap.String("savepoint", e.Name()), zap.Error(err))
			continue
		}
		out = append(out, sp)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// DeleteSavepoint removes the savepoint called name (renamed to a .tmp-del-
// entry first, so a crash mid-way leaves garbage for GC).
func (s *Store) DeleteSavepoint(name string) error {
	if err := validateSavepointName(name); err != nil {
		return err
	}
	s.spMu.Lock()
	defer s.spMu.Unlock()
	p := filepath.Join(s.dir, savepointsDir, name)
	if _, err := os.Lstat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: savepoint %s", ErrNotFound, name)
		}
		return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
	}
	if err := removeDirDurably(p); err != nil {
		return fmt.Errorf("checkpoint: delete savepoint %s: %w", name, err)
	}
	return nil
}
