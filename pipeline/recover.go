package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/offsets"
)

// The recovery executor: it gathers PlanRecovery's input from the broker
// and the checkpoint storage, restores what the plan says, replays the gap
// without output, and hands the partition to the loop positioned at C.

// recoveryInput gathers what PlanRecovery decides from.
func (e *Engine) recoveryInput(ctx context.Context, p int32) (RecoveryInput, error) {
	topic := e.cfg.Topic
	in := RecoveryInput{Partition: p, TopicID: e.topicID, ClusterID: e.clusterID, AllowStateLoss: e.cfg.AllowStateLoss}
	var err error
	if in.Group, err = e.sink.Committed(ctx, p); err != nil {
		return in, err
	}
	if e.cfg.ProgressTopic != "" {
		pr, ok, err := offsets.ReadProgress(ctx, e.cfg.ReplayConnOpts, e.cfg.ProgressTopic, e.cfg.Group, topic, p, e.log)
		if err != nil {
			return in, err
		}
		if ok {
			in.Progress = &ProgressInfo{Next: pr.Next, Start: pr.Start, TopicID: pr.TopicID}
		}
	}
	if in.LogStart, in.LogEnd, err = e.src.Bounds(ctx, p); err != nil {
		return in, err
	}
	metas, err := e.ckpt.List(topic, p)
	if err != nil {
		return in, fmt.Errorf("listing snapshots of partition %d: %w", p, err)
	}
	for _, m := range metas {
		c := SnapshotCandidate{ID: m.ID, Offset: m.Offset, TopicID: m.TopicID, ClusterID: m.ClusterID}
		if err := e.compatible(m.Job); err != nil {
			c.Incompatible = err.Error()
		}
		if c.Segments, err = e.segmentCandidates(p, m); err != nil {
			return in, err
		}
		in.Snapshots = append(in.Snapshots, c)
	}
	if sp := e.cfg.Savepoint; sp != nil {
		if part, ok := sp.Partition(topic, p); ok {
			c := &SavepointCandidate{Name: sp.Name, Offset: part.Offset, TopicID: part.TopicID, ClusterID: part.ClusterID}
			if err := e.compatible(sp.Job); err != nil {
				c.Incompatible = err.Error()
			}
			in.Savepoint = c
		}
	}
	return in, nil
}

// recoverPartitions makes the partitions ready to process (recoverPartition
// each). Each restores its own store and replays its own records, which is
// CPU-bound, so they recover concurrently, at most GOMAXPROCS at a time: a
// member that takes over several partitions (a restart, a rebalance) is
// processing again sooner. They are handed to the loop in partition order
// once all are ready; if one fails, the others' stores are closed and the
// first failure is returned.
func (e *Engine) recoverPartitions(ctx context.Context, parts []int32) error {
	res := make([]*readyPartition, len(parts))
	// The first error cancels the others: this attempt fails anyway.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, runtime.GOMAXPROCS(0)))
	for i, p := range parts {
		g.Go(func() error {
			return job.Safely(func() (err error) {
				res[i], err = e.recoverPartition(gctx, p)
				return err
			})
		})
	}
	if err := g.Wait(); err != nil {
		for _, r := range res {
			if r != nil {
				_ = r.ps.store.Close()
			}
		}
		return err
	}
	for _, r := range res {
		e.install(r)
	}
	return nil
}

// readyPartition is a partition restored and replayed, not yet handed to the
// loop.
type readyPartition struct {
	ps       *partState
	start    time.Time
	replayed int64
	took     time.Duration // of the replay
}

// recoverPartition prepares partition p: C, and the state that reflects
// every record below it; install hands it to the loop and positions the
// client at C. It touches no engine state but the stats (safe for
// concurrent use), so partitions recover in parallel.
func (e *Engine) recoverPartition(ctx context.Context, p int32) (*readyPartition, error) {
	start := e.now()
	e.stats.setRecovering(p, 0, 0)
	defer e.stats.clearRecovering(p)
	in, err := e.recoveryInput(ctx, p)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.cfg.DataDir, "state", fmt.Sprintf("%s-%d", e.cfg.Topic, p))
	pl, store, meta, err := e.planAndRestore(ctx, in, dir)
	if err != nil {
		return nil, err
	}
	for _, w := range pl.Warnings {
		e.log.Warn(w, zap.Int32("partition", p))
	}
	source := pl.Restore.String()
	switch pl.Restore {
	case RestoreSnapshot:
		source = "snapshot " + pl.Snapshot.ID
		if n := len(pl.Segments); n > 0 {
			source += fmt.Sprintf(" + %d change-log segments", n)
		}
	case RestoreSavepoint:
		source = "savepoint " + pl.Savepoint.Name
	}
	e.log.Info("recovering partition", zap.Int32("partition", p), zap.String("from", source), zap.String("commit_point_from", pl.CFrom),
		zap.Int64("replay_from", pl.ReplayFrom), zap.Int64("resume_at", pl.Resume), zap.Int64("replay_records", pl.Resume-pl.ReplayFrom))

	op := e.newOp()
	if pr, ok := op.(Prober); ok {
		t0 := e.now()
		if err := store.EnableFilterPacked(pr, e.packEntries()); err != nil {
			_ = store.Close()
			return nil, err
		}
		e.log.Debug("key filter built", zap.Int32("partition", p), zap.Int("keys", store.filter.added), zap.Int("packed_keys", store.pack.entriesOrZero()), zap.Duration("took", e.since(t0)))
	}
	replayStart := time.Now()
	replayed, err := e.replay(ctx, p, store, op, pl.ReplayFrom, pl.Resume)
	replayTook := time.Since(replayStart)
	if err != nil {
		_ = store.Close()
		if errors.Is(err, offsets.ErrReplayGap) && !e.cfg.AllowStateLoss {
			return nil, fmt.Errorf("partition %d: %w; rerun with --allow-state-loss to accept it: %w", p, err, ErrStateLoss)
		}
		return nil, fmt.Errorf("replaying partition %d [%d, %d): %w", p, pl.ReplayFrom, pl.Resume, err)
	}
	ps := &partState{p: p, store: store, ov: newOverlay(store), op: op, next: pl.Resume, pos: pl.Resume, start: pl.Start,
		recoveredFrom: source, lastSnapOffset: -1, dirty: replayed > 0 || pl.Restore == RestoreSavepoint}
	if meta != nil {
		ps.lastSnapOffset = pl.ReplayFrom
	}
	return &readyPartition{ps: ps, start: start, replayed: replayed, took: replayTook}, nil
}

// install hands a recovered partition to the loop.
func (e *Engine) install(r *readyPartition) {
	ps, p := r.ps, r.ps.p
	e.parts[p] = ps
	if e.recoveredNow != nil {
		e.recoveredNow[p] = true
	}
	// Where the client already fetched from this partition it is moved to
	// C now; otherwise it starts at the group's offset or the log start,
	// both at or below C, and the loop skips what C covers.
	e.src.Seek(map[int32]int64{p: ps.next})
	e.stats.registerStore(p, ps.store)
	e.stats.Recoveries.Add(1)
	e.log.Info("partition recovered", zap.Int32("partition", p), zap.String("from", ps.recoveredFrom),
		zap.Int64("replayed", r.replayed), zap.Duration("replay_took", r.took), zap.Int64("resume_at", ps.next), zap.Duration("took", e.since(r.start)))
}

// planAndRestore plans the recovery and restores the planned state into
// dir. A snapshot that fails verification is dropped from the candidates
// and the plan made again.
func (e *Engine) planAndRestore(ctx context.Context, in RecoveryInput, dir string) (Plan, *Store, *checkpoint.Meta, error) {
	for {
		pl, err := PlanRecovery(in)
		if err != nil {
			return pl, nil, nil, err
		}
		var ra *readAhead
		if len(pl.Segments) > 0 {
			ra = e.prefetchSegments(ctx, pl, dir)
		}
		store, meta, ok, err := e.restore(ctx, pl, dir)
		var n int
		var serr error
		if err == nil && ok && ra != nil {
			n, serr = e.applySegments(ctx, pl, store, ra)
		}
		if ra != nil {
			ra.stop()
		}
		if serr != nil {
			_ = store.Close()
			if !errors.Is(serr, checkpoint.ErrCorrupt) {
				return pl, nil, nil, fmt.Errorf("restoring partition %d: %w", in.Partition, serr)
			}
			e.log.Warn("change-log segment did not verify; planning again without it and the rest of its chain",
				zap.Int32("partition", in.Partition), zap.String("snapshot", pl.Snapshot.ID), zap.Int64("seq", pl.Segments[n].Seq), zap.Error(serr))
			truncateSegments(in.Snapshots, pl.Snapshot.ID, n)
			continue
		}
		if err != nil || ok {
			return pl, store, meta, err
		}
		e.log.Warn("snapshot did not verify; planning again without it", zap.Int32("partition", in.Partition), zap.String("snapshot", pl.Snapshot.ID))
		in.Snapshots = dropSnapshot(in.Snapshots, pl.Snapshot.ID)
	}
}

func dropSnapshot(cs []SnapshotCandidate, id string) []SnapshotCandidate {
	out := cs[:0:0]
	for _, c := range cs {
		if c.ID != id {
			out = append(out, c)
		}
	}
	return out
}

// restore materialises the plan's state into dir and opens it. ok is false
// when the planned snapshot did not verify (or another was restored in its
// place); the caller plans again.
func (e *Engine) restore(ctx context.Context, pl Plan, dir string) (_ *Store, _ *checkpoint.Meta, ok bool, _ error) {
	// The live store is a cache of the snapshots: always rebuilt, so a
	// store left by a crashed process can never be newer than C.
	if err := os.RemoveAll(dir); err != nil {
		return nil, nil, false, fmt.Errorf("clearing state dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		return nil, nil, false, fmt.Errorf("creating state dir: %w", err)
	}
	var meta *checkpoint.Meta
	want := int64(-1)
	switch pl.Restore {
	case RestoreSnapshot:
		m, err := e.ckpt.RestoreFrom(ctx, checkpoint.Want{Topic: e.cfg.Topic, Partition: pl.Partition, TopicID: e.topicID,
			ClusterID: e.clusterID, MaxOffset: pl.Snapshot.Offset}, dir)
		if errors.Is(err, checkpoint.ErrNoSnapshot) || err == nil && m.ID != pl.Snapshot.ID {
			return nil, nil, false, nil
		}
		if err != nil {
			return nil, nil, false, fmt.Errorf("restoring partition %d: %w", pl.Partition, err)
		}
		meta, want = &m, m.Offset
	case RestoreSavepoint:
		sp := e.cfg.Savepoint
		src := checkpoint.Source{Topic: e.cfg.Topic, Partition: pl.Partition, TopicID: e.topicID, ClusterID: e.clusterID}
		off, err := checkpoint.RestoreSavepointFrom(ctx, *sp, src, dir, false)
		if err != nil {
			return nil, nil, false, fmt.Errorf("restoring partition %d from savepoint %s: %w", pl.Partition, sp.Name, err)
		}
		want = off
	}
	store, err := OpenStore(dir, StoreOptions{Logger: e.log, Cache: e.cache})
	if err != nil {
		return nil, nil, false, err
	}
	if want >= 0 {
		so, err := store.Offset()
		if err != nil {
			_ = store.Close()
			return nil, nil, false, fmt.Errorf("partition %d: reading the restored state's offset: %w", pl.Partition, err)
		}
		if so != want {
			_ = store.Close()
			return nil, nil, false, fmt.Errorf("partition %d: restored state records offset %d, its metadata says %d", pl.Partition, so, want)
		}
	}
	return store, meta, true, nil
}

// replay rebuilds state from the records [from, to) with output
// suppressed: their output was committed by earlier epochs.
func (e *Engine) replay(ctx context.Context, p int32, store *Store, op Operator, from, to int64) (int64, error) {
	ov := newOverlay(store)
	var replayed int64
	var em replayEmitter
	var rec Record
	one := func(kr *kgo.Record) error {
		rec = recordOf(kr)
		if err := op.Process(&rec, ov, em); err != nil {
			return &job.RecordError{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Err: err}
		}
		replayed++
		if ov.bytes >= e.cfg.MaxEpochBytes {
			if err := ov.apply(kr.Offset + 1); err != nil {
				return err
			}
		}
		if replayed%4096 == 0 {
			e.stats.setRecovering(p, kr.Offset+1-from, to-from)
			if e.cfg.OnLoop != nil {
				e.cfg.OnLoop() // replay progress counts as liveness
			}
		}
		return nil
	}
	// With a Prefetcher, records are processed a batch at a time, as live
	// (the client does not reuse the records it hands out).
	pf, _ := op.(Prefetcher)
	var ahead [PrefetchBatch]Record
	pending := make([]*kgo.Record, 0, PrefetchBatch)
	flush := func() error {
		prefetch(pf, &ahead, pending, ov)
		for _, kr := range pending {
			if err := one(kr); err != nil {
				return err
			}
		}
		pending = pending[:0]
		return nil
	}
	err := offsets.Replay(ctx, e.cfg.ReplayConnOpts, e.cfg.Topic, p, from, to, e.log, func(kr *kgo.Record) error {
		if pf == nil {
			return one(kr)
		}
		if pending = append(pending, kr); len(pending) == PrefetchBatch {
			return flush()
		}
		return nil
	})
	if err == nil && len(pending) > 0 {
		err = flush()
	}
	if err == nil && from < to {
		err = ov.apply(to)
	}
	ov.reset()
	return replayed, err
}

// packEntries bounds each partition's packing index (0: pack no more).
func (e *Engine) packEntries() int {
	switch n := e.cfg.PackEntries; {
	case n < 0:
		return 0
	case n == 0:
		return DefaultPackEntries
	default:
		return n
	}
}

// readsState reports whether the job's operator restores the state of
// operator version name (StateUpgrader).
func (e *Engine) readsState(name string) bool {
	if e.newOp == nil {
		return false
	}
	u, ok := e.newOp().(StateUpgrader)
	return ok && u.ReadsState(name)
}

// compatible checks a snapshot's job settings against the job's.
func (e *Engine) compatible(job map[string]string) error {
	for k, want := range e.cfg.Job {
		if got, ok := job[k]; ok && got != want {
			if k == "operator" && e.readsState(got) {
				continue
			}
			return fmt.Errorf("taken with %s=%q, this job runs %s=%q (start from a fresh checkpoint directory, or run the old settings)", k, got, k, want)
		}
	}
	return nil
}
