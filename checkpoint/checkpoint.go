// Package checkpoint owns the durable snapshots of the per-partition Pebble
// stores.
//
// The consumer takes a pebble checkpoint of a partition's store into a
// staging directory at a committed boundary (db.Checkpoint with
// pebble.WithFlushedWAL) and hands that directory to Store.Publish, which
// copies it into the checkpoint directory and publishes it atomically. This
// package never opens a live database: it works on directories of files.
//
// The on-disk format is documented for operators in docs/CHECKPOINTS.md.
// In short:
//
//	<dir>/FORMAT                                   {"format":"txstream-checkpoints","version":1}
//	<dir>/partitions/<topic>-<partition>/<id>/     one published snapshot
//	                                 .../_snapshot.json   metadata, written last
//	<dir>/pool/<topic>-<partition>/<name>.<crc32c>.<size> incremental pool (immutable files)
//	<dir>/savepoints/<name>/_savepoint.json        self-contained savepoints
//	.tmp-*                                         temporary entries, removed by GC
//
// Publishing writes and fsyncs every file into a .tmp- directory, writes the
// metadata file last, renames the directory into place and fsyncs the
// parent, so a crash leaves either the old state or the complete new
// snapshot plus garbage that GC removes.
//
// A snapshot or savepoint records the Kafka topic id and cluster id its
// state was read from when the publisher knows them (Source, PublishFrom).
// RestoreFrom skips, and RestoreSavepointFrom refuses, state taken from
// another incarnation of the topic (deleted and re-created) or from another
// cluster, whose offsets mean nothing in the current log. Metadata without
// ids (written before they were recorded) stays usable.
package checkpoint

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Mode selects how Publish stores a snapshot.
type Mode string

const (
	// ModeFull copies every file of the store into the snapshot, every time.
	ModeFull Mode = "full"
	// ModeIncremental stores immutable files (*.sst, *.blob) once in a
	// per-partition pool shared by all snapshots that need them, and copies
	// only the files the pool lacks plus the small mutable files.
	ModeIncremental Mode = "incremental"
	// ModeChangelog writes a base (an incremental snapshot) rarely and,
	// between bases, appends each committed epoch's state changes to a
	// per-partition change log of checksummed segments (changelog.go).
	ModeChangelog Mode = "changelog"
)

// ParseMode parses "full", "incremental" or "changelog" (case-insensitive,
// surrounding space ignored). The empty string yields the default, ModeIncremental.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return ModeIncremental, nil
	case string(ModeFull):
		return ModeFull, nil
	case string(ModeIncremental):
		return ModeIncremental, nil
	case string(ModeChangelog):
		return ModeChangelog, nil
	}
	return "", fmt.Errorf("checkpoint: unknown snapshot mode %q (want %q, %q or %q)", s, ModeFull, ModeIncremental, ModeChangelog)
}

// String implements fmt.Stringer and flag.Value.
func (m Mode) String() string { return string(m) }

// Set implements flag.Value.
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (config files).
func (m *Mode) UnmarshalText(b []byte) error { return m.Set(string(b)) }

func (m Mode) valid() bool { return m == ModeFull || m == ModeIncremental || m == ModeChangelog }

// pooled reports a mode whose snapshots keep immutable files in the pool
// (incremental, and the bases of changelog).
func (m Mode) pooled() bool { return m == ModeIncremental || m == ModeChangelog }

const (
	// FormatName is the "format" value of the FORMAT file.
	FormatName = "txstream-checkpoints"
	// FormatVersion is the on-disk layout version this package reads and
	// writes (FORMAT file, snapshot metadata and savepoint metadata).
	FormatVersion = 1

	// DefaultRetain is the number of snapshots kept per partition.
	DefaultRetain = 3
	// DefaultGrace is how old an unreferenced pool file or a temporary entry
	// must be before GC removes it.
	DefaultGrace = 10 * time.Minute

	formatFile    = "FORMAT"
	metaFile      = "_snapshot.json"
	savepointFile = "_savepoint.json"
	partitionsDir = "partitions"
	poolDirName   = "pool"
	savepointsDir = "savepoints"
	tmpPrefix     = ".tmp-"
	delPrefix     = ".tmp-del-"
	corruptPrefix = ".tmp-corrupt-"

	maxMetaBytes = 64 << 20
)

var (
	// ErrNoSnapshot is returned by Restore when no snapshot is usable.
	ErrNoSnapshot = errors.New("checkpoint: no usable snapshot")
	// ErrCorrupt wraps every checksum, size, missing-file or bad-metadata
	// failure of a snapshot or savepoint.
	ErrCorrupt = errors.New("checkpoint: corrupt")
	// ErrNotCheckpointDir is returned by Open/OpenExisting for a directory
	// that is not a checkpoint directory.
	ErrNotCheckpointDir = errors.New("checkpoint: not a txstream checkpoint directory")
	// ErrUnsupportedFormat is returned for a FORMAT (or metadata) version
	// this binary does not know.
	ErrUnsupportedFormat = errors.New("checkpoint: unsupported checkpoint format version")
	// ErrSavepointExists is returned by Savepoint on a name collision.
	ErrSavepointExists = errors.New("checkpoint: savepoint already exists")
	// ErrNotFound is returned for a savepoint or savepoint partition that
	// does not exist.
	ErrNotFound = errors.New("checkpoint: not found")
)

// FileInfo describes one file of a snapshot.
type FileInfo struct {
	Name   string `json:"name"`           // file name inside the snapshot (the pebble file name)
	Size   int64  `json:"size"`           // bytes
	CRC32C uint32 `json:"crc32c"`         // Castagnoli
	Pool   string `json:"pool,omitempty"` // incremental: path of the file in the shared pool, relative to the checkpoint dir (slash-separated); empty = stored in the snapshot dir itself
}

// Meta is the metadata of one published snapshot (_snapshot.json).
type Meta struct {
	Format    int               `json:"format"` // metadata format version (1)
	ID        string            `json:"id"`     // sortable: zero-padded offset, creation time, short random suffix
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	TopicID   string            `json:"topic_id,omitempty"`   // Kafka topic id of the incarnation the state was read from; empty = unknown (written before ids were recorded)
	ClusterID string            `json:"cluster_id,omitempty"` // Kafka cluster id; empty = unknown
	Offset    int64             `json:"offset"`               // next offset to process: state reflects every record < Offset
	Mode      Mode              `json:"mode"`
	CreatedAt time.Time         `json:"created_at"`
	Files     []FileInfo        `json:"files"`
	Job       map[string]string `json:"job,omitempty"` // settings that matter for compatibility
	Dir       string            `json:"-"`             // absolute path of the snapshot directory (filled on load)
}

// Bytes returns the total size of the snapshot's files.
func (m Meta) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// TopicPartition names one input partition.
type TopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// String returns "<topic>-<partition>", which is also the directory name.
func (tp TopicPartition) String() string {
	return tp.Topic + "-" + strconv.FormatInt(int64(tp.Partition), 10)
}

// Options configures a Store.
type Options struct {
	// Mode is the publish mode; default ModeIncremental.
	Mode Mode
	// Retain is the number of snapshots kept per partition; 0 means
	// DefaultRetain (3), a negative value disables retention (keep all).
	// Savepoints are separate and are never removed by retention.
	Retain int
	// Logger receives warnings (skipped snapshots, GC) and debug records;
	// nil means zap.NewNop().
	Logger *zap.Logger
	// ForceCopy disables every hard link, even inside the checkpoint
	// directory. Publish and Restore always copy; the only place hard links
	// are used otherwise is Savepoint, which links a source file's verified
	// twin from the pool instead of copying it again.
	ForceCopy bool
	// Grace protects recent entries from GC: an unreferenced pool file or a
	// temporary/torn entry is removed only once its mtime is older than
	// Grace. 0 means DefaultGrace (10m); a negative value means no grace.
	// It is what keeps an offline GC (another process) from removing the
	// files of a publish in flight.
	Grace time.Duration
	// MustExist makes Open fail instead of creating a checkpoint directory.
	MustExist bool
}

// Store is a checkpoint directory. It is safe for concurrent use: Publish,
// Restore and GC serialise per partition; different partitions proceed in
// parallel.
type Store struct {
	dir       string
	mode      Mode
	retain    int // <0: keep all
	grace     time.Duration
	forceCopy bool
	log       *zap.Logger

	mu    sync.Mutex
	parts map[TopicPartition]*sync.Mutex

	cacheMu sync.Mutex
	cache   map[TopicPartition]map[fileKey]uint32

	spMu sync.Mutex
}

type formatDoc struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Open opens the checkpoint directory dir, creating it (and its FORMAT
// file) if it does not exist or is empty. It fails with ErrNotCheckpointDir
// if dir exists, is not empty and has no FORMAT file, and with
// ErrUnsupportedFormat if the FORMAT version is unknown.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("checkpoint: empty checkpoint directory path")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", dir, err)
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
	if err := initDir(abs, opts.MustExist); err != nil {
		return nil, err
	}
	return &Store{
		dir:       abs,
		mode:      mode,
		retain:    retain,
		grace:     grace,
		forceCopy: opts.ForceCopy,
		log:       log.With(zap.String("checkpoint_dir", abs)),
		parts:     make(map[TopicPartition]*sync.Mutex),
		cache:     make(map[TopicPartition]map[fileKey]uint32),
	}, nil
}

// OpenExisting opens an existing checkpoint directory for offline tools. It
// never creates anything and fails with ErrNotCheckpointDir if dir is not a
// checkpoint directory. Retention is disabled on the returned Store (GC only
// removes garbage); use Open with Options{MustExist: true, Retain: n} to
// apply a retention.
func OpenExisting(dir string, logger *zap.Logger) (*Store, error) {
	return Open(dir, Options{Logger: logger, MustExist: true, Retain: -1})
}

func initDir(dir string, mustExist bool) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if mustExist {
			return fmt.Errorf("%w: %s does not exist", ErrNotCheckpointDir, dir)
		}
		if err := ensureDir(dir); err != nil {
			return fmt.Errorf("checkpoint: create %s: %w", dir, err)
		}
		return writeFormat(dir)
	case err != nil:
		return fmt.Errorf("checkpoint: %w", err)
	case !st.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrNotCheckpointDir, dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, formatFile))
	if errors.Is(err, fs.ErrNotExist) {
		if mustExist {
			return fmt.Errorf("%w: %s has no %s file", ErrNotCheckpointDir, dir, formatFile)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		for _, e := range ents {
			// A fresh filesystem's root holds lost+found; tolerate it so the
			// checkpoint dir can be a mount point. A .tmp- entry is a FORMAT
			// write interrupted by a crash.
			if e.Name() != "lost+found" && !strings.HasPrefix(e.Name(), tmpPrefix) {
				return fmt.Errorf("%w: %s is not empty and has no %s file (found %q); refusing to use it",
					ErrNotCheckpointDir, dir, formatFile, e.Name())
			}
		}
		return writeFormat(dir)
	}
	if err != nil {
		return fmt.Errorf("checkpoint: read %s: %w", formatFile, err)
	}
	var doc formatDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%w: %s: %s is not valid JSON: %v", ErrNotCheckpointDir, dir, formatFile, err)
	}
	if doc.Format != FormatName {
		return fmt.Errorf("%w: %s: %s says format %q, want %q", ErrNotCheckpointDir, dir, formatFile, doc.Format, FormatName)
	}
	if doc.Version != FormatVersion {
		return fmt.Errorf("%w: %s has format version %d, this binary supports version %d",
			ErrUnsupportedFormat, dir, doc.Version, FormatVersion)
	}
	return nil
}

func writeFormat(dir string) error {
	b, err := json.MarshalIndent(formatDoc{Format: FormatName, Version: FormatVersion, CreatedAt: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, formatFile, append(b, '\n')); err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", formatFile, err)
	}
	return nil
}

// Dir returns the absolute path of the checkpoint directory.
func (s *Store) Dir() string { return s.dir }

// Mode returns the publish mode.
func (s *Store) Mode() Mode { return s.mode }

func (s *Store) partLock(tp TopicPartition) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.parts[tp]
	if l == nil {
		l = new(sync.Mutex)
		s.parts[tp] = l
	}
	return l
}

func (s *Store) partDir(tp TopicPartition) string {
	return filepath.Join(s.dir, partitionsDir, tp.String())
}

func (s *Store) poolDir(tp TopicPartition) string {
	return filepath.Join(s.dir, poolDirName, tp.String())
}

// poolRef is the slash-separated path of a pool file relative to the
// checkpoint dir, as stored in FileInfo.Pool.
func poolRef(tp TopicPartition, poolName string) string {
	return poolDirName + "/" + tp.String() + "/" + poolName
}

func poolName(name string, crc uint32, size int64) string {
	return fmt.Sprintf("%s.%08x.%d", name, crc, size)
}

// filePath resolves where a snapshot file is stored.
func (s *Store) filePath(m Meta, f FileInfo) string {
	if f.Pool != "" {
		return filepath.Join(s.dir, filepath.FromSlash(f.Pool))
	}
	return filepath.Join(m.Dir, f.Name)
}

// Partitions lists the partitions that have a snapshot directory, sorted by
// topic and partition.
func (s *Store) Partitions() ([]TopicPartition, error) {
	tps, err := s.listTPDirs(filepath.Join(s.dir, partitionsDir))
	if err != nil {
		return nil, err
	}
	sortTPs(tps)
	return tps, nil
}

func (s *Store) listTPDirs(dir string) ([]TopicPartition, error) {
	ents, err := readVisible(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var out []TopicPartition
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		tp, ok := parseTPDir(e.Name())
		if !ok {
			s.log.Warn("checkpoint: ignoring unexpected directory", zap.String("path", filepath.Join(dir, e.Name())))
			continue
		}
		out = append(out, tp)
	}
	return out, nil
}

func sortTPs(tps []TopicPartition) {
	sort.Slice(tps, func(i, j int) bool {
		if tps[i].Topic != tps[j].Topic {
			return tps[i].Topic < tps[j].Topic
		}
		return tps[i].Partition < tps[j].Partition
	})
}

func parseTPDir(name string) (TopicPartition, bool) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 {
		return TopicPartition{}, false
	}
	p, err := strconv.ParseInt(name[i+1:], 10, 32)
	if err != nil || p < 0 || strconv.FormatInt(p, 10) != name[i+1:] {
		return TopicPartition{}, false
	}
	tp := TopicPartition{Topic: name[:i], Partition: int32(p)}
	if validateTP(tp) != nil {
		return TopicPartition{}, false
	}
	return tp, true
}

// validateTP checks a topic name against Kafka's rules (which also makes it
// a safe path component) and the partition number.
func validateTP(tp TopicPartition) error {
	t := tp.Topic
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("checkpoint: invalid topic name %q", t)
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("checkpoint: invalid topic name %q (allowed: letters, digits, '.', '_', '-')", t)
		}
	}
	if tp.Partition < 0 {
		return fmt.Errorf("checkpoint: invalid partition %d", tp.Partition)
	}
	return nil
}

// validFileName reports whether name is acceptable as a snapshot file name:
// a single path component that cannot collide with our own entries.
func validFileName(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 255 ||
		name == metaFile || name == savepointFile || strings.HasPrefix(name, tmpPrefix) {
		return false
	}
	return !strings.ContainsAny(name, "/\\\x00")
}

// isImmutable reports whether pebble never modifies a file once written.
func isImmutable(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

func randSuffix() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; fall back to time.
		return strconv.FormatInt(time.Now().UnixNano()%0xffffff, 16)
	}
	return hex.EncodeToString(b[:])
}

const idTimeLayout = "20060102T150405.000000000Z"

func newSnapshotID(offset int64, t time.Time) string {
	return fmt.Sprintf("%020d-%s-%s", offset, t.UTC().Format(idTimeLayout), randSuffix())
}

// errBadJSON marks a metadata file that exists but cannot be decoded.
var errBadJSON = errors.New("malformed metadata")

// readJSON reads and decodes a bounded JSON file. A file that is too large
// or not valid JSON for v yields an error matching errBadJSON.
func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxMetaBytes {
		return fmt.Errorf("%w: %s: larger than %d bytes", errBadJSON, path, maxMetaBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", errBadJSON, path, err)
	}
	return nil
}

// validateMeta checks everything Restore and GC rely on, so that a damaged
// or hostile metadata file cannot make us read or delete outside the
// checkpoint directory.
func validateMeta(m Meta, tp TopicPartition) error {
	if m.Format != FormatVersion {
		return fmt.Errorf("metadata format %d, want %d", m.Format, FormatVersion)
	}
	if m.Topic != tp.Topic || m.Partition != tp.Partition {
		return fmt.Errorf("metadata is for %s-%d, stored under %s", m.Topic, m.Partition, tp)
	}
	if err := validateSourceIDs(m.TopicID, m.ClusterID); err != nil {
		return err
	}
	if m.ID == "" || !validFileName(m.ID) || strings.HasPrefix(m.ID, ".") {
		return fmt.Errorf("invalid snapshot id %q", m.ID)
	}
	if m.Offset < 0 {
		return fmt.Errorf("negative offset %d", m.Offset)
	}
	if !m.Mode.valid() {
		return fmt.Errorf("unknown mode %q", m.Mode)
	}
	if m.CreatedAt.IsZero() {
		return errors.New("missing created_at")
	}
	if len(m.Files) == 0 {
		return errors.New("no files")
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if !validFileName(f.Name) {
			return fmt.Errorf("invalid file name %q", f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("duplicate file %q", f.Name)
		}
		seen[f.Name] = true
		if f.Size < 0 {
			return fmt.Errorf("file %q: negative size", f.Name)
		}
		if f.Pool != "" {
			if !m.Mode.pooled() {
				return fmt.Errorf("file %q: pool reference in a %s snapshot", f.Name, m.Mode)
			}
			// The pool path is fully determined by the file's identity; this
			// also catches damage to the name, size or checksum fields.
			if want := poolRef(tp, poolName(f.Name, f.CRC32C, f.Size)); f.Pool != want {
				return fmt.Errorf("file %q: pool reference %q, want %q", f.Name, f.Pool, want)
			}
		}
	}
	return nil
}
