package pipeline

import (
	"maps"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one input record as the operator sees it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kgo.RecordHeader
	// Timestamp is the record's Kafka timestamp (create or log-append
	// time). Operators use it, or a time inside the value, never the
	// wall clock: replays must compute the same results.
	Timestamp time.Time
}

// State is the keyed state of the record's partition. Reads see the writes
// of the current epoch; writes become durable only when the epoch's sink
// commit succeeds. Returned slices must not be modified; they stay valid
// until Process returns. Set copies key and value: the caller may reuse
// them.
type State interface {
	Get(key []byte) (value []byte, ok bool, err error)
	Set(key, value []byte) error
	Delete(key []byte) error
}

// Emitter receives an operator's results for one record.
type Emitter interface {
	// Emit publishes an output record (to the output topic) with key and
	// value. The emitter copies both (or is done with them when Emit
	// returns): the caller may reuse the slices.
	Emit(key, value []byte)
	// DeadLetter sends the input record to the dead-letter topic with a
	// stable reason code and a human-readable detail. Bad input is never
	// dropped silently and never fails the job.
	DeadLetter(reason, detail string)
	// Skipped counts a record that was deliberately ignored (an exact
	// duplicate) so that it shows in metrics.
	Skipped(reason string)
}

// Discarder is implemented by an Emitter that drops what it is given:
// the engine's emitter during a replay, whose records' output an earlier
// epoch committed. An operator may skip building output (Emit's key and
// value) when Discards is true; it must update its state as always.
type Discarder interface {
	Discards() bool
}

// Discards reports whether out drops what it is given (Discarder).
func Discards(out Emitter) bool {
	d, ok := out.(Discarder)
	return ok && d.Discards()
}

// Operator is a deterministic keyed function: given the same records in the
// same per-partition order it must produce the same state and the same
// outputs. Returning an error fails the job attempt (a restart strategy
// decides what happens next); bad input is not an error, it goes to
// Emitter.DeadLetter.
//
// Process is called from a single goroutine.
type Operator interface {
	// Name identifies the operator and its state format in snapshots;
	// change it when the state encoding changes incompatibly.
	Name() string
	Process(rec *Record, st State, out Emitter) error
}

// Prefetcher is implemented by an operator that can say ahead of time
// which state keys its next records will look up. The engine hands it
// the next PrefetchBatch records of a partition before processing them one
// by one; the operator finds their keys and calls PrefetchKeys, which
// touches the memory those lookups will miss on (the key filter's block,
// the epoch's hash slot and entry) for all of them in one tight loop, so
// that the misses of a batch overlap instead of each record stalling on
// its own. Prefetch is only a hint: it must not change state or emit, and
// a record it saw may be processed without it or never (the epoch ends,
// a record fails). An operator may keep what it computed (a parsed row)
// for Process, if it checks that it is given the same record.
type Prefetcher interface {
	Prefetch(recs []Record, st State)
}

// PrefetchBatch is how many records the engine hands Prefetch at a time:
// enough misses in flight to overlap, few enough that what they load is
// still in the cache when the records are processed.
const PrefetchBatch = 8

// Compatibility is implemented by operators whose state depends on
// settings besides their Name. StateSettings returns them; the job puts
// them in Config.Job (see the function StateSettings), which the engine
// records in every snapshot and compares when it restores one: a snapshot
// is restored only if every setting both have is unchanged (otherwise
// ErrIncompatibleState). Include "operator": Name(). Keep keys and values
// stable across releases, or existing snapshots stop being restorable.
type Compatibility interface {
	StateSettings() map[string]string
}

// StateUpgrader is implemented by an operator that reads the state an
// earlier version of it wrote. ReadsState reports whether it restores a
// snapshot whose "operator" setting is name (an earlier Name); the
// engine then accepts the snapshot despite the different name (every
// other setting must still match). From there on the state holds what
// this version writes, and later snapshots carry its Name, which the
// earlier version refuses: a rollback starts from a snapshot or
// savepoint the earlier version took.
type StateUpgrader interface {
	ReadsState(name string) bool
}

// StateSettings is op's part of the job settings a snapshot must match: a
// copy of its StateSettings if it implements Compatibility, with
// "operator" set to op.Name() when missing; just the latter otherwise.
// The caller adds its own settings (the input topic) to the map.
func StateSettings(op Operator) map[string]string {
	m := map[string]string{}
	if c, ok := op.(Compatibility); ok {
		m = maps.Clone(c.StateSettings())
		if m == nil {
			m = map[string]string{}
		}
	}
	if _, ok := m["operator"]; !ok {
		m["operator"] = op.Name()
	}
	return m
}
