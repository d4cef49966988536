package pipeline

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/faults"
	"github.com/txstream/txstream/job"
)

// processFetches runs the operator over a poll's records inside the open
// epoch. Partitions are independent (own store, overlay, operator and
// counters), so several partitions are processed in parallel, each in its
// own order; the sink's Send is safe for concurrent use.
func (e *Engine) processFetches(fetches kgo.Fetches) (int, error) {
	type work struct {
		ps   *partState
		recs []*kgo.Record
	}
	var ws []work
	n := 0
	var missing error
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		ps := e.parts[fp.Partition]
		if ps == nil {
			missing = fmt.Errorf("records from partition %d, which was never recovered (missed assignment)", fp.Partition)
			return
		}
		ws = append(ws, work{ps, fp.Records})
		n += len(fp.Records)
	})
	if missing != nil {
		return 0, missing
	}
	if n == 0 {
		return 0, nil
	}
	if !e.epochOpen {
		if err := e.sink.Begin(); err != nil {
			return 0, err
		}
		e.epochOpen = true
		e.epochStart = time.Now()
		e.epochRecords = 0
	}
	e.epochRecords += n
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
	em := liveEmitter{e: e, rec: &ps.rec, c: &ps.ep}
	for _, kr := range recs {
		cur = kr
		if kr.Offset < ps.next {
			// Already reflected in state (below a savepoint's offset,
			// or a fetch that started below C): skipped, but inside an
			// epoch so that the group's committed offset moves past it.
			continue
		}
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
		ps.ep.in++
		ps.rec = Record{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value,
			Headers: kr.Headers, Timestamp: kr.Timestamp}
		if err := ps.op.Process(&ps.rec, ps.ov, em); err != nil {
			return &job.RecordError{Topic: kr.Topic, Partition: kr.Partition, Offset: kr.Offset, Err: err}
		}
	}
	return nil
}
