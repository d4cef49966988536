package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/sstable"
	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
)

// Snapshots: at a committed boundary (no open epoch) the loop takes Pebble
// checkpoints of the partitions that changed (the only part that pauses
// processing: hard links and a WAL copy) and hands them to a publisher
// goroutine that copies them into the checkpoint storage. A failed
// snapshot is counted and retried at the next interval; one more than
// TolerableSnapshotFailures in a row fails the attempt.

// snapshotter is the snapshot scheduler's state.
type snapshotter struct {
	last     time.Time
	failures int
	jobs     chan snapJob
	results  chan snapResult
	wg       sync.WaitGroup
	seq      int
}

type snapJob struct {
	p int32
	// ps is the partition state that queued the job: a result that comes
	// back after the partition was released (and maybe recovered again,
	// with a new partState) must not touch the new state.
	ps      *partState
	offset  int64
	staging string
	trigger time.Time
	pause   time.Duration
	// segment, when set, holds the changes of a change-log segment (seg:
	// its header) to encode and append instead of a checkpoint to
	// publish. The publisher only reads it.
	segment *checkpoint.ChangeBuffer
	seg     checkpoint.Segment
	// format is the partition store's table format: the segment is
	// written as a table of that format (see segmentTable).
	format sstable.TableFormat
}

type snapResult struct {
	job   snapJob
	meta  checkpoint.Meta
	seg   checkpoint.Segment
	stats checkpoint.PublishStats
	err   error
}

func (s *snapshotter) init() {
	s.jobs = make(chan snapJob, 1024)
	s.results = make(chan snapResult, 1024)
}

func (s *snapshotter) start(e *Engine) {
	s.wg.Add(1)
	go e.publisher()
}

func (s *snapshotter) stop() {
	close(s.jobs)
	s.wg.Wait()
}

// snapshotIfDue runs at a committed boundary: checkpoints whose flush has
// finished, and a new round when the interval has passed.
func (e *Engine) snapshotIfDue() error {
	if e.flushPending() {
		if err := e.checkpointFlushed(); err != nil {
			return err
		}
	}
	if e.since(e.snaps.last) >= e.cfg.CheckpointInterval {
		return e.snapshot(false)
	}
	if e.changelogMode() && e.segmentDue() {
		for _, p := range e.sortedParts() {
			ps := e.parts[p]
			if c := ps.clog; c != nil && c.valid && !ps.snapInFlight && c.cur.Len() >= e.cfg.ChangelogSegmentBytes {
				e.snapshotSegment(ps)
			}
		}
	}
	return nil
}

// snapshot takes Pebble checkpoints of changed partitions (the only part
// that pauses processing) and queues their copies.
func (e *Engine) snapshot(wait bool) error {
	e.snaps.last = e.now()
	for _, p := range e.sortedParts() {
		ps := e.parts[p]
		if !ps.dirty || ps.snapInFlight {
			continue
		}
		if ps.flushing == nil && e.snapshotSegment(ps) {
			continue // changelog mode: a segment, not a base
		}
		if !wait && ps.flushing == nil {
			// Flush first (in the background) when the WAL is big; the
			// checkpoint follows at a later committed boundary
			// (checkpointFlushed). A final snapshot does not wait for it.
			ch, err := ps.store.PrepareCheckpoint(CheckpointFlushMin)
			if err != nil {
				e.log.Warn("pre-checkpoint flush failed; checkpointing with the WAL", zap.Int32("partition", p), zap.Error(err))
			} else if ch != nil {
				ps.flushing, ps.flushStart = ch, e.now()
				continue
			}
		}
		if !wait && ps.flushing != nil {
			continue // checkpointFlushed takes it when the flush is done
		}
		if err := e.checkpointPartition(ps); err != nil {
			return err
		}
	}
	if wait {
		for e.inFlight() {
			r := <-e.snaps.results
			if err := e.snapDone(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushPending reports a partition whose pre-checkpoint flush was started.
func (e *Engine) flushPending() bool {
	for _, ps := range e.parts {
		if ps.flushing != nil {
			return true
		}
	}
	return false
}

// checkpointFlushed takes the checkpoints whose pre-checkpoint flush has
// finished. Called only at a committed boundary (no open epoch). A flush
// that takes longer than a checkpoint interval is not waited for: the
// checkpoint copies the WAL instead, so a slow disk delays no snapshot.
func (e *Engine) checkpointFlushed() error {
	for _, p := range e.sortedParts() {
		ps := e.parts[p]
		if ps.flushing == nil {
			continue
		}
		select {
		case <-ps.flushing:
		default:
			if e.since(ps.flushStart) < e.cfg.CheckpointInterval {
				continue
			}
			e.log.Warn("pre-checkpoint flush is slow; checkpointing with the WAL", zap.Int32("partition", p),
				zap.Duration("flushing_for", e.since(ps.flushStart)))
		}
		if ps.snapInFlight || !ps.dirty {
			ps.flushing = nil
			continue
		}
		if err := e.checkpointPartition(ps); err != nil {
			return err
		}
	}
	return nil
}

// checkpointPartition takes the partition's checkpoint (the processing
// pause: hard links and a WAL copy) and hands it to the publisher.
func (e *Engine) checkpointPartition(ps *partState) error {
	p := ps.p
	ps.flushing = nil
	e.snaps.seq++
	staging := filepath.Join(e.cfg.DataDir, "staging", fmt.Sprintf("%s-%d-%d-%d", e.cfg.Topic, p, ps.next, e.snaps.seq))
	_ = os.RemoveAll(staging)
	if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
		return fmt.Errorf("creating staging dir: %w", err)
	}
	t0 := e.now()
	if err := ps.store.Checkpoint(staging); err != nil {
		e.snapFailed(snapJob{p: p}, err)
		if e.snaps.failures > e.cfg.TolerableSnapshotFailures {
			return fmt.Errorf("%d consecutive snapshot failures (tolerable: %d): %w", e.snaps.failures, e.cfg.TolerableSnapshotFailures, err)
		}
		return nil
	}
	pause := e.since(t0)
	e.stats.observePause(pause)
	e.baseCut(ps)
	ps.dirty = false
	ps.snapInFlight = true
	e.snaps.jobs <- snapJob{p: p, ps: ps, offset: ps.next, staging: staging, trigger: t0, pause: pause}
	return nil
}

func (e *Engine) inFlight() bool {
	for _, ps := range e.parts {
		if ps.snapInFlight {
			return true
		}
	}
	return false
}

// publisher copies staged checkpoints into the checkpoint directory, one at
// a time, off the processing goroutine.
func (e *Engine) publisher() {
	defer e.snaps.wg.Done()
	for j := range e.snaps.jobs {
		if j.segment != nil {
			data, g, err := encodeSegment(j)
			if err == nil {
				g, err = e.ckpt.AppendSegment(context.Background(), data)
			}
			e.snaps.results <- snapResult{job: j, seg: g, stats: checkpoint.PublishStats{Files: 1, FilesCopied: 1,
				BytesWritten: int64(len(data)), TotalBytes: int64(len(data))}, err: err}
			continue
		}
		src := checkpoint.Source{Topic: e.cfg.Topic, Partition: j.p, TopicID: e.topicID, ClusterID: e.clusterID}
		m, st, err := e.ckpt.PublishFrom(context.Background(), src, j.offset, j.staging, e.cfg.Job)
		_ = os.RemoveAll(j.staging)
		e.snaps.results <- snapResult{job: j, meta: m, stats: st, err: err}
	}
}

func (e *Engine) drainSnapResults() error {
	for {
		select {
		case r := <-e.snaps.results:
			if err := e.snapDone(r); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (e *Engine) snapDone(r snapResult) error {
	ps := e.parts[r.job.p]
	if ps != nil && r.job.ps != nil && r.job.ps != ps {
		ps = nil // queued by an earlier owner of the partition in this process
	}
	if ps != nil {
		ps.snapInFlight = false
		e.changelogDone(ps, r)
	}
	if r.err != nil {
		if ps != nil {
			ps.dirty = true // retry at the next interval
		}
		e.snapFailed(r.job, r.err)
		if e.snaps.failures > e.cfg.TolerableSnapshotFailures {
			return fmt.Errorf("%d consecutive snapshot failures (tolerable: %d): %w", e.snaps.failures, e.cfg.TolerableSnapshotFailures, r.err)
		}
		return nil
	}
	e.snaps.failures = 0
	if r.job.segment != nil {
		if ps != nil {
			ps.lastSnapOffset = r.seg.Last
		}
		e.stats.addSnapshot(SnapshotInfo{ID: r.seg.Name(), Partition: r.job.p, Offset: r.seg.Last, Trigger: r.job.trigger,
			Duration: e.since(r.job.trigger), BytesWritten: r.stats.BytesWritten, TotalBytes: r.stats.TotalBytes,
			Mode: "changelog-segment", Status: "completed"})
		e.log.Debug("change-log segment written", zap.Int32("partition", r.job.p), zap.String("base", r.seg.Base),
			zap.Int64("seq", r.seg.Seq), zap.Int64("first", r.seg.First), zap.Int64("last", r.seg.Last),
			zap.Int64("bytes", r.seg.Size), zap.Duration("duration", e.since(r.job.trigger)))
		return nil
	}
	if ps != nil {
		ps.lastSnapOffset = r.meta.Offset
	}
	e.stats.addSnapshot(SnapshotInfo{ID: r.meta.ID, Partition: r.job.p, Offset: r.meta.Offset, Trigger: r.job.trigger,
		Pause: r.job.pause, Duration: e.since(r.job.trigger), BytesWritten: r.stats.BytesWritten,
		TotalBytes: r.stats.TotalBytes, Mode: string(r.meta.Mode), Status: "completed"})
	e.log.Info("snapshot published", zap.Int32("partition", r.job.p), zap.String("id", r.meta.ID),
		zap.Int64("offset", r.meta.Offset), zap.Duration("pause", r.job.pause), zap.Duration("duration", e.since(r.job.trigger)),
		zap.Int64("bytes_written", r.stats.BytesWritten), zap.Int64("total_bytes", r.stats.TotalBytes))
	return nil
}

func (e *Engine) snapFailed(j snapJob, err error) {
	e.snaps.failures++
	e.stats.SnapshotFailures.Add(1)
	e.stats.addSnapshot(SnapshotInfo{Partition: j.p, Offset: j.offset, Trigger: j.trigger, Status: "failed", Error: err.Error()})
	e.log.Warn("snapshot failed; retrying at the next interval", zap.Int32("partition", j.p),
		zap.Int("consecutive_failures", e.snaps.failures), zap.Int("tolerable", e.cfg.TolerableSnapshotFailures), zap.Error(err))
}

func (e *Engine) finalSnapshot() error {
	for e.inFlight() {
		if err := e.snapDone(<-e.snaps.results); err != nil {
			return err
		}
	}
	return e.snapshot(true)
}
