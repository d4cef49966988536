package pipeline_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/offsets"
	"github.com/txstream/txstream/pipeline"
)

// newTestSink is a Kafka sink of group g on an in-process broker with
// topics in and out (one partition each), closed with the test.
func newTestSink(t *testing.T, level zapcore.Level, opts ...kgo.Opt) (*kfake.Cluster, *pipeline.KafkaSink) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	log := zaptest.NewLogger(t, zaptest.Level(level))
	src, err := offsets.New(offsets.Config{Topic: "in", Group: "g", InstanceID: "a", TransactionalID: "t-a",
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, TransactionTimeout: 10 * time.Second,
		ConnOpts: append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	sink, err := pipeline.NewKafkaSink(context.Background(), src, pipeline.KafkaSinkConfig{Group: "g", Topic: "in"})
	if err != nil {
		t.Fatal(err)
	}
	return c, sink
}

// An aborted epoch's records that were still buffered fail with
// kgo.ErrAborting when the abort ends the transaction; those failures
// belong to the aborted epoch and must not fail the next one's commit.
func TestKafkaSinkAbortLeavesNoErrorBehind(t *testing.T) {
	c, sink := newTestSink(t, zap.WarnLevel, kgo.MaxProduceRequestsInflightPerBroker(1))
	// Hold the first epoch's produce requests until its abort has begun,
	// so that its records are still buffered when it aborts.
	release := make(chan struct{})
	var held atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !held.Swap(true) {
			<-release
		}
		return nil, nil, false
	})
	if err := sink.Begin(); err != nil {
		t.Fatal(err)
	}
	src1 := &pipeline.Record{Topic: "in", Partition: 0}
	sink.Send(&kgo.Record{Topic: "out", Value: []byte("in flight")}, src1)
	for !held.Load() {
		time.Sleep(time.Millisecond)
	}
	// Behind the one request in flight: buffered, not sent.
	for i := 0; i < 100; i++ {
		sink.Send(&kgo.Record{Topic: "out", Value: []byte("buffered")}, src1)
	}
	go func() { time.Sleep(200 * time.Millisecond); close(release) }()
	if err := sink.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sink.Begin(); err != nil {
		t.Fatal(err)
	}
	sink.Send(&kgo.Record{Topic: "out", Value: []byte("next")}, src1)
	committed, err := sink.Commit(context.Background(), map[int32]int64{}, nil)
	if err != nil || !committed {
		t.Fatalf("the epoch after an abort: committed %v, %v", committed, err)
	}
}

// An epoch the sink cannot commit (here every produce is refused as too
// large) and then cannot abort either (the broker refuses EndTxn) is no
// benign redo: Commit reports an abort failure that keeps both causes.
func TestKafkaSinkFailedAbortIsNotABenignRedo(t *testing.T) {
	c, sink := newTestSink(t, zap.ErrorLevel)
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.ProduceRequest)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.MessageTooLarge.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	var endTxns atomic.Int32
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		endTxns.Add(1)
		resp := req.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp, nil, true
	})
	if err := sink.Begin(); err != nil {
		t.Fatal(err)
	}
	sink.Send(&kgo.Record{Topic: "out", Value: []byte("refused")}, &pipeline.Record{Topic: "in", Partition: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	committed, err := sink.Commit(ctx, map[int32]int64{}, nil)
	if committed || err == nil {
		t.Fatalf("Commit: committed %v, %v; want a failure", committed, err)
	}
	if endTxns.Load() == 0 {
		t.Fatalf("Commit did not try to abort: %v", err)
	}
	if !pipeline.IsAbortFailed(err) || !errors.Is(err, kerr.MessageTooLarge) || !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		t.Fatalf("Commit: %v; want an abort failure naming the refused produce and the refused abort", err)
	}
}
