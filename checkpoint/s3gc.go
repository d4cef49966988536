package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
)

// GC implements Storage, like (*Store).GC: per partition, snapshots beyond
// the retention (metadata object first, so a crash mid-way leaves a torn
// prefix, never a listed snapshot with missing files), torn prefixes and
// unreferenced pool objects older than the grace period; then savepoint
// objects that no savepoint metadata names and incomplete multipart
// uploads, both older than the grace period. Ages are the objects'
// modification times on the server compared with this machine's clock.
func (s *S3Store) GC(ctx context.Context, dryRun bool) (GCReport, error) {
	rep := GCReport{DryRun: dryRun}
	a, err := s.listTPs(ctx, partitionsDir)
	if err != nil {
		return rep, err
	}
	b, err := s.listTPs(ctx, poolDirName)
	if err != nil {
		return rep, err
	}
	c, err := s.listTPs(ctx, changelogDir)
	if err != nil {
		return rep, err
	}
	errs, err := gcPartitions(ctx, s, dryRun, &rep, a, b, c)
	if err != nil {
		return rep, err
	}
	s.spMu.Lock()
	err = s.gcSavepoints(ctx, dryRun, &rep)
	s.spMu.Unlock()
	if err != nil {
		errs = append(errs, err)
	}
	if err := s.gcUploads(ctx, dryRun, &rep); err != nil {
		errs = append(errs, err)
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

func (s *S3Store) removeAll(ctx context.Context, objs []minio.ObjectInfo) error {
	for _, o := range objs {
		if err := s.remove(ctx, s.rel(o.Key)); err != nil {
			return err
		}
	}
	return nil
}

// gcPartitionLocked is (*Store).gcPartitionLocked for object storage.
func (s *S3Store) gcPartitionLocked(ctx context.Context, tp TopicPartition, keepID string, dryRun bool, rep *GCReport) error {
	now := time.Now()
	sc, err := s.scanPartition(ctx, tp)
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
			g := sc.snaps[m.ID]
			dir := partRel(tp) + m.ID
			rep.add(GCItem{Path: dir, Kind: GCSnapshot, Bytes: g.bytes()})
			if !dryRun {
				if err := s.remove(ctx, dir+"/"+metaFile); err != nil {
					return fmt.Errorf("remove snapshot %s: %w", m.ID, err)
				}
				if err := s.removeAll(ctx, g.objs); err != nil {
					return fmt.Errorf("remove snapshot %s: %w", m.ID, err)
				}
			}
			s.log.Debug("checkpoint: snapshot removed by retention", zap.String("partition", tp.String()),
				zap.String("snapshot", m.ID), zap.Int64("offset", m.Offset), zap.Bool("dry_run", dryRun))
		}
	}
	for _, t := range sc.torn {
		if now.Sub(t.mtime) < s.grace {
			rep.SkippedRecent++
			continue
		}
		g := sc.snaps[t.name]
		s.log.Warn("checkpoint: removing torn snapshot", zap.String("partition", tp.String()),
			zap.String("snapshot", t.name), zap.Error(t.err), zap.Bool("dry_run", dryRun))
		rep.add(GCItem{Path: t.path, Kind: GCTorn, Bytes: g.bytes()})
		if !dryRun {
			if err := s.removeAll(ctx, g.objs); err != nil {
				return err
			}
		}
	}
	if err := s.gcChangelogLocked(ctx, tp, kept, dropped, now, dryRun, rep); err != nil {
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
	objs, err := s.list(ctx, poolRel(tp), true, 0)
	if err != nil {
		return err
	}
	for _, o := range objs {
		rel := s.rel(o.Key)
		name := strings.TrimPrefix(rel, poolRel(tp))
		if refs[rel] {
			rep.PoolReferenced++
			continue
		}
		if now.Sub(o.LastModified) < s.grace {
			rep.SkippedRecent++
			continue
		}
		kind := GCPool
		if strings.HasPrefix(name, tmpPrefix) {
			kind = GCTemp
		}
		if !dryRun {
			if err := s.remove(ctx, rel); err != nil {
				return err
			}
			faults.Hit(faults.PoolGC) // crash tests: GC half done
		}
		rep.add(GCItem{Path: rel, Kind: kind, Bytes: o.Size})
	}
	return nil
}

// gcSavepoints removes, older than the grace period, the objects under
// savepoints/ that no savepoint's metadata names: the files of a
// savepoint whose upload failed or that lost a race for its name, and
// what an interrupted DeleteSavepoint left.
func (s *S3Store) gcSavepoints(ctx context.Context, dryRun bool, rep *GCReport) error {
	now := time.Now()
	objs, err := s.list(ctx, savepointsDir+"/", true, 0)
	if err != nil {
		return err
	}
	ids := map[string]string{} // name -> id of its valid metadata
	for _, o := range objs {
		rel := s.rel(o.Key)
		name, rest, _ := strings.Cut(strings.TrimPrefix(rel, savepointsDir+"/"), "/")
		if rest != savepointFile {
			continue
		}
		sp, err := s.readSavepoint(ctx, name)
		switch {
		case err == nil:
			ids[name] = sp.ID
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedFormat):
			ids[name] = "" // keep everything of a savepoint we cannot read
		default:
			return err
		}
	}
	for _, o := range objs {
		rel := s.rel(o.Key)
		name, rest, _ := strings.Cut(strings.TrimPrefix(rel, savepointsDir+"/"), "/")
		id, ok := ids[name]
		if ok && (id == "" || rest == savepointFile || strings.HasPrefix(rest, id+"/")) {
			continue
		}
		if now.Sub(o.LastModified) < s.grace {
			rep.SkippedRecent++
			continue
		}
		if !dryRun {
			if err := s.remove(ctx, rel); err != nil {
				return err
			}
		}
		rep.add(GCItem{Path: rel, Kind: GCTemp, Bytes: o.Size})
	}
	return nil
}

// gcUploads aborts the incomplete multipart uploads under the prefix that
// were started longer than the grace period ago (a crashed publish of a
// large file); their parts cost storage but are not objects.
func (s *S3Store) gcUploads(ctx context.Context, dryRun bool, rep *GCReport) error {
	now := time.Now()
	pfx := ""
	if s.prefix != "" {
		pfx = s.prefix + "/"
	}
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	young := map[string]bool{}
	var old []minio.ObjectMultipartInfo
	for u := range s.cl.ListIncompleteUploads(lctx, s.bucket, pfx, true) {
		if u.Err != nil {
			return fmt.Errorf("list incomplete uploads: %w", u.Err)
		}
		if now.Sub(u.Initiated) < s.grace {
			young[u.Key] = true
			continue
		}
		old = append(old, u)
	}
	done := map[string]bool{}
	for _, u := range old {
		if young[u.Key] {
			rep.SkippedRecent++
			continue
		}
		if done[u.Key] {
			continue
		}
		done[u.Key] = true
		if !dryRun {
			rctx, cancel := context.WithTimeout(ctx, s.timeout)
			err := s.cl.RemoveIncompleteUpload(rctx, s.bucket, u.Key)
			cancel()
			if err != nil {
				return fmt.Errorf("abort incomplete upload of %s: %w", u.Key, err)
			}
		}
		rep.add(GCItem{Path: s.rel(u.Key) + " (incomplete upload)", Kind: GCTemp, Bytes: u.Size})
	}
	return nil
}
