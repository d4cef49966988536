package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

// GC item kinds.
const (
	GCSnapshot = "snapshot" // snapshot beyond the retention
	GCPool     = "pool"     // pool file no retained snapshot references
	GCTemp     = "temp"     // leftover .tmp- entry (crashed publish, restore, savepoint or deletion)
	GCTorn     = "torn"     // snapshot directory without valid metadata
	// GCChangelog is the change log (segments) of a base no longer retained.
	GCChangelog = "changelog"
)

// GCItem is one entry GC removed (or would remove, in a dry run).
type GCItem struct {
	Path  string `json:"path"` // relative to the checkpoint dir
	Kind  string `json:"kind"` // GCSnapshot, GCPool, GCTemp or GCTorn
	Bytes int64  `json:"bytes"`
}

// GCReport summarises a GC run.
type GCReport struct {
	DryRun     bool     `json:"dry_run"`
	Removed    []GCItem `json:"removed"`
	BytesFreed int64    `json:"bytes_freed"`
	// PoolReferenced counts pool files kept because a retained snapshot
	// references them.
	PoolReferenced int `json:"pool_referenced"`
	// SkippedRecent counts unreferenced pool files and temporary or torn
	// entries kept because they are younger than the grace period.
	SkippedRecent int `json:"skipped_recent"`
}

func (r *GCReport) add(it GCItem) {
	r.Removed = append(r.Removed, it)
	r.BytesFreed += it.Bytes
}

// GC removes, for every partition: snapshots beyond the retention (oldest
// first), pool files that no retained snapshot references, and leftover
// temporary entries and torn snapshot directories; plus leftover temporary
// savepoints. Pool files, temporary and torn entries younger than the grace
// period are kept, which protects the files of a publish in flight in
// another process; publishes in this process are excluded by the
// partition lock. With dryRun nothing is removed and the report lists what
// would be.
//
// The referenced set is computed from the metadata on disk. Savepoints are
// self-contained and never reference the pool.
func (s *Store) GC(ctx context.Context, dryRun bool) (GCReport, error) {
	rep := GCReport{DryRun: dryRun}
	a, err := s.listTPDirs(filepath.Join(s.dir, partitionsDir))
	if err != nil {
		return rep, err
	}
	b, err := s.listTPDirs(filepath.Join(s.dir, poolDirName))
	if err != nil {
		return rep, err
	}
	c, err := s.listTPDirs(filepath.Join(s.dir, changelogDir))
	if err != nil {
		return rep, err
	}
	errs, err := gcPartitions(ctx, s, dryRun, &rep, a, b, c)
	if err != nil {
		return rep, err
	}

	now := time.Now()
	s.spMu.Lock()
	err = s.gcTemps(filepath.Join(s.dir, savepointsDir), now, dryRun, &rep)
	s.spMu.Unlock()
	if err != nil {
		errs = append(errs, err)
	}
	for _, d := range []string{s.dir, filepath.Join(s.dir, partitionsDir), filepath.Join(s.dir, poolDirName), filepath.Join(s.dir, changelogDir)} {
		if err := s.gcTemps(d, now, dryRun, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	if len(rep.Removed) > 0 {
		s.log.Debug("checkpoint: GC done", zap.Bool("dry_run", dryRun), zap.Int("removed", len(rep.Removed)),
			zap.Int64("bytes_freed", rep.BytesFreed), zap.Int("skipped_recent", rep.SkippedRecent))
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("checkpoint: gc: %w", errors.Join(errs...))
	}
	return rep, nil
}

// gcTemps removes the .tmp- entries of dir older than the grace period
// (.tmp-del- entries at any age: they were renamed away to be deleted).
func (s *Store) gcTemps(dir string, now time.Time, dryRun bool, rep *GCReport) error {
	ents, err := readDirIfExists(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if err := s.removeTemp(tempEntry{name: e.Name(), path: filepath.Join(dir, e.Name()), mtime: info.ModTime()}, now, dryRun, rep); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) removeTemp(t tempEntry, now time.Time, dryRun bool, rep *GCReport) error {
	if !strings.HasPrefix(t.name, delPrefix) && now.Sub(t.mtime) < s.grace {
		rep.SkippedRecent++
		return nil
	}
	it := GCItem{Path: s.rel(t.path), Kind: GCTemp, Bytes: diskUsage(t.path)}
	if !dryRun {
		if err := os.RemoveAll(t.path); err != nil {
			return err
		}
	}
	rep.add(it)
	return nil
}

func (s *Store) rel(p string) string {
	r, err := filepath.Rel(s.dir, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

// gcPartitionLocked applies the retention to tp (always keeping keepID, the
// snapshot just published, if set), removes its old temporary entries and
// torn snapshot directories, then removes the pool files that no retained
// snapshot references. The caller holds the partition lock, so no publish
// of this process is in flight for tp.
func (s *Store) gcPartitionLocked(ctx context.Context, tp TopicPartition, keepID string, dryRun bool, rep *GCReport) error {
	now := time.Now()
	sc, err := s.scanPartition(tp)
	if err != nil {
		return err
	}

	kept := sc.metas
	dropped := map[string]bool{}
	if s.retain >= 0 {
		var drop []Meta
		kept, drop = retention(sc.metas, keepID, s.retain, recoveryPoints(s.Segments))
		for i := len(drop) - 1; i >= 0; i-- { // oldest first
			if err := ctx.Err(); err != nil {
				return err
			}
			m := drop[i]
			dropped[m.ID] = true
			it := GCItem{Path: s.rel(m.Dir), Kind: GCSnapshot, Bytes: diskUsage(m.Dir)}
			if !dryRun {
				if err := removeDirDurably(m.Dir); err != nil {
					return fmt.Errorf("remove snapshot %s: %w", m.ID, err)
				}
			}
			rep.add(it)
			s.log.Debug("checkpoint: snapshot removed by retention", zap.String("partition", tp.String()),
				zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset), zap.Bool("dry_run", dryRun))
		}
	}

	for _, t := range sc.temps {
		if err := s.removeTemp(t, now, dryRun, rep); err != nil {
			return err
		}
	}
	for _, t := range sc.torn {
		if now.Sub(t.mtime) < s.grace {
			rep.SkippedRecent++
			continue
		}
		s.log.Warn("checkpoint: removing torn snapshot", zap.String("partition", tp.String()),
			zap.String("snapshot", t.name), zap.Error(t.err), zap.Bool("dry_run", dryRun))
		it := GCItem{Path: s.rel(t.path), Kind: GCTorn, Bytes: diskUsage(t.path)}
		if !dryRun {
			if err := os.RemoveAll(t.path); err != nil {
				return err
			}
		}
		rep.add(it)
	}
	if err := s.gcChangelogLocked(tp, kept, dropped, now, dryRun, rep); err != nil {
		return err
	}

	refs := make(map[string]bool)
	for _, m := range kept {
		for _, f := range m.Files {
			if f.Pool != "" {
				refs[f.Pool] = true
			}
		}
	}
	return s.gcPool(tp, refs, now, dryRun, rep)
}

// retention splits metas (newest first) into the snapshots to keep and to
// drop (both newest first), keeping the snapshots that hold the retain
// newest recovery points, and always keepID. points counts the recovery
// points of a snapshot: 1, or in changelog mode the base plus each
// segment of its chain, so retention 3 keeps a base only while it or its
// segments are among the 3 newest points (an older base and its log go
// once a newer base has two segments), not three bases and their logs.
//
// Snapshots of another topic incarnation or cluster (CheckSource) than the
// reference snapshot (keepID, the one just published, or else the most
// recently created one) get a budget of their own: otherwise, after a
// topic is re-created or the cluster fails over, the old source's
// snapshots, whose offsets are higher, would take the budget and every new
// snapshot would drop the previous one, leaving the current source a
// single snapshot until its offsets pass the old ones. The kept set is a
// superset of what a single budget keeps: the old source's retain newest
// snapshots stay until removed by hand (they are the right ones if it is
// this process that is pointed at the wrong topic or cluster).
func retention(metas []Meta, keepID string, retain int, points func(Meta) int) (kept, drop []Meta) {
	var ref *Meta // defines the current source
	for i := range metas {
		m := &metas[i]
		switch {
		case keepID != "":
			if m.ID == keepID {
				ref = m
			}
		case ref == nil || m.CreatedAt.After(ref.CreatedAt):
			ref = m
		}
	}
	budget := map[bool]int{true: retain, false: retain}
	if keepID != "" && ref != nil {
		budget[true] -= points(*ref) // ref is keepID, kept whatever its rank
	}
	for _, m := range metas {
		same := ref == nil || CheckSource("", m.Source(), ref.Source()) == nil
		switch {
		case keepID != "" && m.ID == keepID:
			kept = append(kept, m)
		case budget[same] > 0:
			kept = append(kept, m)
			budget[same] -= points(m)
		default:
			drop = append(drop, m)
		}
	}
	return kept, drop
}

// gcPool removes the files of tp's pool that are not in refs and older than
// the grace period, and old temporary files.
func (s *Store) gcPool(tp TopicPartition, refs map[string]bool, now time.Time, dryRun bool, rep *GCReport) error {
	dir := s.poolDir(tp)
	ents, err := readDirIfExists(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, name)
		if strings.HasPrefix(name, tmpPrefix) {
			if err := s.removeTemp(tempEntry{name: name, path: p, mtime: info.ModTime()}, now, dryRun, rep); err != nil {
				return err
			}
			continue
		}
		if refs[poolRef(tp, name)] {
			rep.PoolReferenced++
			continue
		}
		if !info.Mode().IsRegular() {
			continue
		}
		if now.Sub(info.ModTime()) < s.grace {
			rep.SkippedRecent++
			continue
		}
		if !dryRun {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			faults.Hit(faults.PoolGC) // crash tests: GC half done
		}
		rep.add(GCItem{Path: s.rel(p), Kind: GCPool, Bytes: info.Size()})
	}
	return nil
}
