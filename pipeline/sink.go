package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/offsets"
)

// Sink owns the commit point: it commits an epoch's records together with
// the input positions that produced them, and says afterwards which
// positions it has committed.
type Sink interface {
	// Begin opens an epoch.
	Begin() error
	// Send adds an output or dead-letter record, produced from the input
	// record src, to the open epoch.
	Send(r *kgo.Record, src *Record)
	// Commit ends the epoch. The positions are the engine's, for every
	// owned partition: one past the last record processed. touched lists
	// the partitions the epoch advanced. committed=false with a nil error
	// means the epoch was aborted (a rebalance) and is to be redone.
	Commit(ctx context.Context, positions map[int32]int64, touched []int32) (committed bool, err error)
	// Abort ends the epoch without committing.
	Abort(ctx context.Context) error
	// Committed is the commit point C of partition p: the next offset to
	// process, or -1 when nothing was ever committed.
	Committed(ctx context.Context, p int32) (int64, error)
}

// UnwritableError is a record the sink cannot write whatever it retries:
// too large for the producer or the broker, or refused by a topic policy.
// The engine redoes the epoch with that record replaced by a dead letter
// that fits.
type UnwritableError struct {
	Topic     string // the topic it was for
	Partition int32  // the input record it came from
	Offset    int64
	Err       error
}

func (e *UnwritableError) Error() string {
	return fmt.Sprintf("record for %s from input partition %d offset %d cannot be written: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *UnwritableError) Unwrap() error { return e.Err }

// isUnwritable: errors that retrying the same record can never fix.
func isUnwritable(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.PolicyViolation) ||
		errors.Is(err, kerr.CorruptMessage) || errors.Is(err, kerr.InvalidRequiredAcks)
}

// errPositionsDiverged: the epoch cannot be committed with the engine's
// positions; it is aborted and redone.
var errPositionsDiverged = errors.New("client and engine positions diverged")

// abortFailedError: an epoch the sink ended without committing could not
// be aborted either. Whatever the cause, it is no benign redo (the producer
// may still be in its transaction): the attempt fails, naming both.
type abortFailedError struct{ cause, err error }

func (e *abortFailedError) Error() string {
	return fmt.Sprintf("%v; aborting the transaction: %v", e.cause, e.err)
}
func (e *abortFailedError) Unwrap() []error { return []error{e.cause, e.err} }

// ConfigError is a setting the broker refuses: restarting cannot help.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// srcCtx carries an output record's input coordinates to the produce
// promise, so an unwritable record can be traced to its input.
type srcCtx struct {
	context.Context
	p   int32
	off int64
}

// outRecord is an output record and the context that carries its input
// coordinates to the produce promise.
type outRecord struct {
	kgo.Record
	src srcCtx
}

// outSlab carves output records, and copies of their keys and values, out
// of blocks of many: two allocations per block instead of two per record
// (the allocations were ~3% of the consumer's CPU). A block stays in
// memory until the client has released every record carved from it; a
// block's records are produced within an epoch or two and released when
// the commit that ends them is done, so that is soon. Not safe for
// concurrent use: each partition has its own.
type outSlab struct {
	recs []outRecord
	buf  []byte
}

const (
	slabRecords = 128
	slabBytes   = 32 << 10
)

// record is an output record for topic with copies of key and value and
// its Context set to its srcCtx.
func (s *outSlab) record(topic string, key, value []byte, src *Record) *kgo.Record {
	if len(s.recs) == 0 {
		s.recs = make([]outRecord, slabRecords)
	}
	o := &s.recs[0]
	s.recs = s.recs[1:]
	n := len(key) + len(value)
	var buf []byte
	if n > slabBytes/4 { // a large record gets its own
		buf = make([]byte, n)
	} else {
		if n > cap(s.buf)-len(s.buf) {
			s.buf = make([]byte, 0, slabBytes)
		}
		buf = s.buf[len(s.buf) : len(s.buf)+n : len(s.buf)+n]
		s.buf = s.buf[:len(s.buf)+n]
	}
	copy(buf, key)
	copy(buf[len(key):], value)
	o.Record = kgo.Record{Topic: topic, Key: buf[:len(key):len(key)], Value: buf[len(key):], Timestamp: src.Timestamp}
	o.src = srcCtx{Context: context.Background(), p: src.Partition, off: src.Offset}
	o.Record.Context = &o.src
	return &o.Record
}

// KafkaSinkConfig configures a KafkaSink.
type KafkaSinkConfig struct {
	Group, Topic, TopicID string
	// ProgressTopic receives one progress record per advanced partition
	// in every epoch's transaction ("" = none).
	ProgressTopic string
	// Start returns the history start of partition p for its progress
	// record.
	Start func(p int32) int64
	// InitTimeout bounds the producer's initialisation (fencing the
	// previous incarnation of the transactional id).
	InitTimeout time.Duration
	// TransactionTimeout is the client's transaction.timeout.ms, named
	// in the error when the broker refuses it.
	TransactionTimeout time.Duration
}

// KafkaSink commits one Kafka transaction per epoch carrying the output
// records, the dead-letter records, a progress record per advanced
// partition and the group's input offsets (TxnOffsetCommit). C is the
// group's committed offset read with require-stable.
type KafkaSink struct {
	src *offsets.Source
	cfg KafkaSinkConfig

	mu         sync.Mutex
	firstErr   error
	unwritable *UnwritableError
	inTxn      bool
	// promiseFn is k.promise, bound once: a method value passed per
	// record would be a heap allocation per record.
	promiseFn func(*kgo.Record, error)
}

// NewKafkaSink wraps a transactional source and initialises its producer
// before any recovery, as Kafka Streams does: the broker fences the
// previous incarnation of the transactional id and aborts its open
// transaction now, so that reading the committed offsets (require-stable)
// does not wait for that transaction to time out.
func NewKafkaSink(ctx context.Context, src *offsets.Source, cfg KafkaSinkConfig) (*KafkaSink, error) {
	if src.Session() == nil {
		return nil, errors.New("kafka sink needs a transactional source")
	}
	if cfg.InitTimeout <= 0 {
		cfg.InitTimeout = 90 * time.Second
	}
	ictx, cancel := context.WithTimeout(ctx, cfg.InitTimeout)
	defer cancel()
	if _, _, err := src.Client().ProducerID(ictx); err != nil {
		if kconn.IsAuthError(err) {
			return nil, err
		}
		if errors.Is(err, kerr.InvalidTransactionTimeout) {
			return nil, &ConfigError{Err: fmt.Errorf("--transaction-timeout %v is above the broker's transaction.max.timeout.ms (15m by default): lower it, or raise the broker setting: %w", cfg.TransactionTimeout, err)}
		}
		return nil, fmt.Errorf("initialising the transactional producer: %w", err)
	}
	k := &KafkaSink{src: src, cfg: cfg}
	k.promiseFn = k.promise
	return k, nil
}

// Begin implements Sink.
func (k *KafkaSink) Begin() error {
	if err := k.src.Session().Begin(); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	k.inTxn = true
	return nil
}

// Send implements Sink. Produce errors surface at Commit, which then aborts.
func (k *KafkaSink) Send(r *kgo.Record, src *Record) {
	// Background context: a shutdown must not fail records that the
	// final commit is about to flush.
	if r.Context == nil {
		r.Context = &srcCtx{Context: context.Background(), p: src.Partition, off: src.Offset}
	}
	k.src.Session().Produce(r.Context, r, k.promiseFn)
}

func (k *KafkaSink) promise(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if sc, ok := r.Context.(*srcCtx); ok && isUnwritable(err) && k.unwritable == nil {
		k.unwritable = &UnwritableError{Topic: r.Topic, Partition: sc.p, Offset: sc.off, Err: err}
	}
	if k.firstErr == nil {
		k.firstErr = fmt.Errorf("producing to %s: %w", r.Topic, err)
	}
}

// Commit implements Sink. The client commits what it believes it has
// consumed, so the positions are made the client's first; a mismatch left
// after that aborts the epoch rather than commit offsets nobody processed.
func (k *KafkaSink) Commit(ctx context.Context, positions map[int32]int64, touched []int32) (bool, error) {
	if !k.inTxn {
		return true, nil
	}
	k.inTxn = false
	sess := k.src.Session()
	abort := func(cause error) (bool, error) {
		_, err := sess.End(ctx, kgo.TryAbort)
		k.forgetErrors()
		if err != nil {
			return false, &abortFailedError{cause: cause, err: err}
		}
		return false, cause
	}
	// A partition the epoch advanced must stand exactly at the engine's
	// position in the client: moving it there would also move the
	// client's idea of the committed offset, and the session would then
	// leave the partition out of the offset commit.
	dirty := k.src.Dirty()
	for _, p := range touched {
		if d, ok := dirty[p]; !ok || d != positions[p] {
			return abort(fmt.Errorf("partition %d: the client stands at %d, the engine processed up to %d: %w", p, d, positions[p], errPositionsDiverged))
		}
	}
	k.src.Seek(positions)
	dirty = k.src.Dirty()
	for p, off := range dirty {
		if want, ok := positions[p]; !ok || want != off {
			return abort(fmt.Errorf("internal error: the client would commit offset %d for partition %d, the engine processed up to %d (owned: %v)", off, p, want, ok))
		}
	}
	if k.cfg.ProgressTopic != "" {
		for _, p := range touched {
			pr := offsets.Progress{Group: k.cfg.Group, Topic: k.cfg.Topic, TopicID: k.cfg.TopicID, Partition: p, Next: positions[p], Start: -1}
			if k.cfg.Start != nil {
				pr.Start = k.cfg.Start(p)
			}
			sess.Produce(context.Background(), pr.Record(k.cfg.ProgressTopic), k.promise)
		}
	}
	if err := sess.Client().Flush(ctx); err != nil {
		return abort(fmt.Errorf("flushing epoch: %w", err))
	}
	k.mu.Lock()
	perr, unw := k.firstErr, k.unwritable
	k.firstErr, k.unwritable = nil, nil
	k.mu.Unlock()
	if unw != nil {
		return abort(unw)
	}
	if perr != nil {
		return abort(perr)
	}
	// End waits for a heartbeat after committing the offsets; a member
	// whose session expired (a process that was stopped) learns it only
	// through the lost callback, which the rebalance gate would hold
	// back. The transaction is complete in content now, and the session
	// aborts it if a rebalance happens before the end: KIP-447 keeps a
	// new owner waiting on it meanwhile.
	k.src.AllowRebalance()
	committed, err := sess.End(ctx, kgo.TryCommit)
	if err != nil {
		return false, fmt.Errorf("committing transaction: %w", err)
	}
	return committed, nil
}

// Abort implements Sink.
func (k *KafkaSink) Abort(ctx context.Context) error {
	if !k.inTxn {
		return nil
	}
	k.inTxn = false
	_, err := k.src.Session().End(ctx, kgo.TryAbort)
	k.forgetErrors()
	if err != nil {
		return fmt.Errorf("aborting transaction: %w", err)
	}
	return nil
}

// forgetErrors drops the produce errors of an aborted transaction. Called
// after End(TryAbort), which fails the records still buffered with
// kgo.ErrAborting and returns once their promises have run: cleared
// before it, those failures would be charged to the next epoch.
func (k *KafkaSink) forgetErrors() {
	k.mu.Lock()
	k.firstErr, k.unwritable = nil, nil
	k.mu.Unlock()
}

// Committed implements Sink.
func (k *KafkaSink) Committed(ctx context.Context, p int32) (int64, error) {
	return k.src.Committed(ctx, p)
}

// StdoutSink prints output values, one per line, and commits offsets after
// the lines are written: at-least-once, for debugging (a replay prints
// again, as Flink's print() does). Dead letters go to the error writer.
type StdoutSink struct {
	mu       sync.Mutex // Send is called from several partition workers
	src      *offsets.Source
	out      *bufio.Writer
	errw     io.Writer
	outTopic string
}

// NewStdoutSink wraps a non-transactional source.
func NewStdoutSink(src *offsets.Source, out, errw io.Writer, outputTopic string) *StdoutSink {
	return &StdoutSink{src: src, out: bufio.NewWriterSize(out, 1<<16), errw: errw, outTopic: outputTopic}
}

// Begin implements Sink.
func (s *StdoutSink) Begin() error { return nil }

// Send implements Sink.
func (s *StdoutSink) Send(r *kgo.Record, _ *Record) {
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
func (s *StdoutSink) Commit(ctx context.Context, positions map[int32]int64, touched []int32) (bool, error) {
	s.mu.Lock()
	err := s.out.Flush()
	s.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("writing stdout: %w", err)
	}
	offs := map[int32]int64{}
	for _, p := range touched {
		offs[p] = positions[p]
	}
	if err := s.src.CommitSync(ctx, offs); err != nil {
		return false, fmt.Errorf("committing offsets: %w", err)
	}
	s.src.Seek(positions)
	return true, nil
}

// Abort implements Sink: lines already printed stay printed (at-least-once).
// The engine moves the positions back.
func (s *StdoutSink) Abort(context.Context) error {
	s.mu.Lock()
	_ = s.out.Flush()
	s.mu.Unlock()
	return nil
}

// Committed implements Sink.
func (s *StdoutSink) Committed(ctx context.Context, p int32) (int64, error) {
	return s.src.Committed(ctx, p)
}
