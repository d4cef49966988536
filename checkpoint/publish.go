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
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

// PublishStats describes the work one Publish did.
type PublishStats struct {
	Files        int   // files in the snapshot
	FilesCopied  int   // files written (snapshot dir + new pool files)
	BytesWritten int64 // bytes written, data files plus metadata
	TotalBytes   int64 // total size of the snapshot's files (Meta.Bytes)
	// BytesHashed counts bytes read only to identify a file the pool may
	// already hold (incremental mode, checksum cache miss, e.g. the first
	// publish after a restart). Zero in steady state.
	BytesHashed int64
	Duration    time.Duration
}

type srcFile struct {
	name, path string
	size       int64
	key        fileKey
}

// listSource lists the regular files of a staging directory (a pebble
// checkpoint is flat).
func listSource(dir string) ([]srcFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read source dir: %w", err)
	}
	out := make([]srcFile, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(dir, name)
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("source dir: %w", err)
		}
		if !info.Mode().IsRegular() {
			return nil, fmt.Errorf("source dir %s: %q is not a regular file (subdirectories are not supported)", dir, name)
		}
		if !validFileName(name) {
			return nil, fmt.Errorf("source dir %s: file name %q is reserved or invalid", dir, name)
		}
		out = append(out, srcFile{name: name, path: p, size: info.Size(), key: makeFileKey(name, info)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("source dir %s is empty", dir)
	}
	return out, nil
}

// Publish is PublishFrom without a topic id or cluster id: the snapshot
// records no identity, so RestoreFrom cannot tell it apart from a snapshot
// of another topic incarnation or cluster.
func (s *Store) Publish(ctx context.Context, topic string, partition int32, offset int64, srcDir string, job map[string]string) (Meta, PublishStats, error) {
	return s.PublishFrom(ctx, Source{Topic: topic, Partition: partition}, offset, srcDir, job)
}

// PublishFrom atomically publishes the files of srcDir (a pebble
// checkpoint) as a new snapshot of src.Topic/src.Partition whose state
// reflects every record below offset, recording src.TopicID and
// src.ClusterID in its metadata (see Source; an all-zero topic id is
// recorded as unknown). srcDir is only read; the caller deletes it
// afterwards. After a successful publish, snapshots beyond the retention
// are removed and the partition's pool is garbage-collected; failures there
// are logged, not returned.
func (s *Store) PublishFrom(ctx context.Context, src Source, offset int64, srcDir string, job map[string]string) (Meta, PublishStats, error) {
	return publishPartition(ctx, s, s.log, "", src, offset, srcDir, job)
}

// poolState is the view of one partition's pool during a publish.
type poolState struct {
	dir      string
	names    map[string]bool // pool file names present
	bySize   map[string]bool // "<name>\x00<size>": some pool file has this source name and size
	created  []string        // pool files created by this publish (removed if it fails)
	modified bool            // entries created or replaced: the dir needs an fsync
}

func (s *Store) loadPool(tp TopicPartition) (*poolState, error) {
	ps := &poolState{dir: s.poolDir(tp), names: map[string]bool{}, bySize: map[string]bool{}}
	if err := ensureDir(ps.dir); err != nil {
		return nil, err
	}
	ents, err := readVisible(ps.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		ps.names[n] = true
		// <name>.<crc>.<size>
		i := strings.LastIndexByte(n, '.')
		if i <= 0 {
			continue
		}
		j := strings.LastIndexByte(n[:i], '.')
		if j <= 0 {
			continue
		}
		ps.bySize[n[:j]+"\x00"+n[i+1:]] = true
	}
	return ps, nil
}

func (s *Store) publishLocked(ctx context.Context, from Source, offset int64, src []srcFile, job map[string]string) (m Meta, st PublishStats, err error) {
	tp := TopicPartition{Topic: from.Topic, Partition: from.Partition}
	created := time.Now().UTC()
	id := newSnapshotID(offset, created)
	pdir := s.partDir(tp)
	if err := ensureDir(pdir); err != nil {
		return Meta{}, st, err
	}
	tmp := filepath.Join(pdir, tmpPrefix+id)
	if err := os.Mkdir(tmp, dirPerm); err != nil {
		return Meta{}, st, err
	}
	var ps *poolState
	renamed := false
	defer func() {
		if renamed {
			return
		}
		os.RemoveAll(tmp)
		if ps != nil {
			for _, p := range ps.created {
				os.Remove(p)
			}
		}
	}()

	incremental := s.mode.pooled()
	var oldCache, newCache map[fileKey]uint32
	if incremental {
		if ps, err = s.loadPool(tp); err != nil {
			return Meta{}, st, fmt.Errorf("pool: %w", err)
		}
		s.cacheMu.Lock()
		oldCache = maps.Clone(s.cache[tp])
		s.cacheMu.Unlock()
		newCache = make(map[fileKey]uint32, len(src))
	}

	files := make([]FileInfo, 0, len(src))
	for _, f := range src {
		if err := ctx.Err(); err != nil {
			return Meta{}, st, err
		}
		var fi FileInfo
		if incremental && isImmutable(f.name) {
			fi, err = s.storeInPool(ctx, tp, ps, f, oldCache, &st)
			if err != nil {
				return Meta{}, st, err
			}
			newCache[f.key] = fi.CRC32C
		} else {
			n, crc, err := copyFile(ctx, f.path, filepath.Join(tmp, f.name))
			if err != nil {
				return Meta{}, st, fmt.Errorf("copy %s: %w", f.name, err)
			}
			if n != f.size {
				return Meta{}, st, fmt.Errorf("source file %s changed while copying (size %d, then %d)", f.path, f.size, n)
			}
			st.FilesCopied++
			st.BytesWritten += n
			fi = FileInfo{Name: f.name, Size: n, CRC32C: crc}
		}
		files = append(files, fi)
		st.Files++
		st.TotalBytes += fi.Size
		faults.Hit(faults.SnapshotCopy) // crash tests: a torn snapshot
	}
	// Pool files must be durable under their final names before any
	// metadata references them.
	if ps != nil && ps.modified {
		if err := syncDir(ps.dir); err != nil {
			return Meta{}, st, err
		}
	}

	m = Meta{
		Format:    FormatVersion,
		ID:        id,
		Topic:     tp.Topic,
		Partition: tp.Partition,
		TopicID:   from.TopicID,
		ClusterID: from.ClusterID,
		Offset:    offset,
		Mode:      s.mode,
		CreatedAt: created,
		Files:     files,
		Job:       maps.Clone(job),
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Meta{}, st, err
	}
	b = append(b, '\n')
	faults.Hit(faults.SnapshotPublish) // crash tests: files written, no metadata
	if err := writeFileSync(filepath.Join(tmp, metaFile), b); err != nil {
		return Meta{}, st, fmt.Errorf("write metadata: %w", err)
	}
	st.BytesWritten += int64(len(b))
	if err := syncDir(tmp); err != nil {
		return Meta{}, st, err
	}
	final := filepath.Join(pdir, id)
	if err := os.Rename(tmp, final); err != nil {
		return Meta{}, st, err
	}
	renamed = true
	m.Dir = final
	if incremental {
		s.cacheMu.Lock()
		s.cache[tp] = newCache
		s.cacheMu.Unlock()
	}
	if err := syncDir(pdir); err != nil {
		// The snapshot is complete and in place but its directory entry may
		// not survive a crash: report failure, leave it for retention.
		return Meta{}, st, err
	}
	return m, st, nil
}

// storeInPool makes sure the pool holds f and returns its FileInfo. An
// existing pool file is reused when its identity (name, CRC32C, size) is
// known, from the checksum cache or, on a cache miss where the pool has a
// same-named file of the same size, by hashing the source. Otherwise the
// file is copied (checksummed on the way) into a temporary file, fsynced and
// renamed to its content-derived name.
func (s *Store) storeInPool(ctx context.Context, tp TopicPartition, ps *poolState, f srcFile, cache map[fileKey]uint32, st *PublishStats) (FileInfo, error) {
	crc, known := cache[f.key]
	if !known && ps.bySize[f.name+"\x00"+strconv.FormatInt(f.size, 10)] {
		n, c, err := hashFile(ctx, f.path)
		if err != nil {
			return FileInfo{}, fmt.Errorf("hash %s: %w", f.path, err)
		}
		if n != f.size {
			return FileInfo{}, fmt.Errorf("source file %s changed while hashing (size %d, then %d)", f.path, f.size, n)
		}
		st.BytesHashed += n
		crc, known = c, true
	}
	if known {
		pn := poolName(f.name, crc, f.size)
		if ps.names[pn] && s.reusePoolFile(filepath.Join(ps.dir, pn), f.size) {
			return FileInfo{Name: f.name, Size: f.size, CRC32C: crc, Pool: poolRef(tp, pn)}, nil
		}
	}

	tmp := filepath.Join(ps.dir, tmpPrefix+"new-"+f.name+"-"+randSuffix())
	n, c, err := copyFile(ctx, f.path, tmp)
	if err != nil {
		return FileInfo{}, fmt.Errorf("copy %s to pool: %w", f.name, err)
	}
	if n != f.size {
		os.Remove(tmp)
		return FileInfo{}, fmt.Errorf("source file %s changed while copying (size %d, then %d)", f.path, f.size, n)
	}
	st.FilesCopied++
	st.BytesWritten += n
	pn := poolName(f.name, c, n)
	dst := filepath.Join(ps.dir, pn)
	// If dst exists it has the same identity (name, checksum, size) but
	// failed reuse (wrong size or vanished): replacing it repairs every
	// snapshot that references it.
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return FileInfo{}, fmt.Errorf("pool: %w", err)
	}
	if !ps.names[pn] {
		ps.created = append(ps.created, dst)
		ps.names[pn] = true
		ps.bySize[f.name+"\x00"+strconv.FormatInt(n, 10)] = true
	}
	ps.modified = true
	return FileInfo{Name: f.name, Size: n, CRC32C: c, Pool: poolRef(tp, pn)}, nil
}

// reusePoolFile checks that an existing pool file still exists with the
// expected size and refreshes its mtime when it is getting old, so that an
// offline GC in another process (which spares files younger than the grace
// period) cannot remove a file this publish is about to reference again.
func (s *Store) reusePoolFile(path string, size int64) bool {
	info, err := os.Stat(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("checkpoint: cannot stat pool file, copying it again", zap.String("file", path), zap.Error(err))
		}
		return false
	}
	if info.Size() != size {
		s.log.Warn("checkpoint: pool file has the wrong size, replacing it",
			zap.String("file", path), zap.Int64("size", info.Size()), zap.Int64("want", size))
		return false
	}
	now := time.Now()
	if now.Sub(info.ModTime()) >= s.grace/2 {
		if err := os.Chtimes(path, now, now); err != nil {
			return !errors.Is(err, fs.ErrNotExist)
		}
	}
	return true
}
