package offsets

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/txstream/txstream/kconn"
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
	// ProgressTopic, when set, gets its records partitioned by the input
	// partition they describe (ProgressPartitioner).
	ProgressTopic string
	// RebalanceAnytime lets group callbacks run at any moment, also
	// between a poll and its processing (franz-go's default). The daemon
	// never sets it; tests do, to prove the loop is safe without the
	// gate.
	RebalanceAnytime bool
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

	// blocked is set when the group wants to rebalance while the loop
	// holds it back (BlockRebalanceOnPoll): the loop should end its epoch
	// soon and call AllowRebalance.
	blocked atomic.Bool
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
		// Never reset silently: a position whose records are gone
		// (retention, DeleteRecords) is an error the engine words. With
		// no committed offset the client starts at the log start, and
		// the engine skips what its recovered state already reflects.
		kgo.ConsumeResetOffset(kgo.NoResetOffset().AtStart()),
		kgo.DisableAutoCommit(),

		kgo.WithLogger(kconn.ClientLogger(cfg.Logger.Named("kafka"), clientLogLevel())),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Assigned, m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Revoked, m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.emit(Lost, m) }),
	)
	if !cfg.RebalanceAnytime {
		// Group callbacks run only when the loop allows them, between
		// epochs: a rebalance can never split an epoch or a poll.
		opts = append(opts, kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { s.blocked.Store(true) }))
	}
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	if cfg.ProgressTopic != "" {
		opts = append(opts, kgo.RecordPartitioner(ProgressPartitioner(cfg.ProgressTopic)))
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

// clientLogLevel is the Kafka client's log level: warnings, unless
// TXSTREAM_KAFKA_LOG_LEVEL asks for info or debug (client internals, for
// diagnosing group and transaction problems).
func clientLogLevel() kgo.LogLevel {
	switch os.Getenv("TXSTREAM_KAFKA_LOG_LEVEL") {
	case "debug":
		return kgo.LogLevelDebug
	case "info":
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
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
// A non-empty poll holds group rebalances back until AllowRebalance.
func (s *Source) Poll(ctx context.Context, max int) kgo.Fetches {
	return s.cl.PollRecords(ctx, max)
}

// AllowRebalance lets a rebalance that waits for this member go ahead; its
// callbacks (and so Events) run from now until the next non-empty Poll.
// The loop calls it only when no epoch is open.
func (s *Source) AllowRebalance() {
	s.blocked.Store(false)
	s.cl.AllowRebalance()
}

// RebalanceWaiting reports that the group wants to rebalance and waits for
// this member to allow it.
func (s *Source) RebalanceWaiting() bool { return s.blocked.Load() }

// Seek moves the client's position of each given partition to the given
// offset where it differs, and makes it the client's idea of the committed
// offset too, so that a transaction commits exactly these positions. Only
// partitions the client has polled from can be moved (franz-go's
// SetOffsets); others start at the group's committed offset, or the log
// start when there is none, which the engine skips up to its own position.
func (s *Source) Seek(pos map[int32]int64) {
	if len(pos) == 0 {
		return
	}
	dirty := s.cl.UncommittedOffsets()[s.cfg.Topic]
	committed := s.cl.CommittedOffsets()[s.cfg.Topic]
	set := map[int32]kgo.EpochOffset{}
	for p, off := range pos {
		cur, ok := dirty[p]
		if !ok {
			cur, ok = committed[p]
		}
		if ok && cur.Offset == off {
			continue
		}
		set[p] = kgo.EpochOffset{Epoch: -1, Offset: off}
	}
	if len(set) > 0 {
		s.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{s.cfg.Topic: set})
	}
}

// Dirty returns the client's positions (one past the last polled record)
// of the partitions polled since their last commit.
func (s *Source) Dirty() map[int32]int64 {
	out := map[int32]int64{}
	for p, eo := range s.cl.UncommittedOffsets()[s.cfg.Topic] {
		out[p] = eo.Offset
	}
	return out
}

// Committed reads the group's committed offset for partition p with
// require-stable semantics (KIP-447): while a transaction holding offsets
// for p is open, the broker answers UNSTABLE_OFFSET_COMMIT and this retries
// until the transaction ends. It returns -1 when the group has no offset.
//
// A transaction that never ends (its producer died) holds the offset
// unstable until the broker aborts it after its transaction timeout; the
// wait is logged every 10 s and bounded by that timeout plus a minute.
func (s *Source) Committed(ctx context.Context, p int32) (int64, error) {
	backoff := 50 * time.Millisecond
	start := time.Now()
	lastLog := start
	limit := s.cfg.TransactionTimeout
	if limit <= 0 {
		limit = time.Minute
	}
	limit += time.Minute
	for {
		off, err := s.fetchCommitted(ctx, p)
		if err == nil {
			return off, nil
		}
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err) {
			return 0, fmt.Errorf("reading committed offset of %s/%d for group %s: %w", s.cfg.Topic, p, s.cfg.Group, err)
		}
		if waited := time.Since(start); waited > limit {
			return 0, fmt.Errorf("reading committed offset of %s/%d for group %s: still %v after %v (an open transaction holds it; the broker aborts it after its transaction timeout): %w",
				s.cfg.Topic, p, s.cfg.Group, err, waited.Round(time.Second), err)
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			s.log.Warn("waiting for the committed offset to become stable: a transaction of this partition's previous owner is still open",
				zap.Int32("partition", p), zap.Duration("waited", time.Since(start).Round(time.Second)), zap.Error(err))
		} else {
			s.log.Debug("committed offset not yet stable, retrying", zap.Int32("partition", p), zap.Error(err))
		}
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

// Identity names the input topic's incarnation and the cluster: the topic
// id (a new one after the topic is deleted and re-created) and the cluster
// id. Snapshots record both and are restored only into the same ones.
// Brokers too old for topic ids answer an empty id.
func (s *Source) Identity(ctx context.Context) (topicID, clusterID string, partitions int, err error) {
	req := kmsg.NewPtrMetadataRequest()
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(s.cfg.Topic)
	req.Topics = []kmsg.MetadataRequestTopic{t}
	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return "", "", 0, fmt.Errorf("describing topic %s: %w", s.cfg.Topic, err)
	}
	if resp.ClusterID != nil {
		clusterID = *resp.ClusterID
	}
	for _, rt := range resp.Topics {
		if rt.Topic == nil || *rt.Topic != s.cfg.Topic {
			continue
		}
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			return "", "", 0, fmt.Errorf("describing topic %s: %w", s.cfg.Topic, err)
		}
		if rt.TopicID != ([16]byte{}) {
			topicID = formatUUID(rt.TopicID)
		}
		return topicID, clusterID, len(rt.Partitions), nil
	}
	return "", "", 0, fmt.Errorf("describing topic %s: not in the metadata answer", s.cfg.Topic)
}

func formatUUID(b [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
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
	// A poll held back rebalances (BlockRebalanceOnPoll); leaving the
	// group is one, and would wait for them to be allowed forever.
	s.cl.AllowRebalance()
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

// ErrReplayBeyondEnd means the replay target is past the partition's
// readable end and does not come closer.
var ErrReplayBeyondEnd = errors.New("the committed offset is past the end of the log")

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
		kgo.ConsumeResetOffset(kgo.NoResetOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.WithLogger(kconn.ClientLogger(log.Named("replay-kafka"), kgo.LogLevelWarn)),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("creating replay client: %w", err)
	}
	defer cl.Close()

	next := from
	lastLog := time.Now()
	start := time.Now()
	lastMove, moved := time.Now(), from
	for next < to {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if ferr == nil && !errors.Is(err, context.DeadlineExceeded) {
				ferr = err
			}
		})
		// The replay target lies past what the log can show (the log was
		// truncated, or C came from another incarnation of the topic):
		// waiting cannot help.
		stable := int64(-1)
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if fp.Partition == p {
				stable = fp.LastStableOffset
			}
		})
		if next != moved {
			lastMove, moved = time.Now(), next
		} else if stable >= 0 && stable < to && time.Since(lastMove) > 15*time.Second {
			return fmt.Errorf("%s/%d: replay to the committed offset %d is stuck at %d: the partition's readable end is %d: %w", topic, p, to, next, stable, ErrReplayBeyondEnd)
		}
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
