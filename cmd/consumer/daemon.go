package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/faults"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/offsets"
	"github.com/txstream/txstream/pipeline"
)

// daemon holds what lives across attempts: settings, the checkpoint store,
// the data-dir lock, the job runner and the stats.
type daemon struct {
	cfg      *config
	log      *zap.Logger
	ckpt     checkpoint.Storage
	lock     *os.File
	runner   *job.Runner
	stats    *pipeline.Stats
	connOpts []kgo.Opt

	// inputPartitions is the input topic's partition count (0: unknown),
	// used to say which partition owns a key.
	inputPartitions int32

	// extraOpts are added to every attempt's Kafka client (metrics hooks).
	extraOpts []kgo.Opt
	// cancel stops the job gracefully (SIGTERM, POST /api/v1/job/cancel).
	cancel context.CancelFunc

	// fromSavepoint is --from-savepoint, loaded and verified at start-up.
	fromSavepoint *checkpoint.SavepointMeta
	// unwritable remembers input records whose output could not be
	// written, across attempts (they become dead letters).
	unwritable map[pipeline.RecordKey]string
	// engine is the running attempt's engine (nil between attempts), for
	// savepoint requests from the HTTP API.
	engine atomic.Pointer[pipeline.Engine]

	// topicsReady is set once the topics were created or checked.
	topicsReady bool

	readyOnce sync.Once
	watchdog  time.Duration // 0: systemd watchdog off
	progress  atomic.Int64  // loop turns and replay batches, for the watchdog
}

func newDaemon(cfg *config, log *zap.Logger) (*daemon, error) {
	if p := faults.Armed(); p != "" {
		log.Warn("TEST CRASH POINT ARMED: this process will kill itself", zap.String(faults.EnvVar, p))
	}
	connOpts, err := cfg.conn.Opts()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating --data-dir: %w", err)
	}
	lock, err := lockDir(cfg.dataDir)
	if err != nil {
		return nil, err
	}
	grace := cfg.gcGrace
	if grace == 0 {
		grace = -1 // the checkpoint package reads 0 as its default; -1 is none
	}
	ckpt, err := checkpoint.OpenStorage(context.Background(), cfg.checkpointDir, checkpoint.Options{Mode: cfg.mode, Retain: cfg.checkpointRetain,
		Grace: grace, Logger: log.Named("checkpoint")}, cfg.s3)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	strategy, err := job.NewStrategy(cfg.restart)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, ckpt: ckpt, lock: lock, stats: pipeline.NewStats(), connOpts: connOpts, unwritable: pipeline.NewUnwritableSet()}
	if cfg.fromSavepoint != "" {
		sp, err := checkpoint.LoadSavepointAt(context.Background(), cfg.fromSavepoint, cfg.s3, log.Named("checkpoint"))
		if err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("--from-savepoint: %w", err)
		}
		d.fromSavepoint = &sp
		log.Info("starting from savepoint", zap.String("name", sp.Name), zap.String("dir", sp.Dir),
			zap.Time("created_at", sp.CreatedAt), zap.Any("offsets", savepointOffsets(sp, cfg.topic)))
	}
	d.runner = job.NewRunner(job.RunnerConfig{Strategy: strategy, Logger: log.Named("job")})
	return d, nil
}

// lockDir takes an exclusive lock on dir/LOCK: two consumers sharing a data
// directory would destroy each other's stores.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--data-dir %s is in use by another consumer (each consumer needs its own data dir; they may share --checkpoint-dir): %w", dir, err)
	}
	return f, nil
}

func (d *daemon) close() {
	if d.lock != nil {
		_ = d.lock.Close()
	}
}

func (d *daemon) run(parent context.Context) (job.State, error) {
	c := d.cfg
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	d.cancel = cancel
	d.log.Info("starting", zap.String("version", version), zap.Any("kafka", c.conn.Redacted()),
		zap.String("topic", c.topic), zap.String("output_topic", c.outputTopic), zap.String("dlq_topic", c.dlqTopic),
		zap.String("group", c.group), zap.String("instance_id", c.instanceID), zap.String("sink", c.sink),
		zap.Duration("commit_interval", c.commitInterval), zap.Duration("checkpoint_interval", c.checkpointInterval),
		zap.String("checkpoint_dir", c.checkpointDir), zap.String("checkpoint_mode", string(c.mode)))
	if checkpoint.IsS3Location(c.checkpointDir) {
		d.log.Info("checkpoint storage: S3-compatible object storage", zap.Any("s3", c.s3.Redacted()))
	}
	if w, err := sddaemon.SdWatchdogEnabled(false); err == nil && w > 0 {
		d.watchdog = w
		d.log.Info("systemd watchdog enabled", zap.Duration("interval", w))
		go d.feedWatchdog(ctx)
	}
	if c.reprocess {
		if err := d.rewindGroup(ctx); err != nil {
			return job.Failed, job.Permanent(err)
		}
	}
	stopHTTP, err := startHTTP(ctx, d)
	if err != nil {
		return job.Failed, job.Permanent(fmt.Errorf("--http %s: %w", c.httpAddr, err))
	}
	defer stopHTTP()
	stopNotify := context.AfterFunc(ctx, func() {
		_, _ = sddaemon.SdNotify(false, "STOPPING=1\nSTATUS=draining: committing and taking a final snapshot")
	})
	defer stopNotify()
	return d.runner.Run(ctx, d.attempt)
}

func savepointOffsets(sp checkpoint.SavepointMeta, topic string) map[string]int64 {
	out := map[string]int64{}
	for _, p := range sp.Partitions {
		if p.Topic == topic {
			out[fmt.Sprint(p.Partition)] = p.Offset
		}
	}
	return out
}

// rewindGroup commits the savepoint's offsets for the group (--reprocess),
// so that everything after them is processed and output again. Kafka only
// lets an admin move the offsets of a group with no running members.
func (d *daemon) rewindGroup(ctx context.Context) error {
	c := d.cfg
	sp := d.fromSavepoint
	adm, ctx, done, err := d.admin(ctx)
	if err != nil {
		return err
	}
	defer done()
	groups, err := adm.DescribeGroups(ctx, c.group)
	if err != nil {
		return fmt.Errorf("--reprocess: describing group %s: %w", c.group, err)
	}
	if g, ok := groups[c.group]; ok && g.Err == nil && len(g.Members) > 0 {
		return fmt.Errorf("--reprocess: group %s still has %d member(s) (state %s): stop every consumer of the group first (static members leave on SIGTERM)", c.group, len(g.Members), g.State)
	}
	offs := kadm.Offsets{}
	for _, p := range sp.Partitions {
		if p.Topic == c.topic {
			offs.Add(kadm.Offset{Topic: p.Topic, Partition: p.Partition, At: p.Offset, LeaderEpoch: -1})
		}
	}
	if len(offs) == 0 {
		return fmt.Errorf("--reprocess: savepoint %s has no partition of topic %s", sp.Name, c.topic)
	}
	resps, err := adm.CommitOffsets(ctx, c.group, offs)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		return fmt.Errorf("--reprocess: rewinding group %s to savepoint %s: %w", c.group, sp.Name, err)
	}
	d.log.Warn("REPROCESSING: the group was rewound to the savepoint's offsets; every record after them will be processed and OUTPUT AGAIN",
		zap.String("group", c.group), zap.String("savepoint", sp.Name), zap.Any("offsets", savepointOffsets(*sp, c.topic)))
	return nil
}

// triggerSavepoint asks the running attempt for a savepoint.
func (d *daemon) triggerSavepoint(ctx context.Context, name string) (checkpoint.SavepointMeta, error) {
	e := d.engine.Load()
	if e == nil {
		return checkpoint.SavepointMeta{}, fmt.Errorf("the job is not running (state %s): try again when it is RUNNING", d.runner.Snapshot().State)
	}
	return e.RequestSavepoint(ctx, name)
}

// ready tells systemd (Type=notify) that recovery finished; only once per
// process, after the first attempt has recovered its partitions.
func (d *daemon) ready() {
	d.readyOnce.Do(func() {
		_, _ = sddaemon.SdNotify(false, "READY=1\nSTATUS=running")
	})
}

// onLoop counts a turn of the processing loop (or a batch of replayed
// records) for the watchdog.
func (d *daemon) onLoop() { d.progress.Add(1) }

// feedWatchdog sends WATCHDOG=1 every half interval if the job made
// progress since the last tick, or is waiting out a restart delay by
// design. A loop or replay that hangs stops the pings and systemd restarts
// the service; a long replay or a restart backoff does not.
func (d *daemon) feedWatchdog(ctx context.Context) {
	t := time.NewTicker(d.watchdog / 2)
	defer t.Stop()
	last := d.progress.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := d.progress.Load()
		if now != last || d.runner.Snapshot().NextRestart != nil {
			_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
		last = now
	}
}

// admin returns a short-lived admin client for start-up work, bounded by a
// 30 s timeout; done releases both.
func (d *daemon) admin(ctx context.Context) (*kadm.Client, context.Context, func(), error) {
	cl, err := kgo.NewClient(d.connOpts...)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	return kadm.NewClient(cl), ctx, func() { cancel(); cl.Close() }, nil
}

// ensureTopics creates the output and dead-letter topics when they are
// missing, with the input topic's partition count. Clusters that forbid
// topic creation by clients get a clear error naming the topic.
func (d *daemon) ensureTopics(ctx context.Context) error {
	adm, ctx, done, err := d.admin(ctx)
	if err != nil {
		return err
	}
	defer done()
	c := d.cfg
	details, err := adm.ListTopics(ctx, c.topic, c.outputTopic, c.dlqTopic, c.progressTopic)
	if err != nil {
		return fmt.Errorf("listing topics: %w", c.conn.Explain(err))
	}
	partitions := int32(-1)
	if td, ok := details[c.topic]; ok && td.Err == nil {
		partitions = int32(len(td.Partitions))
		d.inputPartitions = partitions
	}
	for _, t := range []string{c.outputTopic, c.dlqTopic, c.progressTopic} {
		if td, ok := details[t]; ok && td.Err == nil {
			continue
		}
		var configs map[string]*string
		if t == c.progressTopic {
			// One record per partition and epoch, of which only the last
			// per key matters: compacted, with segments that roll often
			// enough for compaction to keep it small.
			configs = map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "segment.ms": kadm.StringPtr("3600000"),
				"min.cleanable.dirty.ratio": kadm.StringPtr("0.1")}
		}
		resp, err := adm.CreateTopic(ctx, partitions, -1, configs, t)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s (disable with --create-topics=false and create it yourself): %w", t, err)
		}
		d.log.Info("created topic", zap.String("topic", t), zap.Int32("partitions", partitions))
	}
	return nil
}

// prepareTopics creates the output, dead-letter and progress topics, or
// checks the progress topic exists when topics are not created.
func (d *daemon) prepareTopics(ctx context.Context) error {
	if d.cfg.createTopics {
		return d.ensureTopics(ctx)
	}
	if d.cfg.sink == "kafka" {
		return d.checkProgressTopic(ctx)
	}
	return nil
}

// isDialError: no broker could be reached at all.
func isDialError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || strings.Contains(err.Error(), "unable to dial")
}

// checkProgressTopic fails start-up when the progress topic is missing and
// the consumer may not create it: every epoch writes to it.
func (d *daemon) checkProgressTopic(ctx context.Context) error {
	adm, ctx, done, err := d.admin(ctx)
	if err != nil {
		return err
	}
	defer done()
	details, err := adm.ListTopics(ctx, d.cfg.progressTopic)
	if err != nil {
		return fmt.Errorf("listing topics: %w", d.cfg.conn.Explain(err))
	}
	if td, ok := details[d.cfg.progressTopic]; !ok || td.Err != nil {
		return fmt.Errorf("--progress-topic %s does not exist and --create-topics is off: create it with cleanup.policy=compact and as many partitions as %s", d.cfg.progressTopic, d.cfg.topic)
	}
	return nil
}

// checkLogin asks a broker for metadata once: a rejected SASL login or an
// untrusted certificate makes the job FAILED at once with a clear error,
// where the group consumer would retry it quietly forever. Other errors
// are left to the attempt.
func (d *daemon) checkLogin(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := d.cfg.conn.Explain(cl.Ping(ctx))
	if kconn.IsAuthError(err) {
		return job.Permanent(fmt.Errorf("connecting to %s: %w", d.cfg.conn.Brokers, err))
	}
	return nil
}

// attempt is one run of the job: a fresh client, fresh stores recovered
// from the checkpoint directory, and the processing loop.
func (d *daemon) attempt(ctx context.Context, n int, markRunning func()) error {
	c := d.cfg
	if !d.topicsReady {
		// Inside the attempt, so that a daemon started before Kafka
		// waits under the restart strategy instead of failing at once.
		if err := d.prepareTopics(ctx); err != nil {
			if kconn.IsAuthError(err) {
				return job.Permanent(err)
			}
			if errors.Is(err, context.DeadlineExceeded) || isDialError(err) {
				d.log.Warn("waiting for brokers: none answered; the restart strategy retries", zap.String("brokers", c.conn.Brokers), zap.Error(err))
			}
			return err
		}
		d.topicsReady = true
	}
	scfg := offsets.Config{
		Topic: c.topic, Group: c.group, InstanceID: c.instanceID,
		SessionTimeout: c.sessionTimeout, RebalanceTimeout: c.rebalanceTimeout, TransactionTimeout: c.txnTimeout,
		// Fetched batches wait in the client until processed, decompressed
		// and as a kgo.Record each: 16/4 MiB fetches held ~110 MB of the
		// heap and peak RSS was 80 MiB higher than with 4/1 MiB (Kafka's
		// own default per partition), for no less CPU per record.
		FetchMaxBytes: 4 << 20, PartitionMaxBytes: 1 << 20, MaxBufferedRecords: 20000,
		ConnOpts: d.connOpts, ExtraOpts: append([]kgo.Opt{c.compressionOpt()}, d.extraOpts...), Logger: d.log,
	}
	if c.sink == "kafka" {
		scfg.TransactionalID = c.transactionalID()
		scfg.ProgressTopic = c.progressTopic
	}
	src, err := offsets.New(scfg)
	if err != nil {
		return err
	}
	if err := d.checkLogin(ctx, src.Client()); err != nil {
		src.Close()
		return err
	}
	var sink pipeline.Sink
	if c.sink == "kafka" {
		ks, err := pipeline.NewKafkaSink(ctx, src, pipeline.KafkaSinkConfig{Group: c.group, Topic: c.topic,
			ProgressTopic: c.progressTopic, InitTimeout: c.txnTimeout + 30*time.Second, TransactionTimeout: c.txnTimeout})
		if err != nil {
			src.Close()
			var cerr *pipeline.ConfigError
			if kconn.IsAuthError(err) || errors.As(err, &cerr) {
				return job.Permanent(err)
			}
			return fmt.Errorf("transactional id %s: %w", c.transactionalID(), err)
		}
		sink = ks
	} else {
		sink = pipeline.NewStdoutSink(src, os.Stdout, os.Stderr, c.outputTopic)
	}
	newOp := func() pipeline.Operator {
		return aggregate.New(aggregate.Config{Columns: c.schema, DedupWindow: c.dedupWindow, MaxLineBytes: c.maxLineBytes})
	}
	ecfg := pipeline.Config{
		Topic: c.topic, OutputTopic: c.outputTopic, DLQTopic: c.dlqTopic,
		CommitInterval: c.commitInterval, CheckpointInterval: c.checkpointInterval,
		MaxEpochBytes: c.maxEpochBytes, DataDir: c.dataDir, AllowStateLoss: c.allowStateLoss,
		ExitWhenIdle: c.exitWhenIdle, TolerableSnapshotFailures: c.tolerableFailures,
		ChangelogBaseEvery: c.clogBaseEvery, ChangelogMaxRatio: clogRatio(c.clogMaxRatio),
		CrashAtRecord: c.crashAtRecord, ReplayConnOpts: d.connOpts,
		Job: c.jobSettings(newOp()), Logger: d.log, Stats: d.stats, OnLoop: d.onLoop,
		Savepoint: d.fromSavepoint, SavepointOnStop: c.savepointOnStop, Unwritable: d.unwritable,
		Group: c.group, ProgressTopic: c.progressTopic, PackEntries: c.dedupIndex,
	}
	if c.dedupIndex == 0 {
		ecfg.PackEntries = -1 // never pack
	}
	if c.failAtRecord > 0 && (c.failTimes == 0 || n <= c.failTimes) {
		ecfg.FailAtRecord = c.failAtRecord
	}
	eng := pipeline.NewEngine(ecfg, src, sink, newOp, d.ckpt)
	d.engine.Store(eng)
	defer d.engine.Store(nil)
	err = eng.Run(ctx, func() { markRunning(); d.ready() })
	return d.explain(err)
}

// explain words the engine's typed errors with what gets the job going
// again, and marks those a restart cannot fix as permanent.
func (d *daemon) explain(err error) error {
	switch {
	case err == nil:
		return nil
	case kconn.IsAuthError(err):
		// wrong credentials or certificates: a restart cannot help
		return job.Permanent(err)
	case errors.Is(err, pipeline.ErrStateLoss):
		return job.Permanent(fmt.Errorf("%w (restore the checkpoint directory, or rerun with --allow-state-loss to accept incomplete aggregates)", err))
	case errors.Is(err, pipeline.ErrOffsetsMissing):
		return job.Permanent(fmt.Errorf("%w (if the progress topic %s was deleted, restore the group's offsets with kafka-consumer-groups --reset-offsets to the offsets the newest snapshots show in `consumer checkpoints list`; to start this job over, use an empty --checkpoint-dir)", err, d.cfg.progressTopic))
	case errors.Is(err, pipeline.ErrIncompatibleState), errors.Is(err, pipeline.ErrForeignSource):
		return job.Permanent(err)
	case errors.Is(err, pipeline.ErrBeyondEnd):
		return job.Permanent(fmt.Errorf("%w (rerun with --allow-state-loss to resume at the end of the log)", err))
	}
	return err
}

// clogRatio maps --changelog-max-ratio 0 (no size rule) to the engine's
// negative "off".
func clogRatio(r float64) float64 {
	if r == 0 {
		return -1
	}
	return r
}
