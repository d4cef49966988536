package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/status"
)

// addrFileEnv names a file startHTTP writes the bound address to (tests
// start the daemon with --http 127.0.0.1:0).
const addrFileEnv = "TXSTREAM_HTTP_ADDR_FILE"

// startHTTP serves the status API, dashboard and metrics on --http until
// the returned function is called (after the job ended, so the API shows
// the drain and the final state). It adds the Kafka client metrics hooks
// to d.extraOpts, so it must run before the first attempt.
func startHTTP(ctx context.Context, d *daemon) (stop func(), err error) {
	c := d.cfg
	if c.httpAddr == "" {
		d.log.Info("http status server disabled (--http is empty)")
		return func() {}, nil
	}
	srv, err := status.New(status.Config{
		Addr:     c.httpAddr,
		Token:    c.httpToken,
		Version:  version,
		Started:  time.Now(),
		Settings: c.statusSettings(),
		Backend:  daemonBackend{d},
		Logger:   d.log.Named("http"),
	})
	if err != nil {
		return nil, err
	}
	addr, err := srv.Start(ctx)
	if err != nil {
		return nil, err
	}
	d.extraOpts = append(d.extraOpts, kgo.WithHooks(srv.KafkaHooks()))
	d.log.Info("http listening", zap.Stringer("addr", addr),
		zap.String("dashboard", "http://"+addr.String()+"/"), zap.Bool("token", c.httpToken != ""))
	if f := os.Getenv(addrFileEnv); f != "" {
		if err := writeFileAtomic(f, []byte(addr.String())); err != nil {
			srv.Stop()
			return nil, fmt.Errorf("writing %s: %w", addrFileEnv, err)
		}
	}
	return srv.Stop, nil
}

// writeFileAtomic writes via a temporary file and a rename, so a reader
// never sees a partial address.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// statusSettings are the settings GET /api/v1/job reports: what matters to
// an operator, with connection details redacted.
func (c *config) statusSettings() map[string]any {
	m := map[string]any{
		"kafka":                         c.conn.Redacted(),
		"topic":                         c.topic,
		"output_topic":                  c.outputTopic,
		"dlq_topic":                     c.dlqTopic,
		"progress_topic":                c.progressTopic,
		"group":                         c.group,
		"instance_id":                   c.instanceID,
		"transactional_id":              c.transactionalID(),
		"sink":                          c.sink,
		"commit_interval":               c.commitInterval.String(),
		"checkpoint_interval":           c.checkpointInterval.String(),
		"checkpoint_mode":               string(c.mode),
		"checkpoint_dir":                c.checkpointDir,
		"checkpoint_retain":             c.checkpointRetain,
		"data_dir":                      c.dataDir,
		"dedup_window":                  c.dedupWindow.String(),
		"dedup_index_entries":           c.dedupIndex,
		"max_epoch_bytes":               c.maxEpochBytes,
		"tolerable_checkpoint_failures": c.tolerableFailures,
		"allow_state_loss":              c.allowStateLoss,
		"exit_when_idle":                c.exitWhenIdle.String(),
		"restart_strategy":              c.restart.Strategy,
	}
	if s3 := c.s3Settings(); s3 != nil {
		m["checkpoint_s3"] = s3 // without secrets
	}
	return m
}

// s3Settings are the object storage settings without secrets (nil for a
// checkpoint directory).
func (c *config) s3Settings() map[string]any {
	if !checkpoint.IsS3Location(c.checkpointDir) {
		return nil
	}
	return c.s3.Redacted()
}

// daemonBackend is the daemon as the status server sees it.
type daemonBackend struct{ d *daemon }

func (b daemonBackend) Job() job.Status        { return b.d.runner.Snapshot() }
func (b daemonBackend) Stats() status.Stats    { return status.PipelineStats(b.d.stats) }
func (b daemonBackend) InputPartitions() int32 { return b.d.inputPartitions }

func (b daemonBackend) Savepoints() ([]checkpoint.SavepointMeta, error) {
	return b.d.ckpt.ListSavepoints()
}

// TriggerSavepoint takes a savepoint; a name that is taken is a conflict
// (the API answers 409), any other failure is the server's (500).
func (b daemonBackend) TriggerSavepoint(ctx context.Context, name string) (any, error) {
	meta, err := b.d.triggerSavepoint(ctx, name)
	if errors.Is(err, checkpoint.ErrSavepointExists) {
		return nil, fmt.Errorf("%w: %w", status.ErrConflict, err)
	}
	if err != nil {
		return nil, err
	}
	return meta, nil
}

func (b daemonBackend) Cancel() {
	if b.d.cancel != nil {
		b.d.cancel()
	}
}
