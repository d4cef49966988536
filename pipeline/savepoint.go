package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/txstream/txstream/checkpoint"
)

type savepointReq struct {
	name  string
	reply chan savepointReply
}

type savepointReply struct {
	meta checkpoint.SavepointMeta
	err  error
}

// RequestSavepoint asks the running loop for a savepoint of the partitions
// it owns. It is safe to call from any goroutine; the loop takes the
// Pebble checkpoints at a committed boundary and copies them off the loop.
func (e *Engine) RequestSavepoint(ctx context.Context, name string) (checkpoint.SavepointMeta, error) {
	req := savepointReq{name: name, reply: make(chan savepointReply, 1)}
	select {
	case e.spReqs <- req:
	case <-ctx.Done():
		return checkpoint.SavepointMeta{}, fmt.Errorf("the processing loop did not take the savepoint request: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.meta, r.err
	case <-ctx.Done():
		return checkpoint.SavepointMeta{}, fmt.Errorf("savepoint %q is still being written: %w", name, ctx.Err())
	}
}

// startSavepoint commits the open epoch, checkpoints every owned partition
// and copies them into a savepoint in the background. Only errors that
// break the loop (a failed commit) are returned; savepoint failures go to
// the requester.
func (e *Engine) startSavepoint(ctx context.Context, req savepointReq) error {
	if err := e.commitEpoch(ctx); err != nil {
		req.reply <- savepointReply{err: err}
		return err
	}
	if len(e.parts) == 0 {
		req.reply <- savepointReply{err: errors.New("no partitions are assigned to this instance yet")}
		return nil
	}
	var parts []checkpoint.SavepointPart
	var dirs []string
	cleanup := func() {
		for _, d := range dirs {
			_ = os.RemoveAll(d)
		}
	}
	for _, p := range e.sortedParts() {
		ps := e.parts[p]
		e.snaps.seq++
		staging := filepath.Join(e.cfg.DataDir, "staging", fmt.Sprintf("savepoint-%s-%d-%d", e.cfg.Topic, p, e.snaps.seq))
		_ = os.RemoveAll(staging)
		if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
			cleanup()
			req.reply <- savepointReply{err: err}
			return nil
		}
		if err := ps.store.Checkpoint(staging); err != nil {
			cleanup()
			req.reply <- savepointReply{err: err}
			return nil
		}
		dirs = append(dirs, staging)
		parts = append(parts, checkpoint.SavepointPart{Topic: e.cfg.Topic, Partition: p, Offset: ps.next, SrcDir: staging, TopicID: e.topicID, ClusterID: e.clusterID})
	}
	e.log.Info("savepoint started", zap.String("name", req.name), zap.Int("partitions", len(parts)))
	e.spWG.Add(1)
	go func() {
		defer e.spWG.Done()
		defer cleanup()
		start := time.Now()
		m, err := e.ckpt.Savepoint(context.Background(), req.name, parts, e.cfg.Job)
		if err != nil {
			e.log.Warn("savepoint failed", zap.String("name", req.name), zap.Error(err))
		} else {
			e.log.Info("savepoint written", zap.String("name", m.Name), zap.String("dir", m.Dir),
				zap.Int64("bytes", m.Bytes()), zap.Duration("took", time.Since(start)))
		}
		req.reply <- savepointReply{meta: m, err: err}
	}()
	return nil
}
