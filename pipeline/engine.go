package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/faults"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/offsets"
)

// Dead-letter record headers.
const (
	HeaderDLQReason    = "txstream-dlq-reason"
	HeaderDLQDetail    = "txstream-dlq-detail"
	HeaderSrcTopic     = "txstream-source-topic"
	HeaderSrcPartition = "txstream-source-partition"
	HeaderSrcOffset    = "txstream-source-offset"
)

// Config configures an Engine.
type Config struct {
	Topic, OutputTopic, DLQTopic string

	CommitInterval     time.Duration // epoch length: output visibility
	CheckpointInterval time.Duration // snapshot cadence: state durability cost
	MaxEpochBytes      int           // commit early when an epoch's state passes this
	MaxPollRecords     int
	CacheBytes         int64  // block cache shared by the partition stores (default 64 MiB)
	DataDir            string // live stores live in DataDir/state
	AllowStateLoss     bool
	ExitWhenIdle       time.Duration
	// TolerableSnapshotFailures consecutive failed snapshots are tolerated;
	// one more fails the attempt.
	TolerableSnapshotFailures int

	// Fault injection (tests and demos): FailAtRecord fails the attempt
	// at the Nth live record it processes; CrashAtRecord kills the process.
	FailAtRecord  int64
	CrashAtRecord int64

	// ReplayConnOpts connects replay readers (brokers, TLS, SASL).
	ReplayConnOpts []kgo.Opt
	// Job describes the settings a snapshot must match to be restored.
	Job    map[string]string
	Logger *zap.Logger
	Stats  *Stats
	// Savepoint, when set, is restored instead of the newest snapshot the
	// first time each of its partitions is recovered in this process
	// (--from-savepoint); SavepointUsed records those partitions and lives
	// across attempts.
	Savepoint     *checkpoint.SavepointMeta
	SavepointUsed map[int32]bool
	// SavepointOnStop takes a savepoint of the owned partitions when the
	// job drains on SIGTERM (--savepoint-on-stop).
	SavepointOnStop bool

	// OnLoop is called on every turn of the processing loop and every
	// few thousand replayed records (systemd watchdog): a stuck loop or
	// replay stops calling it. It must be cheap and concurrency-safe.
	OnLoop func()
}

// Engine runs one attempt of the job: it owns the stores of the partitions
// assigned to it and the open epoch.
type Engine struct {
	cfg   Config
	src   *offsets.Source
	sink  Sink
	newOp func() Operator
	ckpt  *checkpoint.Store
	log   *zap.Logger
	stats *Stats

	parts map[int32]*partState
	cache *pebble.Cache

	epochOpen    bool
	epochStart   time.Time
	epochRecords int

	lastSnapshot  time.Time
	snapFailures  int
	snapJobs      chan snapJob
	snapResults   chan snapResult
	snapWG        sync.WaitGroup
	snapSeq       int
	lastInput     time.Time
	liveRecords   atomic.Int64
	running       func()
	markedRunning bool
	graceful      bool
	spReqs        chan savepointReq
	spWG          sync.WaitGroup
}

type savepointReq struct {
	name  string
	reply chan savepointReply
}

type savepointReply struct {
	meta checkpoint.SavepointMeta
	err  error
}

type partState struct {
	p              int32
	store          *Store
	ov             *overlay
	next           int64 // C: every record below it is committed and applied
	dirty          bool  // applied changes since the last snapshot
	snapInFlight   bool
	recoveredFrom  string
	lastSnapOffset int64
	// flushing is closed when the pre-checkpoint flush started at
	// flushStart is done (nil: none pending).
	flushing   <-chan struct{}
	flushStart time.Time
	hwm        int64 // high watermark seen in the last fetch
	op         Operator
	rec        Record
	// Counts of the open epoch, added to the totals only when it commits,
	// so that metrics count each record once however often it is redone.
	ep, total counts
}

type counts struct{ in, out, dlq, dup int64 }

func (c *counts) add(o counts) { c.in += o.in; c.out += o.out; c.dlq += o.dlq; c.dup += o.dup }

type snapJob struct {
	p       int32
	offset  int64
	staging string
	trigger time.Time
	pause   time.Duration
}

type snapResult struct {
	job   snapJob
	meta  checkpoint.Meta
	stats checkpoint.PublishStats
	err   error
}

// NewEngine wires an attempt. The engine takes ownership of src and closes
// it when Run returns.
// newOp makes one operator per partition: partitions are processed in
// parallel, each by its own instance.
func NewEngine(cfg Config, src *offsets.Source, sink Sink, newOp func() Operator, ckpt *checkpoint.Store) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Stats == nil {
		cfg.Stats = NewStats()
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 50000
	}
	if cfg.MaxEpochBytes <= 0 {
		cfg.MaxEpochBytes = 64 << 20
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	return &Engine{
		cfg: cfg, src: src, sink: sink, newOp: newOp, ckpt: ckpt, log: cfg.Logger, stats: cfg.Stats,
		parts:       map[int32]*partState{},
		snapJobs:    make(chan snapJob, 1024),
		snapResults: make(chan snapResult, 1024),
		spReqs:      make(chan savepointReq),
	}
}

// Run processes until ctx is canceled (graceful drain: commit, final
// snapshot, leave the group; returns nil), the job is idle for
// ExitWhenIdle (returns job.ErrFinished), or an error fails the attempt.
// markRunning is called once every assigned partition is recovered.
func (e *Engine) Run(ctx context.Context, markRunning func()) (err error) {
	e.running = markRunning
	started := time.Now()
	e.lastSnapshot = time.Now()
	e.lastInput = time.Now()
	e.cache = NewCache(e.cfg.CacheBytes)
	e.snapWG.Add(1)
	go e.publisher()
	// Cleanup in separate defers, run in reverse order: Go runs every one
	// of them even if an earlier one panics, so a broken sink can never
	// leave stores open or the group member alive for the next attempt.
	defer func() {
		for p, ps := range e.parts {
			e.stats.unregisterStore(p)
			_ = ps.store.Close()
		}
		e.parts = map[int32]*partState{}
		e.stats.setPartitions(nil)
		e.cache.Unref()
	}()
	defer func() {
		e.src.Close()
		if e.graceful {
			lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := e.src.Leave(lctx); err != nil {
				e.log.Warn("could not leave the group; its partitions move after the session timeout", zap.Error(err))
			}
			cancel()
		}
	}()
	defer func() {
		close(e.snapJobs)
		e.snapWG.Wait()
		e.spWG.Wait()
		_ = e.drainSnapResults()
	}()
	defer func() {
		// A failed attempt aborts its epoch and drops its overlays; the
		// next attempt recovers from the sink's commit point.
		if r := recover(); r != nil {
			// A panic outside the operator (a sink, the client): an error
			// with the stack, so the restart strategy decides, not a crash.
			err = &job.PanicError{Value: r, Stack: debug.Stack()}
		}
		if err != nil && !errors.Is(err, job.ErrFinished) {
			actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = e.sink.Abort(actx)
			cancel()
		}
	}()

	for {
		if ctx.Err() != nil {
			return e.shutdown()
		}
		if e.cfg.OnLoop != nil {
			e.cfg.OnLoop()
		}
		select {
		case req := <-e.spReqs:
			if err := e.startSavepoint(ctx, req); err != nil {
				return err
			}
		default:
		}
		if err := e.handleEvents(ctx); err != nil {
			return err
		}
		if err := e.drainSnapResults(); err != nil {
			return err
		}
		pollCtx, cancel := context.WithTimeout(ctx, e.pollWait())
		fetches := e.src.Poll(pollCtx, e.cfg.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed unexpectedly")
		}
		var fatal error
		fetches.EachError(func(t string, p int32, ferr error) {
			if errors.Is(ferr, context.DeadlineExceeded) || errors.Is(ferr, context.Canceled) {
				return
			}
			e.log.Warn("fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(ferr))
			if isFatalFetch(ferr) && fatal == nil {
				fatal = fmt.Errorf("fetching %s/%d: %w", t, p, ferr)
			}
		})
		if fatal != nil {
			return fatal
		}
		// Assignments that raced with this poll are recovered before any
		// of their records is processed.
		if err := e.handleEvents(ctx); err != nil {
			return err
		}
		// RUNNING once the assigned partitions are recovered (or, for a
		// member that got no partitions, once it has waited a while).
		if !e.markedRunning && (len(e.parts) > 0 || time.Since(started) > 10*time.Second) {
			e.markedRunning = true
			if e.running != nil {
				e.running()
			}
		}
		// After the assignments above: a poll that raced one still counts.
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if ps := e.parts[fp.Partition]; ps != nil && fp.HighWatermark > 0 {
				ps.hwm = fp.HighWatermark
			}
		})
		n, perr := e.processFetches(fetches)
		if perr != nil {
			return perr
		}
		if n > 0 {
			e.lastInput = time.Now()
		}
		if e.epochOpen && (time.Since(e.epochStart) >= e.cfg.CommitInterval || e.epochBytes() >= e.cfg.MaxEpochBytes) {
			if err := e.commit(ctx); err != nil {
				return err
			}
		}
		if !e.epochOpen && e.flushPending() {
			if err := e.checkpointFlushed(); err != nil {
				return err
			}
		}
		if time.Since(e.lastSnapshot) >= e.cfg.CheckpointInterval && !e.epochOpen {
			if err := e.snapshot(false); err != nil {
				return err
			}
		}
		if e.cfg.ExitWhenIdle > 0 && !e.epochOpen && n == 0 && time.Since(e.lastInput) >= e.cfg.ExitWhenIdle && len(e.parts) > 0 {
			e.log.Info("idle, finishing", zap.Duration("idle_for", time.Since(e.lastInput)))
			if err := e.finalSnapshot(); err != nil {
				return err
			}
			e.graceful = true // leave the group: the job is done
			return job.ErrFinished
		}
	}
}

func (e *Engine) pollWait() time.Duration {
	if e.epochOpen {
		d := e.cfg.CommitInterval - time.Since(e.epochStart)
		if d < 5*time.Millisecond {
			d = 5 * time.Millisecond
		}
		return min(d, 250*time.Millisecond)
	}
	return 250 * time.Millisecond
}

func (e *Engine) epochBytes() int {
	n := 0
	for _, ps := range e.parts {
		n += ps.ov.bytes
	}
	return n
}

type liveEmitter struct {
	e   *Engine
	rec *Record
	c   *counts
}

func (l liveEmitter) Emit(key, value []byte) {
	l.e.sink.Send(&kgo.Record{Topic: l.e.cfg.OutputTopic, Key: key, Value: value, Timestamp: l.rec.Timestamp})
	l.c.out++
}

func (l liveEmitter) DeadLetter(reason, detail string) {
	r := l.rec
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+5)
	hs = append(hs, r.Headers...)
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderDLQDetail, Value: []byte(detail)},
		kgo.RecordHeader{Key: HeaderSrcTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSrcPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderSrcOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
	)
	l.e.sink.Send(&kgo.Record{Topic: l.e.cfg.DLQTopic, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp})
	l.c.dlq++
	l.e.log.Debug("dead letter", zap.String("reason", reason), zap.String("detail", detail),
		zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset))
}

func (l liveEmitter) Skipped(string) { l.c.dup++ }

// replayEmitter suppresses output: the records of a replayed range were
// committed by an earlier epoch.
type replayEmitter struct{}

func (replayEmitter) Emit([]byte, []byte)       {}
func (replayEmitter) DeadLetter(string, string) {}
func (replayEmitter) Skipped(string)            {}

// commit ends the open epoch at the sink and, only if it committed, applies
// the epoch's state.
func (e *Engine) commit(ctx context.Context) error {
	if !e.epochOpen {
		return nil
	}
	faults.Hit(faults.BeforeSinkCommit)
	start := time.Now()
	// The commit must finish even when a shutdown signal canceled ctx.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	committed, pos, err := e.sink.Commit(cctx)
	cancel()
	e.epochOpen = false
	if err != nil {
		e.discardOverlays()
		return fmt.Errorf("epoch commit: %w", err)
	}
	if !committed {
		e.stats.EpochsAborted.Add(1)
		e.discardOverlays()
		e.log.Info("epoch aborted by a rebalance; its records will be processed again", zap.Int("records", e.epochRecords))
		return nil
	}
	faults.Hit(faults.AfterSinkCommit)
	for p, next := range pos {
		ps := e.parts[p]
		if ps == nil || next <= ps.next && ps.ov.dirty == 0 {
			continue
		}
		if err := ps.ov.apply(next); err != nil {
			return err
		}
		ps.next = next
		ps.dirty = true
	}
	for _, ps := range e.parts {
		ps.total.add(ps.ep)
		e.stats.addCounts(ps.ep)
		ps.ep = counts{}
	}
	faults.Hit(faults.AfterStateApply)
	lat := time.Since(start)
	e.stats.observeCommit(lat, e.epochRecords)
	e.log.Debug("epoch committed", zap.Int("records", e.epochRecords), zap.Duration("latency", lat))
	e.stats.setPartitions(e.partitionSnapshot())
	return nil
}

func (e *Engine) discardOverlays() {
	for _, ps := range e.parts {
		ps.ov.reset()
		ps.ep = counts{}
	}
}

func (e *Engine) handleEvents(ctx context.Context) error {
	for {
		select {
		case ev := <-e.src.Events():
			if err := e.handleEvent(ctx, ev); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (e *Engine) handleEvent(ctx context.Context, ev offsets.Event) error {
	switch ev.Kind {
	case offsets.Assigned:
		// Close the open epoch first: a long replay must not hold a
		// transaction open past its timeout.
		if err := e.commit(ctx); err != nil {
			return err
		}
		for _, p := range ev.Partitions {
			if _, ok := e.parts[p]; ok {
				continue
			}
			if err := e.recoverPartition(ctx, p); err != nil {
				return err
			}
		}
		e.stats.setPartitions(e.partitionSnapshot())
		// The idle clock restarts: records of newly assigned partitions
		// have not been fetched yet, so "no input" so far says nothing
		// about them (a member that waited out a long rebalance must not
		// finish the moment it receives work).
		e.lastInput = time.Now()
	case offsets.Revoked, offsets.Lost:
		// The transact session has marked the epoch failed; ending it
		// aborts, and the surviving partitions are rewound to C.
		if err := e.commit(ctx); err != nil {
			return err
		}
		for _, p := range ev.Partitions {
			if ps, ok := e.parts[p]; ok {
				e.stats.unregisterStore(p)
				_ = ps.store.Close()
				delete(e.parts, p)
				e.log.Info("partition released", zap.Int32("partition", p), zap.Int64("committed", ps.next))
			}
		}
		e.stats.setPartitions(e.partitionSnapshot())
	}
	return nil
}

// recoverPartition implements DESIGN.md's recovery: C from the sink, newest
// verified snapshot at or below C, replay [snapshot, C) without output.
func (e *Engine) recoverPartition(ctx context.Context, p int32) error {
	start := time.Now()
	topic := e.cfg.Topic
	e.stats.setRecovering(p, 0, 0)
	defer e.stats.clearRecovering(p)
	c, err := e.sink.Committed(ctx, p)
	if err != nil {
		return err
	}
	logStart, _, err := e.src.Bounds(ctx, p)
	if err != nil {
		return err
	}
	fresh := c < 0
	if fresh {
		c = logStart
	}
	dir := filepath.Join(e.cfg.DataDir, "state", fmt.Sprintf("%s-%d", topic, p))
	store, from, source, meta, err := e.restoreState(ctx, p, c, logStart, fresh, dir)
	if err != nil {
		return err
	}
	fromSavepoint := strings.HasPrefix(source, "savepoint ")
	if from > c {
		// Only a savepoint can be ahead of the group (a new group, or
		// offsets never committed by this group): its state already
		// reflects [C, S), whose output the job that took it committed.
		e.log.Warn("the group's committed offset is behind the savepoint: resuming at the savepoint's offset; records in between are reflected in its state and are not output again",
			zap.Int32("partition", p), zap.Int64("committed", c), zap.Int64("savepoint_offset", from))
		c = from
	}
	e.log.Info("recovering partition", zap.Int32("partition", p), zap.String("from", source),
		zap.Int64("snapshot_offset", from), zap.Int64("committed", c), zap.Int64("replay_records", c-from))

	op := e.newOp()
	ov := newOverlay(store)
	var replayed int64
	var em replayEmitter
	var rec Record
	err = offsets.Replay(ctx, e.cfg.ReplayConnOpts, topic, p, from, c, e.log, func(kr *kgo.Record) error {
		rec = Record{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value,
			Headers: kr.Headers, Timestamp: kr.Timestamp}
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
			e.stats.setRecovering(p, kr.Offset+1-from, c-from)
			if e.cfg.OnLoop != nil {
				e.cfg.OnLoop() // replay progress counts as liveness
			}
		}
		return nil
	})
	if err == nil {
		err = ov.apply(c)
	}
	if err != nil {
		_ = store.Close()
		if errors.Is(err, offsets.ErrReplayGap) && !e.cfg.AllowStateLoss {
			return fmt.Errorf("partition %d: %w; rerun with --allow-state-loss to accept it", p, err)
		}
		return fmt.Errorf("replaying partition %d [%d, %d): %w", p, from, c, err)
	}
	ov.reset()
	ps := &partState{p: p, store: store, ov: ov, op: op, next: c, recoveredFrom: source, lastSnapOffset: -1,
		dirty: replayed > 0 || fromSavepoint}
	if fromSavepoint && e.cfg.SavepointUsed != nil {
		e.cfg.SavepointUsed[p] = true
	}
	if meta != nil {
		ps.lastSnapOffset = meta.Offset
	}
	e.parts[p] = ps
	e.stats.registerStore(p, store)
	d := time.Since(start)
	e.stats.Recoveries.Add(1)
	e.log.Info("partition recovered", zap.Int32("partition", p), zap.String("from", source),
		zap.Int64("replayed", replayed), zap.Int64("resume_at", c), zap.Duration("took", d))
	return nil
}

// restoreState is the decision part of recovery (DESIGN.md steps 1-2): the
// newest verified snapshot at or below C is materialised into dir, or the
// store starts empty; it returns the opened store and the offset from which
// records must be replayed up to C. Unrecoverable gaps are errors unless
// --allow-state-loss.
func (e *Engine) restoreState(ctx context.Context, p int32, c, logStart int64, fresh bool, dir string) (*Store, int64, string, *checkpoint.Meta, error) {
	topic := e.cfg.Topic
	// The live store is a cache of the snapshots: always rebuilt, so a
	// store left by a crashed process can never be newer than C.
	if err := os.RemoveAll(dir); err != nil {
		return nil, 0, "", nil, fmt.Errorf("clearing state dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil {
		return nil, 0, "", nil, fmt.Errorf("creating state dir: %w", err)
	}
	from := logStart
	source := "empty"
	if sp := e.cfg.Savepoint; sp != nil && !e.cfg.SavepointUsed[p] {
		if _, ok := sp.Partition(topic, p); ok {
			return e.restoreSavepoint(ctx, sp, p, dir)
		}
	}
	meta, rerr := e.ckpt.Restore(ctx, topic, p, c, dir)
	switch {
	case rerr == nil:
		if err := e.compatible(meta); err != nil {
			return nil, 0, "", nil, err
		}
		from = meta.Offset
		source = "snapshot " + meta.ID
	case errors.Is(rerr, checkpoint.ErrNoSnapshot):
		if !fresh && logStart > 0 {
			if !e.cfg.AllowStateLoss {
				return nil, 0, "", nil, fmt.Errorf("partition %d: no usable snapshot at or below committed offset %d and the log starts at %d: the state of records before %d is lost (retention); restore the checkpoint directory or rerun with --allow-state-loss", p, c, logStart, logStart)
			}
			e.log.Warn("STATE LOSS allowed: no snapshot and the log no longer starts at 0", zap.Int32("partition", p), zap.Int64("log_start", logStart))
		}
		if err := os.RemoveAll(dir); err != nil {
			return nil, 0, "", nil, err
		}
	default:
		return nil, 0, "", nil, fmt.Errorf("restoring partition %d: %w", p, rerr)
	}
	if from < logStart {
		if !e.cfg.AllowStateLoss {
			return nil, 0, "", nil, fmt.Errorf("partition %d: snapshot at offset %d but the log now starts at %d: records needed for replay are gone (retention); rerun with --allow-state-loss to accept the gap", p, from, logStart)
		}
		e.log.Warn("STATE LOSS allowed: replay gap", zap.Int32("partition", p), zap.Int64("snapshot_offset", from), zap.Int64("log_start", logStart))
		from = logStart
	}
	store, err := OpenStore(dir, e.log, e.cache)
	if err != nil {
		return nil, 0, "", nil, err
	}
	if rerr == nil {
		so, err := store.Offset()
		if err != nil || so != meta.Offset {
			_ = store.Close()
			return nil, 0, "", nil, fmt.Errorf("snapshot %s: store records offset %d, metadata says %d (%v)", meta.ID, so, meta.Offset, err)
		}
	}
	if rerr != nil {
		return store, from, source, nil, nil
	}
	return store, from, source, &meta, nil
}

// restoreSavepoint materialises one partition of --from-savepoint.
func (e *Engine) restoreSavepoint(ctx context.Context, sp *checkpoint.SavepointMeta, p int32, dir string) (*Store, int64, string, *checkpoint.Meta, error) {
	m := checkpoint.Meta{ID: "savepoint " + sp.Name, Topic: e.cfg.Topic, Partition: p, Job: sp.Job}
	if err := e.compatible(m); err != nil {
		return nil, 0, "", nil, err
	}
	off, err := checkpoint.RestoreSavepointPartition(ctx, *sp, e.cfg.Topic, p, dir)
	if err != nil {
		return nil, 0, "", nil, fmt.Errorf("restoring partition %d from savepoint %s: %w", p, sp.Name, err)
	}
	m.Offset = off
	store, err := OpenStore(dir, e.log, e.cache)
	if err != nil {
		return nil, 0, "", nil, err
	}
	if so, err := store.Offset(); err != nil || so != off {
		_ = store.Close()
		return nil, 0, "", nil, fmt.Errorf("savepoint %s partition %d: store records offset %d, metadata says %d (%v)", sp.Name, p, so, off, err)
	}
	return store, off, m.ID, &m, nil
}

func (e *Engine) compatible(m checkpoint.Meta) error {
	for k, want := range e.cfg.Job {
		if got, ok := m.Job[k]; ok && got != want {
			return fmt.Errorf("snapshot %s of partition %d was taken with %s=%q, this job runs %s=%q: its state is not compatible (start from a fresh checkpoint directory, or run the old settings)", m.ID, m.Partition, k, got, k, want)
		}
	}
	return nil
}

// snapshot takes Pebble checkpoints of changed partitions (the only part
// that pauses processing) and queues their copies.
func (e *Engine) snapshot(wait bool) error {
	e.lastSnapshot = time.Now()
	for _, p := range e.sortedParts() {
		ps := e.parts[p]
		if !ps.dirty || ps.snapInFlight {
			continue
		}
		if !wait && ps.flushing == nil {
			// Flush first (in the background) when the WAL is big; the
			// checkpoint follows at a later committed boundary
			// (checkpointFlushed). A final snapshot does not wait for it.
			ch, err := ps.store.PrepareCheckpoint(CheckpointFlushMin)
			if err != nil {
				e.log.Warn("pre-checkpoint flush failed; checkpointing with the WAL", zap.Int32("partition", p), zap.Error(err))
			} else if ch != nil {
				ps.flushing, ps.flushStart = ch, time.Now()
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
			r := <-e.snapResults
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
			if time.Since(ps.flushStart) < e.cfg.CheckpointInterval {
				continue
			}
			e.log.Warn("pre-checkpoint flush is slow; checkpointing with the WAL", zap.Int32("partition", p),
				zap.Duration("flushing_for", time.Since(ps.flushStart)))
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
	e.snapSeq++
	staging := filepath.Join(e.cfg.DataDir, "staging", fmt.Sprintf("%s-%d-%d-%d", e.cfg.Topic, p, ps.next, e.snapSeq))
	_ = os.RemoveAll(staging)
	if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
		return fmt.Errorf("creating staging dir: %w", err)
	}
	t0 := time.Now()
	if err := ps.store.Checkpoint(staging); err != nil {
		e.snapFailed(snapJob{p: p}, err)
		if e.snapFailures > e.cfg.TolerableSnapshotFailures {
			return fmt.Errorf("%d consecutive snapshot failures (tolerable: %d): %w", e.snapFailures, e.cfg.TolerableSnapshotFailures, err)
		}
		return nil
	}
	pause := time.Since(t0)
	e.stats.observePause(pause)
	ps.dirty = false
	ps.snapInFlight = true
	e.snapJobs <- snapJob{p: p, offset: ps.next, staging: staging, trigger: t0, pause: pause}
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
	defer e.snapWG.Done()
	for j := range e.snapJobs {
		m, st, err := e.ckpt.Publish(context.Background(), e.cfg.Topic, j.p, j.offset, j.staging, e.cfg.Job)
		_ = os.RemoveAll(j.staging)
		e.snapResults <- snapResult{job: j, meta: m, stats: st, err: err}
	}
}

func (e *Engine) drainSnapResults() error {
	for {
		select {
		case r := <-e.snapResults:
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
	if ps != nil {
		ps.snapInFlight = false
	}
	if r.err != nil {
		if ps != nil {
			ps.dirty = true // retry at the next interval
		}
		e.snapFailed(r.job, r.err)
		if e.snapFailures > e.cfg.TolerableSnapshotFailures {
			return fmt.Errorf("%d consecutive snapshot failures (tolerable: %d): %w", e.snapFailures, e.cfg.TolerableSnapshotFailures, r.err)
		}
		return nil
	}
	e.snapFailures = 0
	if ps != nil {
		ps.lastSnapOffset = r.meta.Offset
	}
	e.stats.addSnapshot(SnapshotInfo{ID: r.meta.ID, Partition: r.job.p, Offset: r.meta.Offset, Trigger: r.job.trigger,
		Pause: r.job.pause, Duration: time.Since(r.job.trigger), BytesWritten: r.stats.BytesWritten,
		TotalBytes: r.stats.TotalBytes, Mode: string(r.meta.Mode), Status: "completed"})
	e.log.Info("snapshot published", zap.Int32("partition", r.job.p), zap.String("id", r.meta.ID),
		zap.Int64("offset", r.meta.Offset), zap.Duration("pause", r.job.pause), zap.Duration("duration", time.Since(r.job.trigger)),
		zap.Int64("bytes_written", r.stats.BytesWritten), zap.Int64("total_bytes", r.stats.TotalBytes))
	return nil
}

func (e *Engine) snapFailed(j snapJob, err error) {
	e.snapFailures++
	e.stats.SnapshotFailures.Add(1)
	e.stats.addSnapshot(SnapshotInfo{Partition: j.p, Offset: j.offset, Trigger: j.trigger, Status: "failed", Error: err.Error()})
	e.log.Warn("snapshot failed; retrying at the next interval", zap.Int32("partition", j.p),
		zap.Int("consecutive_failures", e.snapFailures), zap.Int("tolerable", e.cfg.TolerableSnapshotFailures), zap.Error(err))
}

func (e *Engine) finalSnapshot() error {
	for e.inFlight() {
		if err := e.snapDone(<-e.snapResults); err != nil {
			return err
		}
	}
	return e.snapshot(true)
}

// shutdown drains: commit the open epoch, take a final snapshot.
func (e *Engine) shutdown() error {
	e.log.Info("draining: committing the open epoch and taking a final snapshot")
	if err := e.commit(context.Background()); err != nil {
		return err
	}
	if err := e.finalSnapshot(); err != nil {
		return err
	}
	if e.cfg.SavepointOnStop && len(e.parts) > 0 {
		reply := make(chan savepointReply, 1)
		name := "stop-" + time.Now().UTC().Format("20060102T150405Z")
		if err := e.startSavepoint(context.Background(), savepointReq{name: name, reply: reply}); err != nil {
			return err
		}
		r := <-reply
		if r.err != nil {
			return fmt.Errorf("savepoint on stop: %w", r.err)
		}
	}
	e.graceful = true
	return nil
}

// RequestSavepoint asks the running loop for a savepoint of the partitions
// it owns. It is safe to call from any goroutine; the loop takes the
// Pebble checkpoints at a committed boundary and copies them off the loop.
func (e *Engine) RequestSavepoint(ctx context.Context, name string) (checkpoint.SavepointMeta, error) {
	req := savepointReq{name: name, reply: make(chan savepointReply, 1)}
	select {
	case e.spReqs <- req:
	case <-ctx.Done():
		return checkpoint.SavepointMeta{}, fmt.Errorf("the processing loop did not take the savepoint request: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.meta, r.err
	case <-ctx.Done():
		return checkpoint.SavepointMeta{}, fmt.Errorf("savepoint %q is still being written: %w", name, ctx.Err())
	}
}

// startSavepoint commits the open epoch, checkpoints every owned partition
// and copies them into a savepoint in the background. Only errors that
// break the loop (a failed commit) are returned; savepoint failures go to
// the requester.
func (e *Engine) startSavepoint(ctx context.Context, req savepointReq) error {
	if err := e.commit(ctx); err != nil {
		req.reply <- savepointReply{err: err}
		return err
	}
	if len(e.parts) == 0 {
		req.reply <- savepointReply{err: errors.New("no partitions are assigned to this instance yet")}
		return nil
	}
	var parts []checkpoint.SavepointPart
	var dirs []string
	cleanup := func() {
		for _, d := range dirs {
			_ = os.RemoveAll(d)
		}
	}
	for _, p := range e.sortedParts() {
		ps := e.parts[p]
		e.snapSeq++
		staging := filepath.Join(e.cfg.DataDir, "staging", fmt.Sprintf("savepoint-%s-%d-%d", e.cfg.Topic, p, e.snapSeq))
		_ = os.RemoveAll(staging)
		if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
			cleanup()
			req.reply <- savepointReply{err: err}
			return nil
		}
		if err := ps.store.Checkpoint(staging); err != nil {
			cleanup()
			req.reply <- savepointReply{err: err}
			return nil
		}
		dirs = append(dirs, staging)
		parts = append(parts, checkpoint.SavepointPart{Topic: e.cfg.Topic, Partition: p, Offset: ps.next, SrcDir: staging})
	}
	e.log.Info("savepoint started", zap.String("name", req.name), zap.Int("partitions", len(parts)))
	e.spWG.Add(1)
	go func() {
		defer e.spWG.Done()
		defer cleanup()
		start := time.Now()
		m, err := e.ckpt.Savepoint(context.Background(), req.name, parts, e.cfg.Job)
		if err != nil {
			e.log.Warn("savepoint failed", zap.String("name", req.name), zap.Error(err))
		} else {
			e.log.Info("savepoint written", zap.String("name", m.Name), zap.String("dir", m.Dir),
				zap.Int64("bytes", m.Bytes()), zap.Duration("took", time.Since(start)))
		}
		req.reply <- savepointReply{meta: m, err: err}
	}()
	return nil
}

func (e *Engine) sortedParts() []int32 {
	ids := make([]int32, 0, len(e.parts))
	for p := range e.parts {
		ids = append(ids, p)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// partitionSnapshot describes owned partitions for the status API.
func (e *Engine) partitionSnapshot() []PartitionInfo {
	out := make([]PartitionInfo, 0, len(e.parts))
	for _, ps := range e.parts {
		lag := ps.hwm - ps.next
		if ps.hwm <= 0 || lag < 0 {
			lag = 0
		}
		out = append(out, PartitionInfo{Partition: ps.p, Committed: ps.next, HighWatermark: ps.hwm, Lag: lag,
			RecordsIn: ps.total.in, RecordsOut: ps.total.out, DeadLetters: ps.total.dlq, Duplicates: ps.total.dup,
			StateBytes: ps.store.Size(), RecoveredFrom: ps.recoveredFrom, LastSnapshotOffset: ps.lastSnapOffset})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out
}

// isFatalFetch: a Kafka protocol error that retrying cannot fix
// (authorization, unsupported version, ...). Network errors are retried by
// the client.
func isFatalFetch(err error) bool {
	if kconn.IsAuthError(err) {
		return true // wrong credentials or certificates (TLS errors are not kerr errors)
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return !ke.Retriable
	}
	return false
}
