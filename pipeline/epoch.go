package pipeline

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
	"github.com/txstream/txstream/job"
)

// The commit protocol. An epoch is the unit of exactly-once: its output,
// its dead letters, its progress records and the input positions they came
// from are committed by the sink in one atomic step, and only then is its
// state (each partition's overlay) applied to the stores. An aborted epoch
// drops the overlays and moves the client back to the last commit point.
//
// Positions are the engine's own: for each partition, one past the last
// record the operator processed (partState.pos). The client's fetch
// positions run ahead of them (a poll prefetches) and are never committed.

// epoch is the open epoch's bookkeeping; the per-partition part (position,
// overlay, counts) lives in partState.
type epoch struct {
	open    bool
	start   time.Time
	records int
}

// Dead-letter record headers.
const (
	HeaderDLQReason    = "txstream-dlq-reason"
	HeaderDLQDetail    = "txstream-dlq-detail"
	HeaderSrcTopic     = "txstream-source-topic"
	HeaderSrcPartition = "txstream-source-partition"
	HeaderSrcOffset    = "txstream-source-offset"
	// HeaderDLQTruncated is set when the dead letter carries only the
	// first bytes of the input value; its value is the original size.
	HeaderDLQTruncated = "txstream-dlq-truncated-from"
)

// Bounds that keep every dead letter writable: a broker's default
// max.message.bytes is 1 MiB, and the input may have been compressed far
// below that (a 2 MiB line compresses to a few KiB).
const (
	dlqMaxValue   = 64 << 10
	dlqMaxHeaders = 16 << 10
	// ReasonUnwritable marks a dead letter that replaces a record the
	// sink could not write (too large, refused by a topic policy).
	ReasonUnwritable = "unwritable_output"
)

// beginEpoch opens an epoch at the sink.
func (e *Engine) beginEpoch() error {
	if e.ep.open {
		return nil
	}
	if err := e.sink.Begin(); err != nil {
		return err
	}
	e.ep = epoch{open: true, start: e.now()}
	return nil
}

// positions returns the engine's positions of every owned partition and
// the partitions the open epoch advanced.
func (e *Engine) positions() (map[int32]int64, []int32) {
	pos := make(map[int32]int64, len(e.parts))
	var touched []int32
	for p, ps := range e.parts {
		pos[p] = ps.pos
		if ps.pos != ps.next {
			touched = append(touched, p)
		}
	}
	return pos, touched
}

// commitEpoch ends the open epoch at the sink and, only if it committed,
// applies its state. An epoch the sink aborted is not an error: it is
// redone from the last commit point.
func (e *Engine) commitEpoch(ctx context.Context) error {
	if !e.ep.open {
		return nil
	}
	faults.Hit(faults.BeforeSinkCommit)
	start := time.Now()
	pos, touched := e.positions()
	// The commit must finish even when a shutdown signal canceled ctx.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	committed, err := e.sink.Commit(cctx, pos, touched)
	records := e.ep.records
	e.ep.open = false
	var unw *UnwritableError
	var af *abortFailedError
	switch {
	case errors.As(err, &af):
		e.rewind()
		return fmt.Errorf("epoch commit: %w", err)
	case errors.As(err, &unw):
		return e.redoWithout(cctx, unw)
	case errors.Is(err, errPositionsDiverged):
		e.stats.EpochsAborted.Add(1)
		e.log.Info("epoch aborted: the client moved past the processed records; redoing it", zap.Int("records", records), zap.Error(err))
		e.rewind()
		return nil
	case err != nil:
		e.rewind()
		return fmt.Errorf("epoch commit: %w", err)
	case !committed:
		// Aborted: a rebalance, or an end the broker answered in a way
		// that leaves the outcome open. C says which.
		return e.afterAbort(cctx, touched, records)
	}
	faults.Hit(faults.AfterSinkCommit)
	if err := e.applyPartitions(touched); err != nil {
		return err
	}
	e.addEpochCounts()
	faults.Hit(faults.AfterStateApply)
	lat := time.Since(start)
	e.stats.observeCommit(lat, records)
	e.log.Debug("epoch committed", zap.Int("records", records), zap.Duration("latency", lat))
	e.stats.setPartitions(e.partitionSnapshot())
	e.expire()
	return nil
}

// applyPartitions applies the committed epoch to the stores of the
// partitions it touched, in parallel: each has its own store, overlay and
// change log, and the next epoch waits for the slowest.
func (e *Engine) applyPartitions(touched []int32) error {
	if len(touched) == 1 {
		return e.applyPartition(e.parts[touched[0]])
	}
	errs := make([]error, len(touched))
	var wg sync.WaitGroup
	for i, p := range touched {
		ps := e.parts[p]
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil { // as Run does on its own goroutine
					errs[i] = &job.PanicError{Value: r, Stack: debug.Stack()}
				}
			}()
			errs[i] = e.applyPartition(ps)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// applyPartition makes the epoch's changes of one partition durable state.
func (e *Engine) applyPartition(ps *partState) error {
	e.recordEpoch(ps)
	if err := ps.ov.apply(ps.pos); err != nil {
		return err
	}
	if full := ps.store.packFull(); full != ps.packFull {
		ps.packFull = full
		packed, fallback, entries := ps.store.PackStats()
		if full {
			e.log.Info("the partition's index of packed state keys is full: new ones are written one Pebble key each (more CPU per record) until expiry makes room; raise --dedup-index-entries if memory allows",
				zap.Int32("partition", ps.p), zap.Int("entries", entries), zap.Int64("packed", packed), zap.Int64("unpacked", fallback))
		} else {
			e.log.Info("the partition's index of packed state keys has room again", zap.Int32("partition", ps.p), zap.Int("entries", entries))
		}
	}
	ps.applied = ps.pos - ps.next
	ps.next = ps.pos
	ps.dirty = true
	return nil
}

func (e *Engine) addEpochCounts() {
	for _, ps := range e.parts {
		ps.total.add(ps.ep)
		e.stats.addCounts(ps.ep)
		ps.ep = counts{}
	}
}

// afterAbort settles an epoch the sink reported as not committed. Its
// commit may still have landed (an EndTxn answered UNKNOWN_SERVER_ERROR is
// reported as an abort), so C is read again: a partition whose C equals the
// epoch's position keeps the epoch's state, any other is rewound. Only this
// member commits a partition it owns, so C cannot match by accident for a
// partition that stays; one that is being revoked is dropped next anyway.
func (e *Engine) afterAbort(ctx context.Context, touched []int32, records int) error {
	landed := 0
	for _, p := range touched {
		ps := e.parts[p]
		c, err := e.sink.Committed(ctx, p)
		if err != nil {
			e.rewind()
			return fmt.Errorf("reading the commit point after an aborted epoch: %w", err)
		}
		if c == ps.pos {
			if err := e.applyPartition(ps); err != nil {
				return err
			}
			landed++
		}
	}
	if landed > 0 {
		e.log.Warn("the sink reported the epoch as aborted but its commit landed; its state is kept",
			zap.Int("partitions", landed), zap.Int("records", records))
		e.addEpochCounts()
	} else {
		e.stats.EpochsAborted.Add(1)
		e.log.Info("epoch aborted by a rebalance; its records will be processed again", zap.Int("records", records))
	}
	e.rewind()
	return nil
}

// rewind drops the open epoch's uncommitted work and moves the client back
// to the engine's commit points.
func (e *Engine) rewind() {
	e.ep.open = false
	pos := make(map[int32]int64, len(e.parts))
	for p, ps := range e.parts {
		if ps.pos != ps.next {
			ps.ov.reset()
		}
		ps.pos = ps.next
		ps.ep = counts{}
		pos[p] = ps.next
	}
	e.src.Seek(pos)
}

// redoWithout handles a record the sink cannot write: the epoch is aborted
// (the sink did), the record is remembered for the rest of the process, and
// the epoch is redone with a dead letter that fits in its place. The same
// record failing a second time is an error: the dead-letter topic itself
// refuses it.
func (e *Engine) redoWithout(ctx context.Context, unw *UnwritableError) error {
	e.rewind()
	k := RecordKey{unw.Partition, unw.Offset}
	if _, seen := e.cfg.Unwritable[k]; seen {
		return fmt.Errorf("epoch commit: the dead letter that replaces an unwritable record was refused too: %w", unw)
	}
	if e.cfg.Unwritable == nil {
		e.cfg.Unwritable = map[RecordKey]string{}
	}
	e.cfg.Unwritable[k] = unw.Err.Error()
	e.stats.EpochsAborted.Add(1)
	e.log.Warn("a record cannot be written; the epoch is redone with a dead letter in its place",
		zap.String("topic", unw.Topic), zap.Int32("partition", unw.Partition), zap.Int64("offset", unw.Offset), zap.Error(unw.Err))
	return nil
}

// RecordKey names an input record (partition, offset).
type RecordKey struct {
	p   int32
	off int64
}

// liveEmitter sends an operator's results into the open epoch.
type liveEmitter struct {
	e        *Engine
	rec      *Record
	c        *counts
	out      *outSlab
	replaced *bool // the record being processed has had its dead letter
	pending  *[]pendingRec
}

// pendingRec is a result waiting to be handed to the sink.
type pendingRec struct {
	r   *kgo.Record
	src Record
}

// sendRun is how many results a partition hands to the sink at once.
const sendRun = 256

func (l liveEmitter) send(r *kgo.Record) {
	*l.pending = append(*l.pending, pendingRec{r, *l.rec})
	if len(*l.pending) >= sendRun {
		l.e.handOver(l.pending)
	}
}

// handOver gives a partition's pending results to the sink.
func (e *Engine) handOver(pending *[]pendingRec) {
	if len(*pending) == 0 {
		return
	}
	e.sendMu.Lock()
	for i := range *pending {
		pr := &(*pending)[i]
		e.sink.Send(pr.r, &pr.src)
		*pr = pendingRec{}
	}
	e.sendMu.Unlock()
	*pending = (*pending)[:0]
}

func (l liveEmitter) Emit(key, value []byte) {
	if l.replace() {
		return
	}
	l.send(l.out.record(l.e.cfg.OutputTopic, key, value, l.rec))
	l.c.out++
}

func (l liveEmitter) DeadLetter(reason, detail string) {
	if l.replace() {
		return
	}
	l.send(deadLetter(l.e.cfg.DLQTopic, l.rec, reason, detail, dlqMaxValue))
	l.c.dlq++
	l.e.log.Debug("dead letter", zap.String("reason", reason), zap.String("detail", detail),
		zap.Int32("partition", l.rec.Partition), zap.Int64("offset", l.rec.Offset))
}

func (l liveEmitter) Skipped(string) { l.c.dup++ }

// replace reports a record whose results the sink could not write: its
// first result becomes one small dead letter, the rest are dropped. The
// dead letter is sent each time the record is processed (the flag is per
// processing, reset before each record): an epoch that is redone again,
// to replace another record or after a rebalance, must carry it too.
func (l liveEmitter) replace() bool {
	cause, ok := l.e.cfg.Unwritable[RecordKey{l.rec.Partition, l.rec.Offset}]
	if !ok {
		return false
	}
	if *l.replaced {
		return true
	}
	*l.replaced = true
	l.send(deadLetter(l.e.cfg.DLQTopic, l.rec, ReasonUnwritable, cause, 1<<10))
	l.c.dlq++
	return true
}

// deadLetter builds the dead-letter record of an input record: its value
// (the first maxValue bytes), its headers while they fit, the reason and
// the source coordinates.
func deadLetter(topic string, r *Record, reason, detail string, maxValue int) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+6)
	size := 0
	for _, h := range r.Headers {
		size += len(h.Key) + len(h.Value)
		if size > dlqMaxHeaders {
			break
		}
		hs = append(hs, h)
	}
	if len(detail) > 4096 {
		detail = detail[:4096]
	}
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderDLQDetail, Value: []byte(detail)},
		kgo.RecordHeader{Key: HeaderSrcTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderSrcPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderSrcOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
	)
	value, key := r.Value, r.Key
	if len(value) > maxValue {
		hs = append(hs, kgo.RecordHeader{Key: HeaderDLQTruncated, Value: strconv.AppendInt(nil, int64(len(value)), 10)})
		value = value[:maxValue]
	}
	if len(key) > 1024 {
		key = key[:1024]
	}
	return &kgo.Record{Topic: topic, Key: key, Value: value, Headers: hs, Timestamp: r.Timestamp}
}

// replayEmitter suppresses output: the records of a replayed range were
// committed by an earlier epoch.
type replayEmitter struct{}

func (replayEmitter) Emit([]byte, []byte)       {}
func (replayEmitter) DeadLetter(string, string) {}
func (replayEmitter) Skipped(string)            {}
func (replayEmitter) Discards() bool            { return true }

// expire removes expired state entries of operators that have them, after
// a committed epoch and outside it: removal of entries that can never
// match again does not change any output, so when it runs does not matter.
func (e *Engine) expire() {
	for _, ps := range e.parts {
		x, ok := ps.op.(Expirer)
		if !ok || !ps.dirty {
			continue
		}
		// Each record can make one entry due a window later: removing
		// up to twice the epoch's records keeps any backlog shrinking.
		budget := max(e.cfg.ExpireBudget, int(2*ps.applied))
		ps.applied = 0
		if _, err := x.Expire(ps.store, budget); err != nil {
			e.log.Warn("expiring state entries failed; retrying after the next epoch", zap.Int32("partition", ps.p), zap.Error(err))
		}
	}
}
