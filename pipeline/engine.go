package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/offsets"
)

// Config configures an Engine.
type Config struct {
	Topic, OutputTopic, DLQTopic string
	// Group and ProgressTopic name where progress records go and are read
	// from when the group's offsets are missing ("" = no progress topic).
	Group, ProgressTopic string

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
	// PackEntries bounds the keys each partition's index of packed state
	// keys holds (operators that implement Packer; see Store.EnableFilter):
	// 0 = DefaultPackEntries, negative = no new packing (the keys already
	// packed stay readable).
	PackEntries int
	// ExpireBudget bounds the expired state keys removed after each
	// committed epoch (operators that implement Expirer).
	ExpireBudget int
	// Changelog mode (a checkpoint storage in checkpoint.ModeChangelog;
	// see changelog.go): a base every ChangelogBaseEvery snapshots of a
	// partition (default 10), or when the log since the base passes
	// ChangelogMaxRatio of the store's size (default 0.5; negative: no
	// size rule); at most ChangelogBufferBytes of changes not yet durable
	// per partition (default 64 MiB); a segment as soon as
	// ChangelogSegmentBytes are buffered (default 16 MiB), else one per
	// snapshot interval.
	ChangelogBaseEvery    int
	ChangelogMaxRatio     float64
	ChangelogBufferBytes  int
	ChangelogSegmentBytes int

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
	// Savepoint, when set (--from-savepoint), is restored instead of a
	// snapshot for each of its partitions while the commit point is not
	// past the savepoint's offset.
	Savepoint *checkpoint.SavepointMeta
	// SavepointOnStop takes a savepoint of the owned partitions when the
	// job drains on SIGTERM (--savepoint-on-stop).
	SavepointOnStop bool
	// Unwritable remembers, across the attempts of a process, input
	// records whose output the sink could not write; they are replaced by
	// a dead letter that fits. Nil is fine (the engine makes one).
	Unwritable map[RecordKey]string

	// OnLoop is called on every turn of the processing loop and every
	// few thousand replayed records (systemd watchdog): a stuck loop or
	// replay stops calling it. It must be cheap and concurrency-safe.
	OnLoop func()
	// Now is the clock (nil: time.Now); tests inject their own.
	Now func() time.Time
	// afterPoll, when set, runs between a poll and its processing (tests
	// use it to make group events happen there).
	afterPoll func()
}

// NewUnwritableSet makes the set that Config.Unwritable keeps across the
// attempts of a process.
func NewUnwritableSet() map[RecordKey]string { return map[RecordKey]string{} }

// Engine runs one attempt of the job: it owns the stores of the partitions
// assigned to it and the open epoch.
type Engine struct {
	cfg   Config
	src   *offsets.Source
	sink  Sink
	newOp func() Operator
	ckpt  checkpoint.Storage
	log   *zap.Logger
	stats *Stats

	parts map[int32]*partState
	cache *pebble.Cache
	ep    epoch
	// topicID and clusterID name the input's incarnation (snapshot
	// metadata, progress records).
	topicID, clusterID string

	snaps     snapshotter
	lastInput time.Time
	lastTurn  time.Time
	// recoveredNow holds the partitions recovered by the events applied
	// after the current poll: that poll's records of them came from
	// before the client was positioned at C and are dropped.
	recoveredNow  map[int32]bool
	liveRecords   atomic.Int64
	running       func()
	markedRunning bool
	graceful      bool
	spReqs        chan savepointReq
	spWG          sync.WaitGroup
	// sendMu makes one partition's goroutine hand its pending records to
	// the sink at a time (see partState.pending).
	sendMu sync.Mutex
}

// partState is one owned partition.
type partState struct {
	p     int32
	store *Store
	ov    *overlay
	op    Operator
	// next is C: every record below it is committed and applied.
	next int64
	// pos is one past the last record processed, in the open epoch
	// (== next when the epoch has not touched the partition).
	pos int64
	// start is where the job's history of the partition begins (progress
	// records; -1 unknown).
	start          int64
	applied        int64 // offsets the last committed epoch covered (expiry budget)
	packFull       bool  // the store's packing index was full at the last apply (logged on change)
	dirty          bool  // applied changes since the last snapshot
	snapInFlight   bool
	recoveredFrom  string
	lastSnapOffset int64
	// flushing is closed when the pre-checkpoint flush started at
	// flushStart is done (nil: none pending).
	flushing   <-chan struct{}
	flushStart time.Time
	hwm        int64 // high watermark seen in the last fetch
	// clog is the partition's change log (changelog mode; nil otherwise).
	clog *changelog
	rec  Record
	// replaced: rec's results have been replaced by its dead letter (an
	// unwritable record, Config.Unwritable).
	replaced bool
	// ahead holds the records handed to a Prefetcher.
	ahead [PrefetchBatch]Record
	out   outSlab // the partition's output records (processing goroutine only)
	// pending holds results not yet handed to the sink. The client takes
	// a global and a per-topic lock for every record it buffers; handed
	// over in runs, one goroutine at a time, those locks stay on one core
	// instead of bouncing between the partitions' goroutines.
	pending []pendingRec
	// Counts of the open epoch, added to the totals only when it commits,
	// so that metrics count each record once however often it is redone.
	ep, total counts
}

type counts struct{ in, out, dlq, dup int64 }

func (c *counts) add(o counts) { c.in += o.in; c.out += o.out; c.dlq += o.dlq; c.dup += o.dup }

// NewEngine wires an attempt. The engine takes ownership of src and closes
// it when Run returns. newOp makes one operator per partition: partitions
// are processed in parallel, each by its own instance.
func NewEngine(cfg Config, src *offsets.Source, sink Sink, newOp func() Operator, ckpt checkpoint.Storage) *Engine {
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
	if cfg.ExpireBudget <= 0 {
		cfg.ExpireBudget = 10000
	}
	if cfg.ChangelogBaseEvery <= 0 {
		cfg.ChangelogBaseEvery = DefaultChangelogBaseEvery
	}
	if cfg.ChangelogMaxRatio == 0 {
		cfg.ChangelogMaxRatio = DefaultChangelogMaxRatio
	}
	if cfg.ChangelogBufferBytes <= 0 {
		cfg.ChangelogBufferBytes = DefaultChangelogBufferBytes
	}
	if cfg.ChangelogSegmentBytes <= 0 {
		cfg.ChangelogSegmentBytes = DefaultChangelogSegmentBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Unwritable == nil {
		cfg.Unwritable = NewUnwritableSet()
	}
	e := &Engine{
		cfg: cfg, src: src, sink: sink, newOp: newOp, ckpt: ckpt, log: cfg.Logger, stats: cfg.Stats,
		parts:  map[int32]*partState{},
		spReqs: make(chan savepointReq),
	}
	e.snaps.init()
	return e
}

func (e *Engine) now() time.Time { return e.cfg.Now() }

func (e *Engine) since(t time.Time) time.Duration { return e.now().Sub(t) }

// Run processes until ctx is canceled (graceful drain: commit, final
// snapshot, leave the group; returns nil), the job is idle for
// ExitWhenIdle (returns job.ErrFinished), or an error fails the attempt.
// markRunning is called once every assigned partition is recovered.
func (e *Engine) Run(ctx context.Context, markRunning func()) (err error) {
	e.running = markRunning
	started := e.now()
	e.snaps.last = e.now()
	e.lastInput = e.now()
	e.cache = NewCache(e.cfg.CacheBytes)
	// The live stores and staged checkpoints of an earlier process are
	// caches: every assignment rebuilds its store from the checkpoint
	// storage. Left over, their hard links would keep deleted files alive.
	for _, d := range []string{"staging", "state"} {
		if err := os.RemoveAll(filepath.Join(e.cfg.DataDir, d)); err != nil {
			return fmt.Errorf("clearing %s: %w", d, err)
		}
	}
	e.snaps.start(e)
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
		e.snaps.stop()
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
			err = explainFencing(err)
		}
	}()
	topicID, clusterID, _, err := e.src.Identity(ctx)
	if err != nil {
		return err
	}
	e.topicID, e.clusterID = topicID, clusterID
	if s, ok := e.sink.(*KafkaSink); ok {
		s.cfg.TopicID = topicID
		s.cfg.Start = func(p int32) int64 {
			if ps := e.parts[p]; ps != nil {
				return ps.start
			}
			return -1
		}
	}

	for {
		if ctx.Err() != nil {
			return e.shutdown()
		}
		if e.cfg.OnLoop != nil {
			e.cfg.OnLoop()
		}
		e.checkStall()
		if !e.ep.open {
			if err := e.boundary(ctx); err != nil {
				return err
			}
		}
		if err := e.drainSnapResults(); err != nil {
			return err
		}
		pollCtx, cancel := context.WithTimeout(ctx, e.pollWait())
		fetches := e.src.Poll(pollCtx, e.cfg.MaxPollRecords)
		cancel()
		if e.cfg.afterPoll != nil {
			e.cfg.afterPoll()
		}
		if fetches.IsClientClosed() {
			return errors.New("kafka client closed unexpectedly")
		}
		if err := e.fetchErrors(fetches); err != nil {
			return err
		}
		// Group callbacks run only while the loop allows rebalances (at an
		// epoch boundary, before this poll returned): their events are
		// applied before any record of this poll is processed. With an
		// epoch open (a lost session is not held back) the poll is dropped
		// and the epoch ended first.
		if len(e.src.Events()) > 0 {
			if e.ep.open {
				// The poll moved the client past what the epoch
				// processed, so the epoch cannot commit exactly its
				// positions: it is aborted and redone after the events.
				e.log.Info("group event during an epoch: aborting the epoch and dropping this poll")
				if err := e.sink.Abort(ctx); err != nil {
					return err
				}
				e.stats.EpochsAborted.Add(1)
				e.rewind()
				continue
			}
			e.recoveredNow = map[int32]bool{}
			if err := e.applyEvents(ctx); err != nil {
				return err
			}
			fetches = e.dropRecovered(fetches)
		}
		// RUNNING once the assigned partitions are recovered (or, for a
		// member that got no partitions, once it has waited a while).
		if !e.markedRunning && (len(e.parts) > 0 || e.since(started) > 10*time.Second) {
			e.markedRunning = true
			if e.running != nil {
				e.running()
			}
		}
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
			e.lastInput = e.now()
		}
		// An epoch ends at the commit interval, at its size limit, before
		// a rebalance, or when the input went quiet: a poll that waited
		// (pollWait: a tenth of the interval while an epoch is open) and
		// got nothing. Holding the transaction open then would only delay
		// the output; a trickle of input costs at most ten transactions
		// per commit interval.
		if e.ep.open && (n == 0 || e.since(e.ep.start) >= e.cfg.CommitInterval || e.epochBytes() >= e.cfg.MaxEpochBytes || e.src.RebalanceWaiting()) {
			if err := e.commitEpoch(ctx); err != nil {
				return err
			}
		}
		if e.ep.open {
			continue
		}
		if err := e.snapshotIfDue(); err != nil {
			return err
		}
		e.checkStall()
		if e.cfg.ExitWhenIdle > 0 && n == 0 && e.since(e.lastInput) >= e.cfg.ExitWhenIdle && len(e.parts) > 0 {
			e.log.Info("idle, finishing", zap.Duration("idle_for", e.since(e.lastInput)))
			if err := e.finalSnapshot(); err != nil {
				return err
			}
			e.graceful = true // leave the group: the job is done
			return job.ErrFinished
		}
	}
}

// checkStall restarts the idle clock when the loop was not running for a
// while (the process was stopped, or starved of CPU): "no input" during
// that time says nothing, and a member that just woke up must first learn
// what happened to its group.
func (e *Engine) checkStall() {
	if !e.lastTurn.IsZero() && e.since(e.lastTurn) > 5*time.Second {
		e.lastInput = e.now()
	}
	e.lastTurn = e.now()
}

// dropRecovered removes from a poll the records of partitions recovered
// after it arrived and re-positions the client at their C (the client has
// polled from them now, so the seek takes).
func (e *Engine) dropRecovered(fetches kgo.Fetches) kgo.Fetches {
	if len(e.recoveredNow) == 0 {
		return fetches
	}
	seek := map[int32]int64{}
	for i := range fetches {
		for j := range fetches[i].Topics {
			ft := &fetches[i].Topics[j]
			for k := range ft.Partitions {
				fp := &ft.Partitions[k]
				if e.recoveredNow[fp.Partition] && len(fp.Records) > 0 {
					fp.Records = nil
					seek[fp.Partition] = e.parts[fp.Partition].pos
				}
			}
		}
	}
	e.recoveredNow = nil
	e.src.Seek(seek)
	return fetches
}

// boundary is the work done only between epochs: savepoint requests,
// group events, and letting a waiting rebalance go ahead.
func (e *Engine) boundary(ctx context.Context) error {
	select {
	case req := <-e.spReqs:
		if err := e.startSavepoint(ctx, req); err != nil {
			return err
		}
	default:
	}
	if err := e.applyEvents(ctx); err != nil {
		return err
	}
	e.src.AllowRebalance()
	return nil
}

// fetchErrors turns a poll's errors into the attempt's fate: a position
// whose records are gone is state loss (the client never resets on its
// own); non-retriable protocol errors fail the attempt; the rest the
// client retries.
func (e *Engine) fetchErrors(fetches kgo.Fetches) error {
	var fatal error
	fetches.EachError(func(t string, p int32, ferr error) {
		if errors.Is(ferr, context.DeadlineExceeded) || errors.Is(ferr, context.Canceled) || fatal != nil {
			return
		}
		if errors.Is(ferr, kerr.OffsetOutOfRange) {
			ps := e.parts[p]
			if ps == nil {
				// Not recovered yet: the client fetched from the group's
				// offset before recovery positioned it; recovery checks
				// the log bounds itself.
				return
			}
			pos := ps.pos
			if start, stable, ok := e.boundsNow(p); ok && start <= pos && pos <= stable {
				// The records at the engine's position are there, so the
				// client was fetching elsewhere: below C, where it starts
				// with no group offset, and the log start passed it
				// before it was moved to C. No state is lost: the attempt
				// restarts, and recovery positions a fresh client.
				fatal = fmt.Errorf("partition %d: the client fetched below the log start %d on its way to the commit point %d; restarting: %w", p, start, pos, ferr)
				return
			}
			err := fmt.Errorf("partition %d: the records at the position %d are gone from the log (retention or DeleteRecords): %w", p, pos, ErrStateLoss)
			if e.cfg.AllowStateLoss {
				// Recovery, with state loss allowed, resumes at the log start.
				err = fmt.Errorf("partition %d: records at %d are gone from the log; recovering with state loss allowed: %w", p, pos, ferr)
			}
			fatal = err
			return
		}
		if t == "" && errors.Is(ferr, kerr.FencedInstanceID) {
			// Another process joined with this --instance-id and took
			// this member's place: rejoining would take it back, and so
			// on. The attempt fails; Run words it as permanent.
			fatal = fmt.Errorf("group session: %w", ferr)
			return
		}
		if t == "" && !kconn.IsAuthError(ferr) {
			// A group session error the client recovers from by
			// rejoining (the member was removed, the coordinator moved);
			// its partitions come back as events.
			e.log.Warn("group session error; the client rejoins", zap.Error(ferr))
			return
		}
		e.log.Warn("fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(ferr))
		if isFatalFetch(ferr) {
			fatal = fmt.Errorf("fetching %s/%d: %w", t, p, ferr)
		}
	})
	return fatal
}

// boundsNow is the partition's log start and last stable offset, asked
// of the broker now (ok false when it cannot say within 10 s).
func (e *Engine) boundsNow(p int32) (start, stable int64, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start, stable, err := e.src.Bounds(ctx, p)
	if err != nil {
		e.log.Warn("cannot read the partition's log bounds", zap.Int32("partition", p), zap.Error(err))
		return 0, 0, false
	}
	return start, stable, true
}

// pollWait is how long a poll waits for records: with an epoch open, a
// tenth of the commit interval (a poll that gets nothing ends the epoch)
// and never past the interval's end.
func (e *Engine) pollWait() time.Duration {
	if e.ep.open {
		d := min(e.cfg.CommitInterval-e.since(e.ep.start), e.cfg.CommitInterval/10)
		return min(max(d, 5*time.Millisecond), 250*time.Millisecond)
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

// applyEvents applies the pending group events, in order, at an epoch
// boundary.
func (e *Engine) applyEvents(ctx context.Context) error {
	for {
		select {
		case ev := <-e.src.Events():
			if err := e.applyEvent(ctx, ev); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (e *Engine) applyEvent(ctx context.Context, ev offsets.Event) error {
	if e.ep.open {
		return errors.New("internal error: a group event applied inside an epoch")
	}
	switch ev.Kind {
	case offsets.Assigned:
		var todo []int32
		for _, p := range ev.Partitions {
			if _, ok := e.parts[p]; !ok {
				todo = append(todo, p)
			}
		}
		if err := e.recoverPartitions(ctx, todo); err != nil {
			return err
		}
		// The idle clock restarts: records of newly assigned partitions
		// have not been fetched yet, so "no input" so far says nothing
		// about them (a member that waited out a long rebalance must not
		// finish the moment it receives work).
		e.lastInput = e.now()
	case offsets.Revoked, offsets.Lost:
		for _, p := range ev.Partitions {
			ps, ok := e.parts[p]
			if !ok {
				continue
			}
			e.stats.unregisterStore(p)
			// The store is a cache of the snapshots; the next owner of
			// the partition, here or elsewhere, rebuilds it.
			if err := ps.store.Remove(); err != nil {
				e.log.Warn("removing the store of a released partition", zap.Int32("partition", p), zap.Error(err))
			}
			delete(e.parts, p)
			e.log.Info("partition released", zap.Int32("partition", p), zap.Int64("committed", ps.next), zap.Stringer("why", ev.Kind))
		}
	}
	e.stats.setPartitions(e.partitionSnapshot())
	return nil
}

// shutdown drains: commit the open epoch, take a final snapshot.
func (e *Engine) shutdown() error {
	e.log.Info("draining: committing the open epoch and taking a final snapshot")
	if err := e.commitEpoch(context.Background()); err != nil {
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

// explainFencing words the errors two processes with the same identity
// get. A static member replaced by another process with its instance id is
// permanent: restarting would fence the other one back, forever.
func explainFencing(err error) error {
	switch {
	case errors.Is(err, kerr.FencedInstanceID):
		return job.Permanent(fmt.Errorf("another consumer joined the group with this --instance-id and took over this member (each member needs its own instance id; a restarted service does this on purpose): %w", err))
	case errors.Is(err, kerr.ProducerFenced):
		return fmt.Errorf("this member's producer was fenced: either another process initialised its transactional id (the same --instance-id running twice), or the broker aborted the open transaction after --transaction-timeout (a transaction coordinator failover, or a stalled process); the attempt restarts from the commit point: %w", err)
	}
	return err
}
