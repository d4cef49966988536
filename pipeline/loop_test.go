package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/offsets"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/synth"
)

// loopRig is an in-process broker (kfake), input that flows while the
// engine runs, and the engine itself with a real Pebble store, a Kafka sink
// and a checkpoint directory.
type loopRig struct {
	t        *testing.T
	cluster  *kfake.Cluster
	seeds    []kgo.Opt
	lines    [][]byte
	keys     [][]byte
	exp      *synth.Result
	produced atomic.Int64
	// wrapCkpt, if set, wraps each engine's checkpoint storage (failure
	// injection).
	wrapCkpt func(checkpoint.Storage) checkpoint.Storage
	// wrapSink, if set, wraps each engine's sink (failure injection).
	wrapSink func(pipeline.Sink) pipeline.Sink
	// clientOpts are added to the engines' client options.
	clientOpts []kgo.Opt
	// exitIdle, if set, replaces the engines' 4 s ExitWhenIdle.
	exitIdle time.Duration
	// partitionBytes, if set, is the engine's per-partition fetch size.
	partitionBytes int32
	// commitInterval, if set, replaces the engines' 100 ms.
	commitInterval time.Duration
	// stats, if set, receives the engines' counters.
	stats *pipeline.Stats
	// replaced are transactions whose output the sink refuses: verify
	// wants a dead letter in place of each.
	replaced map[string]bool
}

const loopTopic = "in"

func newLoopRig(t *testing.T, rows int) *loopRig {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, loopTopic, "out", "dlq", "progress"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = rows, 60, 7
	var buf bytes.Buffer
	if _, err := synth.Generate(cfg, &buf); err != nil {
		t.Fatal(err)
	}
	exp, err := synth.Expected(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	r := &loopRig{t: t, cluster: c, seeds: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, exp: exp}
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	sc.Scan() // header: the default column order, so records carry none
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		key := []byte("?")
		if f := bytes.Split(line, []byte(",")); len(f) > 1 && len(f[1]) > 0 {
			key = f[1]
		}
		r.lines, r.keys = append(r.lines, line), append(r.keys, key)
	}
	return r
}

// produce sends the input at about rate records/s, in order per key.
func (r *loopRig) produce(ctx context.Context, rate int) {
	cl, err := kgo.NewClient(append(r.seeds, kgo.DefaultProduceTopic(loopTopic))...)
	if err != nil {
		r.t.Error(err)
		return
	}
	defer cl.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(1, rate/100)
	for i := 0; i < len(r.lines); {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var rs []*kgo.Record
		for ; i < len(r.lines) && len(rs) < per; i++ {
			rs = append(rs, &kgo.Record{Key: r.keys[i], Value: r.lines[i]})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			r.t.Errorf("producing: %v", err)
			return
		}
		r.produced.Add(int64(len(rs)))
	}
}

// engine builds a member of group "g" with instance id id.
func (r *loopRig) engine(id, dir string, anytime bool, log *zap.Logger, afterPoll func()) (*pipeline.Engine, error) {
	src, err := offsets.New(offsets.Config{Topic: loopTopic, Group: "g", InstanceID: id, TransactionalID: "t-" + id, ProgressTopic: "progress",
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, TransactionTimeout: 10 * time.Second,
		ConnOpts: append(append([]kgo.Opt{}, r.seeds...), r.clientOpts...), Logger: log, RebalanceAnytime: anytime, PartitionMaxBytes: r.partitionBytes})
	if err != nil {
		return nil, err
	}
	sink, err := pipeline.NewKafkaSink(context.Background(), src, pipeline.KafkaSinkConfig{Group: "g", Topic: loopTopic, ProgressTopic: "progress"})
	if err != nil {
		src.Close()
		return nil, err
	}
	ck, err := checkpoint.Open(filepath.Join(dir, "ck"), checkpoint.Options{Mode: checkpoint.ModeIncremental, Retain: 3, Logger: log})
	if err != nil {
		src.Close()
		return nil, err
	}
	cfg := pipeline.Config{Topic: loopTopic, OutputTopic: "out", DLQTopic: "dlq", Group: "g", ProgressTopic: "progress",
		CommitInterval: 100 * time.Millisecond, CheckpointInterval: 700 * time.Millisecond, MaxPollRecords: 200,
		DataDir: filepath.Join(dir, "data-"+id), ExitWhenIdle: 4 * time.Second, ReplayConnOpts: r.seeds,
		Logger: log}
	if r.exitIdle > 0 {
		cfg.ExitWhenIdle = r.exitIdle
	}
	if r.commitInterval > 0 {
		cfg.CommitInterval = r.commitInterval
	}
	cfg.Stats = r.stats
	pipeline.SetAfterPoll(&cfg, afterPoll)
	newOp := func() pipeline.Operator { return aggregate.New(aggregate.Config{}) }
	cfg.Job = pipeline.StateSettings(newOp())
	cfg.Job["topic"] = loopTopic
	var storage checkpoint.Storage = ck
	if r.wrapCkpt != nil {
		storage = r.wrapCkpt(ck)
	}
	var sk pipeline.Sink = &checkedSink{Sink: sink, t: r.t, seeds: r.seeds}
	if r.wrapSink != nil {
		sk = r.wrapSink(sk)
	}
	return pipeline.NewEngine(cfg, src, sk, newOp, storage), nil
}

// verify reads the committed output and checks every record against a
// failure-free pass: each valid transaction once, with its running
// aggregate; each bad row once in the dead-letter topic.
func (r *loopRig) verify() {
	t := r.t
	t.Helper()
	cl, err := kgo.NewClient(append(r.seeds, kgo.ConsumeTopics("out", "dlq"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ids := map[string]int{}
	dlq := map[string]int{}
	wrong, unwritable := 0, 0
	wantValid := r.exp.Valid - len(r.replaced)
	// Read until every expected record has arrived (a loaded machine may
	// take seconds to deliver the first fetch) or 60 s have passed, then
	// until two polls in a row bring nothing (duplicates would come late).
	wantDLQ := r.exp.Bad + r.exp.Conflicts + len(r.replaced)
	deadline := time.Now().Add(60 * time.Second)
	for quiet := 0; quiet < 2; {
		if (len(ids) < wantValid || len(dlq) < wantDLQ) && time.Now().Before(deadline) {
			quiet = 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(rec *kgo.Record) {
			n++
			if rec.Topic == "dlq" {
				var src string
				for _, h := range rec.Headers {
					if h.Key == pipeline.HeaderSrcPartition || h.Key == pipeline.HeaderSrcOffset {
						src += string(h.Value) + "/"
					}
					if h.Key == pipeline.HeaderDLQReason && string(h.Value) == pipeline.ReasonUnwritable {
						unwritable++
					}
				}
				dlq[src]++
				return
			}
			var v struct {
				ID    string `json:"transaction_id"`
				Acc   string `json:"account_id"`
				Count int64  `json:"account_count"`
				Total string `json:"account_total"`
			}
			if err := json.Unmarshal(rec.Value, &v); err != nil {
				t.Errorf("output is not JSON: %v", err)
				return
			}
			ids[v.ID]++
			if r.replaced[v.ID] {
				t.Errorf("transaction %s: output, but the sink refused it", v.ID)
			}
			want, ok := r.exp.Running[v.ID]
			var tot apd.Decimal
			_, _, perr := tot.SetString(v.Total)
			if !ok || v.Acc != want.Account || v.Count != want.Count || perr != nil || tot.Cmp(&want.Total) != 0 {
				wrong++
				if wrong <= 5 {
					t.Errorf("transaction %s: account %s count %d total %s, failure-free pass: %s %d %s", v.ID, v.Acc, v.Count, v.Total, want.Account, want.Count, want.Total.Text('f'))
				}
			}
		})
		if n == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	twice := 0
	for _, n := range ids {
		if n != 1 {
			twice++
		}
	}
	if len(ids) != wantValid || twice > 0 || wrong > 0 {
		t.Errorf("output: %d of %d transactions, %d more than once, %d with a wrong running aggregate", len(ids), wantValid, twice, wrong)
		// A transaction left open holds read_committed readers at the
		// last stable offset: show it beside the end of each partition.
		adm := kadm.NewClient(cl)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		lso, err1 := adm.ListCommittedOffsets(ctx, "out", "dlq")
		end, err2 := adm.ListEndOffsets(ctx, "out", "dlq")
		if err1 == nil && err2 == nil {
			lso.Each(func(o kadm.ListedOffset) {
				e, _ := end.Lookup(o.Topic, o.Partition)
				t.Logf("%s/%d: last stable offset %d, end offset %d", o.Topic, o.Partition, o.Offset, e.Offset)
			})
		} else {
			t.Logf("listing offsets: %v %v", err1, err2)
		}
	}
	dup := 0
	for _, n := range dlq {
		if n != 1 {
			dup++
		}
	}
	if len(dlq) != wantDLQ || dup > 0 {
		t.Errorf("dead letters: %d distinct sources (%d repeated), want %d once each", len(dlq), dup, wantDLQ)
	}
	if unwritable != len(r.replaced) {
		t.Errorf("%d dead letters for unwritable output, want %d", unwritable, len(r.replaced))
	}
}

// refusingSink refuses the output of some transactions the way a broker
// refuses a record too large for the topic: the epoch's commit fails with
// the first refused record (as the Kafka sink reports it), the epoch is
// aborted, and the engine redoes it with that record replaced.
type refusingSink struct {
	pipeline.Sink
	ids     map[string]bool
	mu      sync.Mutex // Send runs on the partitions' goroutines
	refused []*pipeline.UnwritableError
	reports atomic.Int32
}

func (s *refusingSink) Send(r *kgo.Record, src *pipeline.Record) {
	if r.Topic == "out" {
		var v struct {
			ID string `json:"transaction_id"`
		}
		if json.Unmarshal(r.Value, &v) == nil && s.ids[v.ID] {
			s.mu.Lock()
			s.refused = append(s.refused, &pipeline.UnwritableError{Topic: r.Topic, Partition: src.Partition, Offset: src.Offset,
				Err: kerr.MessageTooLarge})
			s.mu.Unlock()
			return
		}
	}
	s.Sink.Send(r, src)
}

func (s *refusingSink) Commit(ctx context.Context, pos map[int32]int64, touched []int32) (bool, error) {
	s.mu.Lock()
	refused := s.refused
	s.refused = nil
	s.mu.Unlock()
	if len(refused) == 0 {
		return s.Sink.Commit(ctx, pos, touched)
	}
	s.reports.Add(1)
	return false, errors.Join(refused[0], s.Sink.Abort(ctx))
}

func (s *refusingSink) Abort(ctx context.Context) error {
	s.mu.Lock()
	s.refused = nil
	s.mu.Unlock()
	return s.Sink.Abort(ctx)
}

// Several records of one epoch, in different partitions, whose output the
// sink refuses, one reported per commit: each redo replaces one more, and
// the committed epoch must hold a dead letter for every one of them (the
// ones replaced in earlier redos included), with every other record's
// output and running aggregate as in a failure-free pass.
func TestLoopUnwritableOutputs(t *testing.T) {
	r := newLoopRig(t, 3000)
	// Six consecutive valid transactions from the middle of the input:
	// produced together, so processed in one epoch, over several accounts
	// and so several partitions.
	r.replaced = map[string]bool{}
	for _, line := range r.lines[1500:] {
		f := strings.Split(string(line), ",")
		if _, ok := r.exp.Running[f[0]]; ok && len(r.replaced) < 6 {
			r.replaced[f[0]] = true
		}
	}
	var rs *refusingSink
	r.wrapSink = func(s pipeline.Sink) pipeline.Sink {
		rs = &refusingSink{Sink: s, ids: r.replaced}
		return rs
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	r.produce(context.Background(), 1_000_000)
	e, err := r.engine("m", t.TempDir(), false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)
	if n := rs.reports.Load(); n < 2 {
		t.Fatalf("the sink reported %d refused records; the test needs at least two in one epoch", n)
	}
	t.Logf("%d epochs redone with one more record replaced", rs.reports.Load())
	r.verify()
}

// run runs the engine until it finishes on idle input.
func runEngine(t *testing.T, e *pipeline.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.Run(ctx, nil); err != nil && !errors.Is(err, job.ErrFinished) {
		t.Fatalf("engine: %v", err)
	}
}

// A group event between a poll and its processing, with an open epoch and
// records in the poll, for each kind of event. The source lets callbacks
// run at any time (the daemon holds them back between epochs; this proves
// the loop does not depend on that): the hook waits until the event has
// arrived, then processing goes on.
func TestLoopGroupEventBetweenPollAndProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process broker for ~15 s per event kind")
	}
	for _, kind := range []string{"assigned", "revoked", "lost"} {
		t.Run(kind, func(t *testing.T) {
			r := newLoopRig(t, 6000)
			log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var other *kgo.Client
			joinOther := func() {
				cl, err := kgo.NewClient(append(r.seeds, kgo.ConsumerGroup("g"), kgo.ConsumeTopics(loopTopic),
					kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.DisableAutoCommit())...)
				if err != nil {
					t.Error(err)
					return
				}
				other = cl
			}
			if kind == "assigned" {
				joinOther() // holds half the partitions until the hook lets it go
			}
			var polls, fired atomic.Int32
			var e *pipeline.Engine
			hook := func() {
				// Fire once the epoch is open with records in it.
				if fired.Load() > 0 || polls.Add(1) < 20 || !e.EpochOpen() {
					return
				}
				fired.Add(1)
				switch kind {
				case "assigned":
					other.Close() // a dynamic member leaves on close
				case "revoked":
					joinOther()
					go func() { time.Sleep(2 * time.Second); other.Close() }()
				case "lost":
					acl, err := kgo.NewClient(r.seeds...)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = kadm.NewClient(acl).LeaveGroup(ctx, kadm.LeaveGroup("g").InstanceIDs("a"))
					acl.Close()
				}
				deadline := time.Now().Add(15 * time.Second)
				for e.PendingEvents() == 0 {
					if time.Now().After(deadline) {
						t.Errorf("no %s event within 15 s", kind)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			var err error
			e, err = r.engine("a", t.TempDir(), true, log, hook)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); r.produce(ctx, 1500) }()
			runEngine(t, e)
			wg.Wait()
			if fired.Load() == 0 {
				t.Fatal("the hook never fired: the test proved nothing")
			}
			if got := r.produced.Load(); got != int64(len(r.lines)) {
				t.Fatalf("produced %d of %d", got, len(r.lines))
			}
			r.verify()
		})
	}
}

// A second member joins and leaves every 1.5 s while input flows; the
// daemon's configuration (callbacks held back between epochs).
func TestLoopChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process broker for ~20 s")
	}
	r := newLoopRig(t, 15000)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir() // one checkpoint directory, a data directory per member
	e, err := r.engine("a", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.produce(ctx, 1600) }()
	churned := 0
	go func() {
		defer wg.Done()
		for r.produced.Load() < int64(len(r.lines)) && ctx.Err() == nil {
			b, err := r.engine(fmt.Sprint("b", churned), dir, false, log, nil)
			if err != nil {
				t.Error(err)
				return
			}
			bctx, bcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			_ = b.Run(bctx, nil) // drains and leaves on cancel
			bcancel()
			churned++
			time.Sleep(300 * time.Millisecond)
		}
	}()
	runEngine(t, e)
	wg.Wait()
	t.Logf("second member joined and left %d times", churned)
	if churned < 3 {
		t.Fatalf("only %d churn cycles", churned)
	}
	r.verify()
}

// checkedSink checks, after every committed epoch, that the group's
// committed offset of each partition the epoch advanced is the engine's
// position: one past the last record processed, never a position the
// client polled ahead to. (kfake completes transactions synchronously, so
// the offsets are visible as soon as the commit returns.)
type checkedSink struct {
	pipeline.Sink
	t     *testing.T
	seeds []kgo.Opt
}

func (c *checkedSink) Commit(ctx context.Context, pos map[int32]int64, touched []int32) (bool, error) {
	ok, err := c.Sink.Commit(ctx, pos, touched)
	if !ok || err != nil || len(touched) == 0 {
		return ok, err
	}
	cl, cerr := kgo.NewClient(c.seeds...)
	if cerr != nil {
		c.t.Error(cerr)
		return ok, err
	}
	defer cl.Close()
	// The group coordinator may apply the transaction's offsets a moment
	// after EndTxn returns; a commit point that stays behind is the bug.
	deadline := time.Now().Add(3 * time.Second)
	for {
		offs, ferr := kadm.NewClient(cl).FetchOffsets(ctx, "g")
		if ferr != nil {
			c.t.Errorf("fetching the group's offsets: %v", ferr)
			return ok, err
		}
		var bad []string
		for _, p := range touched {
			if got, found := offs.Lookup(loopTopic, p); !found || got.At != pos[p] {
				bad = append(bad, fmt.Sprintf("partition %d: the group committed %d (found %v), the engine processed up to %d", p, got.At, found, pos[p]))
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, b := range bad {
				c.t.Error(b)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ok, err
}

// failingList is a checkpoint storage whose List fails for one partition,
// once List has been called for every other partition (so that, with
// partitions recovering in parallel, some of them have finished and hold
// open stores when it fails).
type failingList struct {
	checkpoint.Storage
	fail   int32
	others chan int32
}

func (f *failingList) List(topic string, p int32) ([]checkpoint.Meta, error) {
	if p != f.fail {
		f.others <- p
		return f.Storage.List(topic, p)
	}
	timeout := time.After(10 * time.Second) // one core: the others wait for this one's slot
	for n := 0; n < 3; n++ {
		select {
		case <-f.others:
		case <-timeout:
			n = 3
		}
	}
	return nil, errors.New("injected: listing snapshots failed")
}

// When one of the partitions that recover together fails, the attempt
// fails with its error and the stores of the others, recovered or not, are
// closed: a later attempt in this process opens them.
func TestRecoveryFailureClosesOtherStores(t *testing.T) {
	r := newLoopRig(t, 2000)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	r.produce(context.Background(), 1_000_000)
	dir := t.TempDir()
	e, err := r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)

	r.wrapCkpt = func(s checkpoint.Storage) checkpoint.Storage {
		return &failingList{Storage: s, fail: 3, others: make(chan int32, 3)}
	}
	e, err = r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = e.Run(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("engine: %v, want the injected failure", err)
	}
	for p := 0; p < 3; p++ {
		st, err := pipeline.OpenStore(filepath.Join(dir, "data-m", "state", fmt.Sprintf("%s-%d", loopTopic, p)), pipeline.StoreOptions{})
		if err != nil {
			t.Fatalf("partition %d's store is still open after the failed recovery: %v", p, err)
		}
		_ = st.Close()
	}
}

// With no committed offsets in the group (expired or deleted), the
// client starts at the log start while the engine recovers at C from
// the progress records. The engine must move the client to C once it has
// polled the partition, not read all the retained log below C (which
// takes long on a big topic, and meets retention on the way). Counted at
// the broker: the fetches of each partition below C.
func TestLoopNoGroupOffsetsSkipsToC(t *testing.T) {
	r := newLoopRig(t, 4000)
	r.partitionBytes = 1 // one batch per fetch
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	r.produce(context.Background(), 20000) // batches of ~50 records per partition
	dir := t.TempDir()
	e, err := r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e) // finishes with a snapshot at C: the next run replays nothing

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm, ends, topicID := r.inputEnds(ctx)
	deleteGroupOffsets(ctx, t, adm)

	var mu sync.Mutex
	below := map[int32]map[int64]bool{}
	r.cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r.cluster.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range req.(*kmsg.FetchRequest).Topics {
			if rt.Topic != loopTopic && rt.TopicID != topicID {
				continue
			}
			for _, rp := range rt.Partitions {
				if end, ok := ends.Lookup(loopTopic, rp.Partition); ok && rp.FetchOffset < end.Offset {
					if below[rp.Partition] == nil {
						below[rp.Partition] = map[int64]bool{}
					}
					below[rp.Partition][rp.FetchOffset] = true
				}
			}
		}
		return nil, nil, false
	})
	e, err = r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)
	mu.Lock()
	counts := map[int32]int{}
	for p, offs := range below {
		counts[p] = len(offs)
	}
	mu.Unlock() // the hook stays installed: verify's fetches pass through it
	if len(counts) == 0 {
		t.Fatal("the second run never fetched below C: the group's offsets were not gone")
	}
	for p := int32(0); p < 4; p++ {
		end, _ := ends.Lookup(loopTopic, p)
		t.Logf("partition %d: C %d, %d distinct fetch offsets below C", p, end.Offset, counts[p])
		// The fetch at the log start, and the one the client may send
		// ahead of its first poll, before the move lands.
		if counts[p] > 3 {
			t.Errorf("partition %d: the client fetched from %d offsets below C %d: it read the log up to C instead of moving there", p, counts[p], end.Offset)
		}
	}
	r.verify()
}

// Another client that joins the group with this member's instance id
// takes its place (Kafka fences the older one). A busy member learns it
// from its next transaction's offset commit; an idle one, which commits
// nothing, only from its group session (heartbeat). Either way the fenced
// member must fail with a permanent error that says so, not rejoin and
// take the slot back, over and over.
func TestLoopFencedInstanceIDIsPermanent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process broker for ~15 s")
	}
	r := newLoopRig(t, 2000)
	r.exitIdle = 2 * time.Minute // idle, but running
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r.produce(ctx, 1_000_000)
	e, err := r.engine("m", t.TempDir(), false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, nil) }()
	// Wait until the member has committed all the input: from then on
	// it is idle, with no epoch and no transaction.
	cl, err := kgo.NewClient(r.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		offs, err := adm.FetchOffsets(ctx, "g")
		sum := int64(0)
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		}
		if sum == int64(len(r.lines)) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the member did not commit the input: %d of %d (%v)", sum, len(r.lines), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A plain group member with the same instance id (and no
	// transactional id: only the group membership is taken over).
	other, err := kgo.NewClient(append(r.seeds, kgo.ConsumerGroup("g"), kgo.ConsumeTopics(loopTopic),
		kgo.InstanceID("m"), kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for ctx.Err() == nil {
			other.PollFetches(ctx)
		}
	}()
	select {
	case err := <-done:
		t.Logf("engine: %v", err)
		if !errors.Is(err, kerr.FencedInstanceID) || !job.IsPermanent(err) || !strings.Contains(err.Error(), "instance id") {
			t.Fatalf("engine: %v; want a permanent error for the instance id taken over", err)
		}
	case <-ctx.Done():
		t.Fatal("the fenced member still runs after 90 s")
	}
}

// inputEnds returns an admin client (closed with the test), the input's
// end offsets and its topic id (fetch requests name topics by id).
func (r *loopRig) inputEnds(ctx context.Context) (*kadm.Client, kadm.ListedOffsets, [16]byte) {
	t := r.t
	t.Helper()
	cl, err := kgo.NewClient(r.seeds...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, loopTopic)
	if err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics(ctx, loopTopic)
	if err != nil {
		t.Fatal(err)
	}
	return adm, ends, topics[loopTopic].ID
}

// deleteGroupOffsets deletes group g's offsets of the input. The member
// left without leaving the group (a static member): Kafka refuses to
// delete a subscribed group's offsets until it expires.
func deleteGroupOffsets(ctx context.Context, t *testing.T, adm *kadm.Client) {
	t.Helper()
	for {
		resps, err := adm.DeleteOffsets(ctx, "g", kadm.TopicsSet{loopTopic: {0: {}, 1: {}, 2: {}, 3: {}}})
		if err == nil {
			err = resps.Error()
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("deleting the group's offsets: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// With no group offset, the client starts at the log start; if the log
// start passes it before it is moved to C (retention deleting a segment
// at that moment), its fetch is out of range although every record from
// C on is there. That is no state loss: the attempt restarts and the
// next one resumes at C. The broker here answers the partition's fetches
// below C with OFFSET_OUT_OF_RANGE during the first attempt.
func TestLoopOutOfRangeBelowCRestarts(t *testing.T) {
	r := newLoopRig(t, 2000)
	r.clientOpts = []kgo.Opt{kgo.DisableFetchSessions()} // each fetch names its partitions
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r.produce(ctx, 1_000_000)
	dir := t.TempDir()
	e, err := r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)

	adm, ends, topicID := r.inputEnds(ctx)
	c0, _ := ends.Lookup(loopTopic, 0)
	if c0.Offset == 0 {
		t.Fatal("partition 0 has no records")
	}
	deleteGroupOffsets(ctx, t, adm)

	var inject atomic.Bool
	var injected atomic.Int32
	inject.Store(true)
	r.cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r.cluster.KeepControl()
		f := req.(*kmsg.FetchRequest)
		hit := false
		for _, rt := range f.Topics {
			for _, rp := range rt.Partitions {
				if (rt.Topic == loopTopic || rt.TopicID == topicID) && rp.Partition == 0 && rp.FetchOffset < c0.Offset {
					hit = true
				}
			}
		}
		if !inject.Load() || !hit {
			return nil, nil, false
		}
		injected.Add(1)
		resp := f.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range f.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = rp.FetchOffset, rp.FetchOffset, 0
				if (rt.Topic == loopTopic || rt.TopicID == topicID) && rp.Partition == 0 {
					sp.ErrorCode = kerr.OffsetOutOfRange.Code
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	e, err = r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.Run(ctx, nil)
	inject.Store(false)
	t.Logf("first attempt (%d fetches answered out of range): %v", injected.Load(), err)
	if injected.Load() == 0 {
		t.Fatal("no fetch of partition 0 below C to answer: the group's offsets were not gone")
	}
	if err == nil || errors.Is(err, pipeline.ErrStateLoss) || !errors.Is(err, kerr.OffsetOutOfRange) || job.IsPermanent(err) {
		t.Fatalf("first attempt: %v; want a restart for the client below C, not state loss", err)
	}
	// The restart: a fresh engine resumes at C and outputs nothing again.
	e, err = r.engine("m", dir, false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)
	r.verify()
}

// An epoch ends when the input goes quiet, not only at the commit
// interval: with a one-minute interval, a member whose input is all there
// commits it within seconds (and so can finish, idle, long before the
// minute). While input keeps arriving, epochs still last the interval.
func TestLoopQuietInputEndsTheEpoch(t *testing.T) {
	t.Run("quiet", func(t *testing.T) {
		r := newLoopRig(t, 3000)
		r.commitInterval, r.exitIdle, r.stats = time.Minute, 2*time.Second, pipeline.NewStats()
		log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
		r.produce(context.Background(), 100000)
		e, err := r.engine("m", t.TempDir(), false, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		runEngine(t, e)
		took := time.Since(start)
		t.Logf("finished in %v after %d epochs", took.Round(time.Millisecond), r.stats.Epochs.Load())
		// The first epoch would otherwise stay open for the whole minute.
		if took > 30*time.Second {
			t.Errorf("the member took %v to commit its input and go idle: its epochs waited for the commit interval (1m)", took)
		}
		r.verify()
	})
	t.Run("flowing", func(t *testing.T) {
		r := newLoopRig(t, 3000)
		r.commitInterval, r.exitIdle, r.stats = time.Second, 2*time.Second, pipeline.NewStats()
		log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
		e, err := r.engine("m", t.TempDir(), false, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		go r.produce(context.Background(), 1000) // 10 records every 10 ms for 3 s
		runEngine(t, e)
		// About 3 s of input in epochs of 1 s; a poll every 10 ms, so an
		// epoch per poll would be hundreds. The margin covers a start
		// before the first records, and a scheduler that stalls the
		// producer for longer than a poll's wait (100 ms) now and then.
		n := r.stats.Epochs.Load()
		t.Logf("%d epochs over %v", n, time.Since(start).Round(time.Millisecond))
		if n > 12 {
			t.Errorf("%d epochs for 3 s of steady input at a 1 s commit interval: epochs end on every short pause", n)
		}
		r.verify()
	})
}
