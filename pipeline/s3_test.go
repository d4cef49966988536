package pipeline_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/offsets"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/test/s3test"
)

// s3Engine is loopRig.engine with checkpoints on object storage behind a
// fault-injecting proxy.
// idle is the engine's ExitWhenIdle (0: run until it fails or ctx ends).
func (r *loopRig) s3Engine(id, dir string, ck checkpoint.Storage, tolerable int, idle time.Duration, stats *pipeline.Stats, log *zap.Logger, afterPoll func()) (*pipeline.Engine, error) {
	src, err := offsets.New(offsets.Config{Topic: loopTopic, Group: "g", InstanceID: id, TransactionalID: "t-" + id, ProgressTopic: "progress",
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 10 * time.Second, TransactionTimeout: 10 * time.Second,
		ConnOpts: r.seeds, Logger: log})
	if err != nil {
		return nil, err
	}
	sink, err := pipeline.NewKafkaSink(context.Background(), src, pipeline.KafkaSinkConfig{Group: "g", Topic: loopTopic, ProgressTopic: "progress"})
	if err != nil {
		src.Close()
		return nil, err
	}
	cfg := pipeline.Config{Topic: loopTopic, OutputTopic: "out", DLQTopic: "dlq", Group: "g", ProgressTopic: "progress",
		CommitInterval: 100 * time.Millisecond, CheckpointInterval: 300 * time.Millisecond, MaxPollRecords: 200,
		DataDir: filepath.Join(dir, "data-"+id), ExitWhenIdle: idle, ReplayConnOpts: r.seeds,
		TolerableSnapshotFailures: tolerable, Stats: stats, Logger: log}
	pipeline.SetAfterPoll(&cfg, afterPoll)
	newOp := func() pipeline.Operator { return aggregate.New(aggregate.Config{}) }
	cfg.Job = pipeline.StateSettings(newOp())
	cfg.Job["topic"] = loopTopic
	return pipeline.NewEngine(cfg, src, &checkedSink{Sink: sink, t: r.t, seeds: r.seeds}, newOp, ck), nil
}

func openS3(t *testing.T, srv *s3test.Server, endpoint, prefix string) checkpoint.Storage {
	t.Helper()
	ck, err := checkpoint.OpenStorage(context.Background(), srv.Location(prefix), checkpoint.Options{Retain: 3},
		checkpoint.S3Config{Endpoint: "http://" + endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// TestS3SnapshotsThrottled: while the object storage answers every
// request with 503, snapshots fail and are retried at the next interval
// and processing and output go on; once it recovers snapshots are
// published again, and the output is exactly once.
func TestS3SnapshotsThrottled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process broker and an S3 server for ~15 s")
	}
	srv := s3test.Start(t)
	proxy := s3test.NewProxy(t, srv.Endpoint)
	r := newLoopRig(t, 6000)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ck := openS3(t, srv, proxy.Endpoint, "throttled")
	stats := pipeline.NewStats()
	var failing atomic.Bool
	var failed, published, commitsWhileFailing atomic.Int64
	stats.OnSnapshot(func(si pipeline.SnapshotInfo) {
		switch {
		case si.Status == "failed":
			if failed.Add(1) >= 3 {
				failing.Store(false)
				proxy.SetFailing(false)
			}
		case failed.Load() >= 3:
			published.Add(1)
		}
	})
	stats.OnCommit(func(time.Duration, int) {
		if failing.Load() {
			commitsWhileFailing.Add(1)
		}
	})
	var e *pipeline.Engine
	var once sync.Once
	hook := func() {
		if e.EpochOpen() { // recovered, records flowing: the storage starts throttling
			once.Do(func() { failing.Store(true); proxy.SetFailing(true) })
		}
	}
	var err error
	e, err = r.s3Engine("a", t.TempDir(), ck, 1000, 4*time.Second, stats, log, hook)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.produce(ctx, 800) }()
	runEngine(t, e)
	wg.Wait()
	if failed.Load() < 3 || published.Load() == 0 || commitsWhileFailing.Load() == 0 {
		t.Fatalf("failed snapshots %d, published after recovery %d, epochs committed while the storage failed %d",
			failed.Load(), published.Load(), commitsWhileFailing.Load())
	}
	r.verify()
	metas := 0
	for p := int32(0); p < 4; p++ {
		ms, err := ck.List(loopTopic, p)
		if err != nil {
			t.Fatal(err)
		}
		metas += len(ms)
	}
	if metas == 0 {
		t.Fatal("no snapshot in the bucket")
	}
}

// TestS3TolerableSnapshotFailures: with the storage failing for good, the
// attempt fails after exactly tolerable+1 consecutive failed snapshots.
func TestS3TolerableSnapshotFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("runs an in-process broker and an S3 server for ~10 s")
	}
	srv := s3test.Start(t)
	proxy := s3test.NewProxy(t, srv.Endpoint)
	r := newLoopRig(t, 6000)
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	ck := openS3(t, srv, proxy.Endpoint, "tolerable")
	stats := pipeline.NewStats()
	var e *pipeline.Engine
	var once sync.Once
	hook := func() {
		if e.EpochOpen() {
			once.Do(func() { proxy.SetFailing(true) })
		}
	}
	const tolerable = 2
	var err error
	// No idle exit: the attempt must end by failing, however late the
	// first records arrive on a loaded machine (the context bounds it).
	e, err = r.s3Engine("a", t.TempDir(), ck, tolerable, 0, stats, log, hook)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.produce(ctx, 800)
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	err = e.Run(rctx, nil)
	if err == nil || errors.Is(err, job.ErrFinished) || !strings.Contains(err.Error(), "3 consecutive snapshot failures (tolerable: 2)") {
		t.Fatalf("Run = %v; want the attempt to fail after 3 consecutive snapshot failures (records produced %d, processed %d, snapshot failures %d)",
			err, r.produced.Load(), stats.RecordsIn.Load(), stats.SnapshotFailures.Load())
	}
	// Publishes in flight when the attempt failed may be counted too.
	if n := stats.SnapshotFailures.Load(); n < tolerable+1 {
		t.Fatalf("%d snapshot failures counted, want at least %d", n, tolerable+1)
	}
}
