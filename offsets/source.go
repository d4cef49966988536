// Package offsets owns the input side: consumer-group membership, fetching,
// per-partition positions, the committed offsets recovery starts from, and
// the bounded replay reads that rebuild state after a restore.
package offsets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
)

// EventKind says what happened to a set of partitions.
type EventKind int

// Group events delivered to the processing loop.
const (
	Assigned EventKind = iota
	Revoked
	Lost
)

func (k EventKind) String() string {
	switch k {
	case Assigned:
		return "assigned"
	case Revoked:
		return "revoked"
	default:
		return "lost"
	}
}

// Event is a change of partition ownership.
type Event struct {
	Kind       EventKind
	Partitions []int32
}

// Config configures a Source.
type Config struct {
	Topic      string
	Group      string
	InstanceID string // static membership; empty = dynamic
	// TransactionalID makes the source a GroupTransactSession: offsets are
	// committed inside the sink's transactions (exactly-once). Empty = a
	// plain group consumer whose offsets the caller commits (at-least-once).
	TransactionalID    string
	TransactionTimeout time.Duration
	SessionTimeout     time.Duration
	RebalanceTimeout   time.Duration
	FetchMaxBytes      int32
	PartitionMaxBytes  int32
	MaxBufferedRecords int
	ConnOpts           []kgo.Opt // brokers, TLS, SASL
	ExtraOpts          []kgo.Opt // hooks (metrics)
	Logger             *zap.Logger
}

// Source is the group member. Poll and the commit calls must come from one
// goroutine (the processing loop); Events may be read from it too.
type Source struct {
	cfg    Config
	cl     *kgo.Client
	sess   *kgo.GroupTransactSession
	events chan Event
	log    *zap.Logger

	mu     sync.Mutex
	closed bool
}

// New joins nothing yet: the client joins the group on the first Poll.
func New(cfg Config) (*Source, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Source{cfg: cfg, events: make(chan Event, 64), log: cfg.Logger}
	opts := append([]kgo.Opt{}, cfg.ConnOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.WithLogger(kzap.New(cfg.Logger.Named("kafka"), kzap.Level(kgo.LogLevelWarn))),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Assigned, m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Revoked, m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Lost, m) }),
	)
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.RebalanceTimeout > 0 {
		opts = append(opts, kgo.RebalanceTimeout(cfg.RebalanceTimeout))
	}
	if cfg.FetchMaxBytes > 0 {
		opts = append(opts, kgo.FetchMaxBytes(cfg.FetchMaxBytes))
	}
	if cfg.PartitionMaxBytes > 0 {
		opts = append(opts, kgo.FetchMaxPartitionBytes(cfg.PartitionMaxBytes))
	}
	if cfg.MaxBufferedRecords > 0 {
		opts = append(opts, kgo.MaxBufferedRecords(cfg.MaxBufferedRecords))
	}
	opts = append(opts, cfg.ExtraOpts...)
	var err error
	if cfg.TransactionalID != "" {
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID))
		if cfg.TransactionTimeout > 0 {
			opts = append(opts, kgo.TransactionTimeout(cfg.TransactionTimeout))
		}
		s.sess, err = kgo.NewGroupTransactSession(opts...)
		if err == nil {
			s.cl = s.sess.Client()
		}
	} else {
		s.cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	return s, nil
}

func (s *Source) emit(kind EventKind, m map[string][]int32) {
	ps := m[s.cfg.Topic]
	if len(ps) == 0 {
		return
	}
	s.log.Info("partitions "+kind.String(), zap.String("topic", s.cfg.Topic), zap.Int32s("partitions", ps))
	// The loop drains events before processing every poll, so this send
	// only blocks if the loop is stuck; a blocked callback then delays the
	// rebalance, which is the safe direction.
	s.events <- Event{Kind: kind, Partitions: append([]int32(nil), ps...)}
}

// Events delivers ownership changes.
func (s *Source) Events() <-chan Event { return s.events }

// Client is the underlying franz-go client (also the transactional producer
// when TransactionalID is set).
func (s *Source) Client() *kgo.Client { return s.cl }

// Session is the transact session, or nil for a non-transactional source.
func (s *Source) Session() *kgo.GroupTransactSession { return s.sess }

// Topic is the input topic.
func (s *Source) Topic() string { return s.cfg.Topic }

// Poll returns up to max records (blocking until some arrive or ctx ends).
func (s *Source) Poll(ctx context.Context, max int) kgo.Fetches {
	return s.cl.PollRecords(ctx, max)
}

// Committed reads the group's committed offset for partition p with
// require-stable semantics (KIP-447): while a transaction holding offsets
// for p is open, the broker answers UNSTABLE_OFFSET_COMMIT and this retries
// until the transaction ends. It returns -1 when the group has no offset.
func (s *Source) Committed(ctx context.Context, p int32) (int64, error) {
	backoff := 50 * time.Millisecond
	for {
		off, err := s.fetchCommitted(ctx, p)
		if err == nil {
			return off, nil
		}
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err) {
			return 0, fmt.Errorf("reading committed offset of %s/%d for group %s: %w", s.cfg.Topic, p, s.cfg.Group, err)
		}
		s.log.Debug("committed offset not yet stable, retrying", zap.Int32("partition", p), zap.Error(err))
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

func (s *Source) fetchCommitted(ctx context.Context, p int32) (int64, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = s.cfg.Group
	req.RequireStable = true
	t := kmsg.NewOffsetFetchRequestTopic()
	t.Topic = s.cfg.Topic
	t.Partitions = []int32{p}
	req.Topics = []kmsg.OffsetFetchRequestTopic{t}
	// Newer versions batch groups; fill that shape too.
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = s.cfg.Group
	gt := kmsg.NewOffsetFetchRequestGroupTopic()
	gt.Topic = s.cfg.Topic
	gt.Partitions = []int32{p}
	g.Topics = []kmsg.OffsetFetchRequestGroupTopic{gt}
	req.Groups = []kmsg.OffsetFetchRequestGroup{g}

	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, err
	}
	// Versions before 8 answer in Topics, later ones in Groups.
	type answer struct {
		partition int32
		offset    int64
		code      int16
	}
	var answers []answer
	for _, rg := range resp.Groups {
		if err := kerr.ErrorForCode(rg.ErrorCode); err != nil {
			return 0, err
		}
		for _, rt := range rg.Topics {
			for _, rp := range rt.Partitions {
				answers = append(answers, answer{rp.Partition, rp.Offset, rp.ErrorCode})
			}
		}
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			answers = append(answers, answer{rp.Partition, rp.Offset, rp.ErrorCode})
		}
	}
	for _, a := range answers {
		if a.partition == p {
			if err := kerr.ErrorForCode(a.code); err != nil {
				return 0, err
			}
			return a.offset, nil
		}
	}
	return -1, nil
}

// Bounds returns the partition's log start offset and last stable offset
// (the end of what a read_committed reader can see).
func (s *Source) Bounds(ctx context.Context, p int32) (start, stable int64, err error) {
	list := func(ts int64, iso int8) (int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		req.IsolationLevel = iso
		t := kmsg.NewListOffsetsRequestTopic()
		t.Topic = s.cfg.Topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = ts
		rp.CurrentLeaderEpoch = -1
		t.Partitions = []kmsg.ListOffsetsRequestTopicPartition{rp}
		req.Topics = []kmsg.ListOffsetsRequestTopic{t}
		shards := s.cl.RequestSharded(ctx, req)
		for _, sh := range shards {
			if sh.Err != nil {
				return 0, sh.Err
			}
			resp := sh.Resp.(*kmsg.ListOffsetsResponse)
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					if rp.Partition == p {
						if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
							return 0, err
						}
						return rp.Offset, nil
					}
				}
			}
		}
		return 0, fmt.Errorf("no ListOffsets answer for %s/%d", s.cfg.Topic, p)
	}
	if start, err = list(-2, 1); err != nil {
		return 0, 0, fmt.Errorf("listing start offset of %s/%d: %w", s.cfg.Topic, p, err)
	}
	if stable, err = list(-1, 1); err != nil {
		return 0, 0, fmt.Errorf("listing stable end offset of %s/%d: %w", s.cfg.Topic, p, err)
	}
	return start, stable, nil
}

// CommitSync commits offsets outside any transaction (the at-least-once
// stdout sink).
func (s *Source) CommitSync(ctx context.Context, offs map[int32]int64) error {
	if len(offs) == 0 {
		return nil
	}
	m := map[string]map[int32]kgo.EpochOffset{s.cfg.Topic: {}}
	for p, o := range offs {
		m[s.cfg.Topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	var cerr error
	done := make(chan struct{})
	s.cl.CommitOffsetsSync(ctx, m, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		defer close(done)
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && cerr == nil {
					cerr = fmt.Errorf("partition %d: %w", p.Partition, err)
				}
			}
		}
	})
	<-done
	return cerr
}

// Positions returns the next offset to fetch for each partition, as of the
// records polled so far (the offsets an epoch commit covers).
func (s *Source) Positions() map[int32]int64 {
	out := map[int32]int64{}
	for p, eo := range s.cl.UncommittedOffsets()[s.cfg.Topic] {
		out[p] = eo.Offset
	}
	return out
}

// Rewind moves the fetch positions of partitions back to offsets (after an
// aborted at-least-once epoch).
func (s *Source) Rewind(offs map[int32]int64) {
	if len(offs) == 0 {
		return
	}
	m := map[string]map[int32]kgo.EpochOffset{s.cfg.Topic: {}}
	for p, o := range offs {
		m[s.cfg.Topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	s.cl.SetOffsets(m)
}

// Close leaves the group (static members are removed by instance id only
// after their session times out, as Kafka defines) and closes the client.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	// Drain events so a callback blocked on a full channel cannot hang Close.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-s.events:
			case <-stop:
				return
			}
		}
	}()
	if s.sess != nil {
		s.sess.Close()
	} else {
		s.cl.Close()
	}
	close(stop)
}

// Leave removes this static member from the group after Close, so that a
// graceful stop hands its partitions over at once (a static member's Close
// does not leave, by Kafka's design for restarts). Dynamic members left on
// Close already.
func (s *Source) Leave(ctx context.Context) error {
	if s.cfg.InstanceID == "" {
		return nil
	}
	cl, err := kgo.NewClient(s.cfg.ConnOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resps, err := kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(s.cfg.Group).InstanceIDs(s.cfg.InstanceID).Reason("txstream graceful shutdown"))
	if err != nil {
		return fmt.Errorf("leaving group %s as %s: %w", s.cfg.Group, s.cfg.InstanceID, err)
	}
	for _, r := range resps {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownMemberID) {
			return fmt.Errorf("leaving group %s as %s: %w", s.cfg.Group, s.cfg.InstanceID, r.Err)
		}
	}
	return nil
}

// ErrReplayGap means the records a replay needs are no longer in the log.
var ErrReplayGap = errors.New("records needed for replay are gone from the log (retention)")

// Replay reads partition p from offset from up to (not including) to, read
// committed, with a client of its own, calling fn for every data record in
// order. It stops exactly at to: control records are kept so that a range
// ending in transaction markers or aborted batches still shows its end.
func Replay(ctx context.Context, connOpts []kgo.Opt, topic string, p int32, from, to int64, log *zap.Logger,
	fn func(*kgo.Record) error) error {
	if from >= to {
		return nil
	}
	opts := append([]kgo.Opt{}, connOpts...)
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.WithLogger(kzap.New(log.Named("replay-kafka"), kzap.Level(kgo.LogLevelWarn))),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating replay client: %w", err)
	}
	defer cl.Close()

	next := from
	lastLog := time.Now()
	start := time.Now()
	for next < to {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			if errors.Is(ferr, kerr.OffsetOutOfRange) {
				return fmt.Errorf("%s/%d offset %d: %w", topic, p, next, ErrReplayGap)
			}
			if !kerr.IsRetriable(ferr) {
				return fmt.Errorf("replaying %s/%d: %w", topic, p, ferr)
			}
			continue
		}
		var perr error
		fs.EachRecord(func(r *kgo.Record) {
			if perr != nil || r.Offset >= to || r.Offset < next {
				return
			}
			next = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			perr = fn(r)
		})
		if perr != nil {
			return perr
		}
		// A record at or past `to` proves everything below it was seen.
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= to {
				next = to
			}
		})
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			done := next - from
			total := to - from
			log.Info("replay progress", zap.Int32("partition", p), zap.Int64("offset", next), zap.Int64("target", to),
				zap.Float64("percent", 100*float64(done)/float64(total)), zap.Duration("elapsed", time.Since(start)))
		}
	}
	return nil
}
