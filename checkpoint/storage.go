package checkpoint

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// Storage is where snapshots and savepoints are kept: a local (or mounted)
// directory (*Store) or a bucket of S3-compatible object storage
// (*S3Store). Both keep the same metadata (Meta, SavepointMeta) and offer
// the same guarantees: a snapshot is listed only once every file it names
// is durable, restores verify every file's size and CRC32C, and GC never
// removes what a retained snapshot references or what is younger than the
// grace period. OpenStorage chooses the implementation by the location.
//
// The consumer makes a Pebble checkpoint on local disk (its data
// directory) and hands that directory to PublishFrom; a restore writes a
// local directory that the consumer then opens. Pebble never sees the
// storage.
type Storage interface {
	// Location is the directory path or the s3://bucket/prefix URL (never
	// with credentials).
	Location() string
	// Mode is the publish mode.
	Mode() Mode
	// Partitions lists the partitions that have snapshots (or leftovers of
	// them), sorted.
	Partitions() ([]TopicPartition, error)
	// List returns the published snapshots of one partition, newest first.
	List(topic string, partition int32) ([]Meta, error)
	// PublishFrom publishes the files of srcDir as a new snapshot; see
	// (*Store).PublishFrom.
	PublishFrom(ctx context.Context, src Source, offset int64, srcDir string, job map[string]string) (Meta, PublishStats, error)
	// RestoreFrom materialises the newest usable snapshot into dstDir; see
	// (*Store).RestoreFrom.
	RestoreFrom(ctx context.Context, w Want, dstDir string) (Meta, error)
	// Verify reads every file of m and checks its size and CRC32C.
	Verify(ctx context.Context, m Meta) error
	// GC applies retention and removes garbage older than the grace period.
	GC(ctx context.Context, dryRun bool) (GCReport, error)
	// Savepoint writes a self-contained savepoint of parts.
	Savepoint(ctx context.Context, name string, parts []SavepointPart, job map[string]string) (SavepointMeta, error)
	// ListSavepoints lists the savepoints, newest first (metadata
	// validated, checksums not).
	ListSavepoints() ([]SavepointMeta, error)
	// LoadSavepoint loads the savepoint called name and verifies every
	// file; the result can be given to RestoreSavepointFrom.
	LoadSavepoint(ctx context.Context, name string) (SavepointMeta, error)
	// DeleteSavepoint removes the savepoint called name.
	DeleteSavepoint(name string) error

	// AppendSegment stores a change-log segment (EncodeSegment's output)
	// under the base it names; it is durable when this returns.
	AppendSegment(ctx context.Context, data []byte) (Segment, error)
	// Segments lists the change-log segments of one base, by sequence
	// (names only: contents are read and verified by ReadSegment).
	Segments(topic string, partition int32, base string) ([]Segment, error)
	// ReadSegment reads a listed segment and verifies its checksum,
	// structure and header; a missing or damaged one matches ErrCorrupt.
	ReadSegment(ctx context.Context, g Segment) (*SegmentData, error)
}

var (
	_ Storage = (*Store)(nil)
	_ Storage = (*S3Store)(nil)
)

// IsS3Location reports whether loc names object storage (s3://...).
func IsS3Location(loc string) bool {
	return strings.HasPrefix(strings.ToLower(loc), "s3://")
}

// OpenStorage opens the checkpoint storage at loc: an s3://bucket/prefix
// URL opens object storage configured by s3 (see S3Config), anything else
// is a directory (Open). opts applies to both.
func OpenStorage(ctx context.Context, loc string, opts Options, s3 S3Config) (Storage, error) {
	if IsS3Location(loc) {
		return OpenS3(ctx, loc, s3, opts)
	}
	return Open(loc, opts)
}

// OpenExistingStorage is OpenStorage for offline tools: it never creates
// anything and applies no retention (see OpenExisting).
func OpenExistingStorage(ctx context.Context, loc string, s3 S3Config, logger *zap.Logger) (Storage, error) {
	return OpenStorage(ctx, loc, Options{Logger: logger, MustExist: true, Retain: -1}, s3)
}

// Location implements Storage: the absolute path of the directory.
func (s *Store) Location() string { return s.dir }

// LoadSavepoint implements Storage: LoadSavepoint of
// <dir>/savepoints/<name>.
func (s *Store) LoadSavepoint(_ context.Context, name string) (SavepointMeta, error) {
	if err := validateSavepointName(name); err != nil {
		return SavepointMeta{}, err
	}
	return LoadSavepoint(filepath.Join(s.dir, savepointsDir, name))
}

// LoadSavepointAt loads and verifies the savepoint at path: a directory
// (or its _savepoint.json) as LoadSavepoint does, or
// s3://bucket/prefix/savepoints/<name> in the object storage configured by
// s3, where s3://bucket/prefix is the checkpoint location.
func LoadSavepointAt(ctx context.Context, path string, s3 S3Config, logger *zap.Logger) (SavepointMeta, error) {
	if !IsS3Location(path) {
		return LoadSavepoint(path)
	}
	trimmed := strings.TrimRight(path, "/")
	i := strings.LastIndex(trimmed, "/"+savepointsDir+"/")
	if i < 0 {
		return SavepointMeta{}, fmt.Errorf("checkpoint: savepoint %s: want s3://bucket/prefix/%s/<name>", path, savepointsDir)
	}
	loc, name := trimmed[:i], trimmed[i+len(savepointsDir)+2:]
	if strings.Contains(name, "/") {
		return SavepointMeta{}, fmt.Errorf("checkpoint: savepoint %s: want s3://bucket/prefix/%s/<name>", path, savepointsDir)
	}
	st, err := OpenS3(ctx, loc, s3, Options{Logger: logger, MustExist: true, Retain: -1})
	if err != nil {
		return SavepointMeta{}, err
	}
	return st.LoadSavepoint(ctx, name)
}
