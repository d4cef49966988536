package pipeline

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
	"github.com/txstream/txstream/job"
)

// processFetches runs the operator over a poll's records inside the open
// epoch. Partitions are independent (own store, overlay, operator and
// counters), so several partitions are processed in parallel, each in its
// own order; results reach the sink through Engine.handOver.
func (e *Engine) processFetches(fetches kgo.Fetches) (int, error) {
	type work struct {
		ps   *partState
		recs []*kgo.Record
	}
	var ws []work
	var behind map[int32]int64
	n := 0
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		ps := e.parts[fp.Partition]
		if ps == nil {
			// Not owned (released by an event this poll raced with):
			// its next owner fetches it from C.
			e.log.Debug("dropping records of a partition this member does not own", zap.Int32("partition", fp.Partition), zap.Int("records", len(fp.Records)))
			return
		}
		// Records below the engine's position are reflected in state
		// already (a fetch that started at the group's offset below a
		// savepoint or a progress record, or at the log start).
		recs := fp.Records
		if recs[len(recs)-1].Offset < ps.pos {
			// The client reads below the engine's position: with no
			// committed offset in the group (expired, or C came from a
			// progress record) it started at the log start, and only now,
			// having polled the partition, can it be moved (Seek). Left
			// there, it would read all the retained log before C.
			if behind == nil {
				behind = map[int32]int64{}
			}
			behind[fp.Partition] = ps.pos
			e.log.Info("the client reads below the commit point; moving it there",
				zap.Int32("partition", fp.Partition), zap.Int64("at", recs[len(recs)-1].Offset+1), zap.Int64("commit_point", ps.pos))
			return
		}
		ws = append(ws, work{ps, recs})
		n += len(recs)
	})
	if behind != nil {
		e.src.Seek(behind)
	}
	if n == 0 {
		return 0, nil
	}
	if err := e.beginEpoch(); err != nil {
		return 0, err
	}
	e.ep.records += n
	if len(ws) == 1 {
		return n, e.processPartition(ws[0].ps, ws[0].recs)
	}
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.processPartition(w.ps, w.recs)
		}()
	}
	wg.Wait()
	return n, errors.Join(errs...)
}

// processPartition runs the partition's operator over its records, in
// order. It touches only ps and the engine's concurrency-safe parts.
func (e *Engine) processPartition(ps *partState, recs []*kgo.Record) (err error) {
	var cur *kgo.Record
	defer func() {
		if r := recover(); r != nil {
			err = &job.RecordError{Topic: cur.Topic, Partition: cur.Partition, Offset: cur.Offset,
				Err: fmt.Errorf("operator panic: %v\n%s", r, debug.Stack())}
		}
	}()
	em := liveEmitter{e: e, rec: &ps.rec, c: &ps.ep, out: &ps.out, replaced: &ps.replaced, pending: &ps.pending}
	defer e.handOver(&ps.pending)
	pf, _ := ps.op.(Prefetcher)
	for i, kr := range recs {
		cur = kr
		if kr.Offset < ps.pos {
			continue
		}
		if pf != nil && i%PrefetchBatch == 0 {
			prefetch(pf, &ps.ahead, recs[i:min(i+PrefetchBatch, len(recs))], ps.ov)
		}
		// The count across partitions is for fault injection only: an
		// atomic add per record on a cache line that the partitions'
		// goroutines share is not free.
		if e.cfg.CrashAtRecord > 0 || e.cfg.FailAtRecord > 0 {
			nth := e.liveRecords.Add(1)
			if e.cfg.CrashAtRecord > 0 && nth == e.cfg.CrashAtRecord {
				e.log.Warn("fault injection: crashing the process (--crash-at-record)", zap.Int64("record", nth),
					zap.Int32("partition", kr.Partition), zap.Int64("offset", kr.Offset))
				_ = e.log.Sync()
				faults.Kill()
			}
			if e.cfg.FailAtRecord > 0 && nth == e.cfg.FailAtRecord {
				return &job.RecordError{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset,
					Err: fmt.Errorf("injected failure at record %d of this attempt (--fail-at-record)", nth)}
			}
		}
		ps.ep.in++
		ps.rec, ps.replaced = recordOf(kr), false
		if err := ps.op.Process(&ps.rec, ps.ov, em); err != nil {
			return &job.RecordError{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Err: err}
		}
		ps.pos = kr.Offset + 1
	}
	return nil
}

// recordOf is the operator's view of a fetched record.
func recordOf(kr *kgo.Record) Record {
	return Record{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value,
		Headers: kr.Headers, Timestamp: kr.Timestamp}
}

// prefetch hands pf the records of the next batch (at most
// PrefetchBatch), converted into buf.
func prefetch(pf Prefetcher, buf *[PrefetchBatch]Record, recs []*kgo.Record, st State) {
	for i, kr := range recs {
		buf[i] = recordOf(kr)
	}
	pf.Prefetch(buf[:len(recs)], st)
}
