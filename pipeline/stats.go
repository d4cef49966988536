package pipeline

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is what the engine exposes for the status API, metrics and tests.
// Counters are atomics; the rest is guarded by mu. One Stats lives across
// restarts of the job (attempts), so counters are job-wide.
type Stats struct {
	RecordsIn        atomic.Int64
	RecordsOut       atomic.Int64
	DeadLetters      atomic.Int64
	Duplicates       atomic.Int64
	Epochs           atomic.Int64
	EpochsAborted    atomic.Int64
	SnapshotFailures atomic.Int64
	Recoveries       atomic.Int64

	mu         sync.Mutex
	commitLat  []time.Duration // recent epoch commit latencies (ring)
	pauses     []time.Duration // recent snapshot pauses (ring)
	snapshots  []SnapshotInfo  // recent snapshot history (ring)
	partitions []PartitionInfo
	recovering map[int32][2]int64 // partition -> replayed, total
	onCommit   []func(time.Duration, int)
	storeMu    sync.RWMutex
	stores     map[int32]*Store
	onSnapshot []func(SnapshotInfo)
	lastCommit time.Time
}

// SnapshotInfo is one entry of the snapshot history.
type SnapshotInfo struct {
	ID           string        `json:"id,omitempty"`
	Partition    int32         `json:"partition"`
	Offset       int64         `json:"offset"`
	Trigger      time.Time     `json:"trigger_time"`
	Pause        time.Duration `json:"-"`
	Duration     time.Duration `json:"-"`
	BytesWritten int64         `json:"bytes_written"`
	TotalBytes   int64         `json:"total_bytes"`
	Mode         string        `json:"mode,omitempty"`
	Status       string        `json:"status"`
	Error        string        `json:"failure_cause,omitempty"`
}

// PartitionInfo describes an owned partition (as of the last commit).
type PartitionInfo struct {
	Partition          int32  `json:"partition"`
	Committed          int64  `json:"committed_offset"`
	HighWatermark      int64  `json:"high_watermark"`
	Lag                int64  `json:"lag"`
	RecordsIn          int64  `json:"records_in"`
	RecordsOut         int64  `json:"records_out"`
	DeadLetters        int64  `json:"records_dlq"`
	Duplicates         int64  `json:"duplicates"`
	StateBytes         int64  `json:"state_bytes"`
	RecoveredFrom      string `json:"recovery_source"`
	LastSnapshotOffset int64  `json:"last_snapshot_offset"`
}

const historyLen = 256

// NewStats returns empty stats.
func NewStats() *Stats { return &Stats{recovering: map[int32][2]int64{}, stores: map[int32]*Store{}} }

// addCounts adds a committed epoch's counts to the job totals.
func (s *Stats) addCounts(c counts) {
	s.RecordsIn.Add(c.in)
	s.RecordsOut.Add(c.out)
	s.DeadLetters.Add(c.dlq)
	s.Duplicates.Add(c.dup)
}

func (s *Stats) registerStore(p int32, st *Store) {
	s.storeMu.Lock()
	s.stores[p] = st
	s.storeMu.Unlock()
}

// unregisterStore must be called before the store is closed: it waits for
// running lookups.
func (s *Stats) unregisterStore(p int32) {
	s.storeMu.Lock()
	delete(s.stores, p)
	s.storeMu.Unlock()
}

// LookupResult is the answer of a committed-state query.
type LookupResult struct {
	Found      bool
	Partition  int32   // where it was found
	Value      []byte  // committed value
	Owned      []int32 // partitions this instance serves now
	Recovering []int32 // partitions still being recovered
}

// Lookup reads key from the committed state of every partition this
// instance owns. It never touches the processing loop: Pebble reads are
// concurrent, and the registry lock only keeps a store open while it is read.
func (s *Stats) Lookup(key []byte) (LookupResult, error) {
	var r LookupResult
	for p := range s.Recovering() {
		r.Recovering = append(r.Recovering, p)
	}
	s.storeMu.RLock()
	defer s.storeMu.RUnlock()
	for p := range s.stores {
		r.Owned = append(r.Owned, p)
	}
	sort.Slice(r.Owned, func(i, j int) bool { return r.Owned[i] < r.Owned[j] })
	sort.Slice(r.Recovering, func(i, j int) bool { return r.Recovering[i] < r.Recovering[j] })
	for _, p := range r.Owned {
		v, ok, err := s.stores[p].Get(key)
		if err != nil {
			return r, err
		}
		if ok {
			r.Found, r.Partition, r.Value = true, p, v
			return r, nil
		}
	}
	return r, nil
}

func ring[T any](s []T, v T) []T {
	s = append(s, v)
	if len(s) > historyLen {
		s = s[len(s)-historyLen:]
	}
	return s
}

// OnCommit registers a callback for every committed epoch (metrics).
func (s *Stats) OnCommit(f func(latency time.Duration, records int)) {
	s.mu.Lock()
	s.onCommit = append(s.onCommit, f)
	s.mu.Unlock()
}

// OnSnapshot registers a callback for every snapshot result (metrics).
func (s *Stats) OnSnapshot(f func(SnapshotInfo)) {
	s.mu.Lock()
	s.onSnapshot = append(s.onSnapshot, f)
	s.mu.Unlock()
}

func (s *Stats) observeCommit(d time.Duration, records int) {
	s.Epochs.Add(1)
	s.mu.Lock()
	s.commitLat = ring(s.commitLat, d)
	s.lastCommit = time.Now()
	cbs := s.onCommit
	s.mu.Unlock()
	for _, f := range cbs {
		f(d, records)
	}
}

func (s *Stats) observePause(d time.Duration) {
	s.mu.Lock()
	s.pauses = ring(s.pauses, d)
	s.mu.Unlock()
}

func (s *Stats) addSnapshot(si SnapshotInfo) {
	s.mu.Lock()
	s.snapshots = ring(s.snapshots, si)
	cbs := s.onSnapshot
	s.mu.Unlock()
	for _, f := range cbs {
		f(si)
	}
}

func (s *Stats) setPartitions(p []PartitionInfo) {
	s.mu.Lock()
	s.partitions = p
	s.mu.Unlock()
}

func (s *Stats) setRecovering(p int32, done, total int64) {
	s.mu.Lock()
	s.recovering[p] = [2]int64{done, total}
	s.mu.Unlock()
}

func (s *Stats) clearRecovering(p int32) {
	s.mu.Lock()
	delete(s.recovering, p)
	s.mu.Unlock()
}

// Snapshots returns the recent snapshot history, oldest first.
func (s *Stats) Snapshots() []SnapshotInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SnapshotInfo(nil), s.snapshots...)
}

// Partitions returns the owned partitions as of the last commit.
func (s *Stats) Partitions() []PartitionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]PartitionInfo(nil), s.partitions...)
}

// Recovering returns partitions being recovered: replayed and total records.
func (s *Stats) Recovering() map[int32][2]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int32][2]int64, len(s.recovering))
	for k, v := range s.recovering {
		out[k] = v
	}
	return out
}

// CommitLatencies returns recent epoch commit latencies.
func (s *Stats) CommitLatencies() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.commitLat...)
}

// Pauses returns recent snapshot pauses.
func (s *Stats) Pauses() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.pauses...)
}
