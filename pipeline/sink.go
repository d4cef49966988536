package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/offsets"
)

// Sink owns the commit point: it commits an epoch's records together with
// the input offsets that produced them, and says afterwards which offsets
// it has committed.
type Sink interface {
	// Begin opens an epoch.
	Begin() error
	// Send adds an output or dead-letter record to the open epoch.
	Send(r *kgo.Record)
	// Commit ends the epoch. committed=false with a nil error means the
	// epoch was aborted (a rebalance revoked partitions) and its records
	// will be fetched again. offsets are the next input offsets the commit
	// covers, per partition.
	Commit(ctx context.Context) (committed bool, offsets map[int32]int64, err error)
	// Abort ends the epoch without committing.
	Abort(ctx context.Context) error
	// Committed is the commit point C of partition p: the next offset to
	// process, or -1 when nothing was ever committed.
	Committed(ctx context.Context, p int32) (int64, error)
	// ExactlyOnce reports whether a replay can duplicate output.
	ExactlyOnce() bool
	Name() string
}

// KafkaSink commits one Kafka transaction per epoch carrying the output
// records, the dead-letter records and the group's input offsets
// (TxnOffsetCommit). C is the group's committed offset read with
// require-stable.
type KafkaSink struct {
	src *offsets.Source

	mu       sync.Mutex
	firstErr error
	inTxn    bool
}

// NewKafkaSink wraps a transactional source.
func NewKafkaSink(src *offsets.Source) (*KafkaSink, error) {
	if src.Session() == nil {
		return nil, errors.New("kafka sink needs a transactional source")
	}
	return &KafkaSink{src: src}, nil
}

// Name implements Sink.
func (k *KafkaSink) Name() string { return "kafka" }

// ExactlyOnce implements Sink.
func (k *KafkaSink) ExactlyOnce() bool { return true }

// Begin implements Sink.
func (k *KafkaSink) Begin() error {
	if err := k.src.Session().Begin(); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	k.inTxn = true
	return nil
}

// Send implements Sink. Produce errors surface at Commit, which then aborts.
func (k *KafkaSink) Send(r *kgo.Record) {
	// Background context: a shutdown must not fail records that the
	// final commit is about to flush.
	k.src.Session().Produce(context.Background(), r, func(r *kgo.Record, err error) {
		if err != nil {
			k.mu.Lock()
			if k.firstErr == nil {
				k.firstErr = fmt.Errorf("producing to %s: %w", r.Topic, err)
			}
			k.mu.Unlock()
		}
	})
}

// Commit implements Sink.
func (k *KafkaSink) Commit(ctx context.Context) (bool, map[int32]int64, error) {
	if !k.inTxn {
		return true, k.src.Positions(), nil
	}
	k.inTxn = false
	pos := k.src.Positions()
	sess := k.src.Session()
	if err := sess.Client().Flush(ctx); err != nil {
		_, _ = sess.End(ctx, kgo.TryAbort)
		return false, nil, fmt.Errorf("flushing epoch: %w", err)
	}
	k.mu.Lock()
	perr := k.firstErr
	k.firstErr = nil
	k.mu.Unlock()
	if perr != nil {
		if _, err := sess.End(ctx, kgo.TryAbort); err != nil {
			return false, nil, errors.Join(perr, fmt.Errorf("aborting transaction: %w", err))
		}
		return false, nil, perr
	}
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil {
		return false, nil, fmt.Errorf("committing transaction: %w", err)
	}
	return committed, pos, nil
}

// Abort implements Sink.
func (k *KafkaSink) Abort(ctx context.Context) error {
	if !k.inTxn {
		return nil
	}
	k.inTxn = false
	k.mu.Lock()
	k.firstErr = nil
	k.mu.Unlock()
	if _, err := k.src.Session().End(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("aborting transaction: %w", err)
	}
	return nil
}

// Committed implements Sink.
func (k *KafkaSink) Committed(ctx context.Context, p int32) (int64, error) {
	return k.src.Committed(ctx, p)
}

// StdoutSink prints output values, one per line, and commits offsets after
// the lines are written: at-least-once, for debugging (a replay prints
// again, as Flink's print() does). Dead letters go to the error writer.
type StdoutSink struct {
	mu        sync.Mutex // Send is called from several partition workers
	src       *offsets.Source
	out       *bufio.Writer
	errw      io.Writer
	outTopic  string
	committed map[int32]int64
}

// NewStdoutSink wraps a non-transactional source.
func NewStdoutSink(src *offsets.Source, out, errw io.Writer, outputTopic string) *StdoutSink {
	return &StdoutSink{src: src, out: bufio.NewWriterSize(out, 1<<16), errw: errw, outTopic: outputTopic, committed: map[int32]int64{}}
}

// Name implements Sink.
func (s *StdoutSink) Name() string { return "stdout" }

// ExactlyOnce implements Sink.
func (s *StdoutSink) ExactlyOnce() bool { return false }

// Begin implements Sink.
func (s *StdoutSink) Begin() error { return nil }

// Send implements Sink.
func (s *StdoutSink) Send(r *kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Topic == s.outTopic {
		_, _ = s.out.Write(r.Value)
		_ = s.out.WriteByte('\n')
		return
	}
	reason := ""
	for _, h := range r.Headers {
		if h.Key == HeaderDLQReason {
			reason = string(h.Value)
		}
	}
	fmt.Fprintf(s.errw, "dead-letter reason=%s value=%q\n", reason, r.Value)
}

// Commit implements Sink.
func (s *StdoutSink) Commit(ctx context.Context) (bool, map[int32]int64, error) {
	s.mu.Lock()
	err := s.out.Flush()
	s.mu.Unlock()
	if err != nil {
		return false, nil, fmt.Errorf("writing stdout: %w", err)
	}
	pos := s.src.Positions()
	if err := s.src.CommitSync(ctx, pos); err != nil {
		return false, nil, fmt.Errorf("committing offsets: %w", err)
	}
	for p, o := range pos {
		s.committed[p] = o
	}
	return true, pos, nil
}

// Abort implements Sink: lines already printed stay printed (at-least-once);
// the fetch positions go back to the last commit.
func (s *StdoutSink) Abort(context.Context) error {
	s.mu.Lock()
	_ = s.out.Flush()
	s.mu.Unlock()
	s.src.Rewind(s.committed)
	return nil
}

// Committed implements Sink.
func (s *StdoutSink) Committed(ctx context.Context, p int32) (int64, error) {
	off, err := s.src.Committed(ctx, p)
	if err == nil && off >= 0 {
		s.committed[p] = off
	}
	return off, err
}
