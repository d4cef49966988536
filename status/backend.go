// Package status serves txstream's HTTP status API, dashboard, Prometheus
// metrics and health checks (docs/API.md).
//
// The server only reads: job status from the runner, counters and
// histories from the engine's stats, committed state through the stats'
// store registry. None of it takes a lock the processing loop holds for
// more than a copy, so a slow or stuck HTTP client never slows the job.
// The server is built around the small Backend and Stats interfaces so
// that tests can fake the job, the engine and the checkpoint store.
package status

import (
	"context"
	"errors"
	"time"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

// ErrConflict wraps errors of mutating requests that the job's current
// state does not allow (the API answers 409).
var ErrConflict = errors.New("conflict")

// Backend is the running job as the server sees it.
type Backend interface {
	// Job returns the runner's status (job.Runner.Snapshot).
	Job() job.Status
	// Stats returns the engine's statistics.
	Stats() Stats
	// Savepoints lists the savepoints in the checkpoint directory, newest
	// first.
	Savepoints() ([]checkpoint.SavepointMeta, error)
	// InputPartitions is the input topic's partition count, 0 if unknown.
	InputPartitions() int32
	// TriggerSavepoint takes a savepoint called name ("" for a generated
	// name) and returns what to report (marshalled as JSON). An error
	// wrapping ErrConflict is answered 409, any other error 500.
	TriggerSavepoint(ctx context.Context, name string) (any, error)
	// Cancel asks the job to stop gracefully (drain, commit, final
	// snapshot, CANCELED). It must not block.
	Cancel()
}

// Counters are the job-wide totals of committed epochs.
type Counters struct {
	RecordsIn, RecordsOut, DeadLetters, Duplicates int64
	Epochs, EpochsAborted                          int64
	SnapshotFailures, Recoveries                   int64
}

// Stats is the part of *pipeline.Stats the server reads; PipelineStats
// adapts the real one.
type Stats interface {
	Counters() Counters
	Partitions() []pipeline.PartitionInfo
	Recovering() map[int32][2]int64
	Snapshots() []pipeline.SnapshotInfo
	Lookup(key []byte) (pipeline.LookupResult, error)
	OnCommit(func(latency time.Duration, records int))
	OnSnapshot(func(pipeline.SnapshotInfo))
}

// PipelineStats adapts the engine's stats to Stats.
func PipelineStats(s *pipeline.Stats) Stats { return pipelineStats{s} }

type pipelineStats struct{ *pipeline.Stats }

func (p pipelineStats) Counters() Counters {
	s := p.Stats
	return Counters{
		RecordsIn: s.RecordsIn.Load(), RecordsOut: s.RecordsOut.Load(),
		DeadLetters: s.DeadLetters.Load(), Duplicates: s.Duplicates.Load(),
		Epochs: s.Epochs.Load(), EpochsAborted: s.EpochsAborted.Load(),
		SnapshotFailures: s.SnapshotFailures.Load(), Recoveries: s.Recoveries.Load(),
	}
}
