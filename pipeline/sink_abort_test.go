package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/offsets"
	"github.com/txstream/txstream/pipeline"
)

// An aborted epoch's records that were still buffered fail with
// kgo.ErrAborting when the abort ends the transaction; those failures
// belong to the aborted epoch and must not fail the next one's commit.
func TestKafkaSinkAbortLeavesNoErrorBehind(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	src, err := offsets.New(offsets.Config{Topic: "in", Group: "g", InstanceID: "a", TransactionalID: "t-a",
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, TransactionTimeout: 10 * time.Second,
		ConnOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...), kgo.MaxProduceRequestsInflightPerBroker(1)}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	sink, err := pipeline.NewKafkaSink(context.Background(), src, pipeline.KafkaSinkConfig{Group: "g", Topic: "in"})
	if err != nil {
		t.Fatal(err)
	}
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
