package checkpoint

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// partitioned is what the directory store and the object store share
// below their public methods: a lock per partition, the publish of one
// snapshot under it, and retention/GC of one partition under it. The
// steps around them (validation, locking, logging, retention after a
// publish, the walk over every partition in GC) are written once, here.
type partitioned interface {
	partLock(tp TopicPartition) *sync.Mutex
	publishLocked(ctx context.Context, from Source, offset int64, src []srcFile, job map[string]string) (Meta, PublishStats, error)
	gcPartitionLocked(ctx context.Context, tp TopicPartition, keepID string, dryRun bool, rep *GCReport) error
}

// publishPartition validates src, lists srcDir, publishes it under the
// partition's lock and applies retention to the partition afterwards (a
// failure there is logged: the snapshot is published). where names the
// storage in errors ("" for none).
func publishPartition(ctx context.Context, p partitioned, log *zap.Logger, where string, src Source, offset int64, srcDir string, job map[string]string) (Meta, PublishStats, error) {
	start := time.Now()
	tp := TopicPartition{Topic: src.Topic, Partition: src.Partition}
	if err := validateTP(tp); err != nil {
		return Meta{}, PublishStats{}, err
	}
	src.TopicID, src.ClusterID = normID(src.TopicID), normID(src.ClusterID)
	if err := validateSourceIDs(src.TopicID, src.ClusterID); err != nil {
		return Meta{}, PublishStats{}, fmt.Errorf("checkpoint: publish %s: %w", tp, err)
	}
	if offset < 0 {
		return Meta{}, PublishStats{}, fmt.Errorf("checkpoint: publish %s: negative offset %d", tp, offset)
	}
	files, err := listSource(srcDir)
	if err != nil {
		return Meta{}, PublishStats{}, fmt.Errorf("checkpoint: publish %s: %w", tp, err)
	}

	l := p.partLock(tp)
	l.Lock()
	defer l.Unlock()

	m, st, err := p.publishLocked(ctx, src, offset, files, job)
	st.Duration = time.Since(start)
	if err != nil {
		if where != "" {
			return Meta{}, st, fmt.Errorf("checkpoint: publish %s at offset %d to %s: %w", tp, offset, where, err)
		}
		return Meta{}, st, fmt.Errorf("checkpoint: publish %s at offset %d: %w", tp, offset, err)
	}
	log.Debug("checkpoint: snapshot published",
		zap.String("partition", tp.String()), zap.String("snapshot", m.ID), zap.Int64("offset", offset),
		zap.String("topic_id", m.TopicID), zap.String("cluster_id", m.ClusterID),
		zap.String("mode", string(m.Mode)), zap.Int("files", st.Files), zap.Int("files_copied", st.FilesCopied),
		zap.Int64("bytes_written", st.BytesWritten), zap.Int64("total_bytes", st.TotalBytes),
		zap.Int64("bytes_hashed", st.BytesHashed), zap.Duration("duration", st.Duration))

	if ctx.Err() == nil {
		var rep GCReport
		if err := p.gcPartitionLocked(ctx, tp, m.ID, false, &rep); err != nil {
			log.Warn("checkpoint: retention/GC after publish failed", zap.String("partition", tp.String()), zap.Error(err))
		}
	}
	return m, st, nil
}

// recoveryPoints counts, for retention, the recovery points a snapshot
// provides with segments listing the change logs: 1 for a snapshot, and
// for a changelog base 1 plus the contiguous segments of its chain. A log
// that cannot be listed counts as none, which keeps more, never less.
func recoveryPoints(segments func(topic string, partition int32, base string) ([]Segment, error)) func(Meta) int {
	return func(m Meta) int {
		if m.Mode != ModeChangelog {
			return 1
		}
		segs, err := segments(m.Topic, m.Partition, m.ID)
		if err != nil {
			return 1
		}
		return 1 + len(Chain(m.Offset, segs))
	}
}

// appendedSegment applies retention to the partition of a segment just
// appended: with it an older base and its log may have left the retained
// recovery points. A failure is logged: the segment is durable.
func appendedSegment(ctx context.Context, p partitioned, log *zap.Logger, g Segment) {
	if ctx.Err() != nil {
		return
	}
	tp := TopicPartition{Topic: g.Topic, Partition: g.Partition}
	l := p.partLock(tp)
	l.Lock()
	defer l.Unlock()
	var rep GCReport
	if err := p.gcPartitionLocked(ctx, tp, g.Base, false, &rep); err != nil {
		log.Warn("checkpoint: retention/GC after a change-log segment failed", zap.String("partition", tp.String()), zap.Error(err))
	}
}

// gcPartitions runs retention and GC on every partition that appears in
// any of lists (snapshots, pool, change log), each under its lock, sorted;
// it returns one error per partition that failed, or ctx's error.
func gcPartitions(ctx context.Context, p partitioned, dryRun bool, rep *GCReport, lists ...[]TopicPartition) ([]error, error) {
	seen := map[TopicPartition]bool{}
	var tps []TopicPartition
	for _, l := range lists {
		for _, tp := range l {
			if !seen[tp] {
				seen[tp] = true
				tps = append(tps, tp)
			}
		}
	}
	sortTPs(tps)
	var errs []error
	for _, tp := range tps {
		if err := ctx.Err(); err != nil {
			return errs, err
		}
		l := p.partLock(tp)
		l.Lock()
		err := p.gcPartitionLocked(ctx, tp, "", dryRun, rep)
		l.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", tp, err))
		}
	}
	return errs, nil
}
