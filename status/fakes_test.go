package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

// fakeStats is a Stats whose contents the test sets, and that calls the
// registered callbacks when the test says an epoch or snapshot happened.
type fakeStats struct {
	mu         sync.Mutex
	counters   Counters
	partitions []pipeline.PartitionInfo
	recovering map[int32][2]int64
	snapshots  []pipeline.SnapshotInfo
	state      map[int32]map[string][]byte // partition -> key -> value (owned stores)
	lookupErr  error
	onCommit   []func(time.Duration, int)
	onSnapshot []func(pipeline.SnapshotInfo)
}

func newFakeStats() *fakeStats {
	return &fakeStats{recovering: map[int32][2]int64{}, state: map[int32]map[string][]byte{}}
}

func (f *fakeStats) Counters() Counters {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counters
}

func (f *fakeStats) Partitions() []pipeline.PartitionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pipeline.PartitionInfo(nil), f.partitions...)
}

func (f *fakeStats) Recovering() map[int32][2]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32][2]int64{}
	for k, v := range f.recovering {
		out[k] = v
	}
	return out
}

func (f *fakeStats) Snapshots() []pipeline.SnapshotInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pipeline.SnapshotInfo(nil), f.snapshots...)
}

// Lookup mimics pipeline.Stats.Lookup: owned partitions are the ones with
// a store, sorted; recovering ones are listed.
func (f *fakeStats) Lookup(key []byte) (pipeline.LookupResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var r pipeline.LookupResult
	for p := range f.recovering {
		r.Recovering = append(r.Recovering, p)
	}
	for p := range f.state {
		r.Owned = append(r.Owned, p)
	}
	slices.Sort(r.Owned)
	slices.Sort(r.Recovering)
	if f.lookupErr != nil {
		return r, f.lookupErr
	}
	for _, p := range r.Owned {
		if v, ok := f.state[p][string(key)]; ok {
			r.Found, r.Partition, r.Value = true, p, v
		}
	}
	return r, nil
}

func (f *fakeStats) OnCommit(fn func(time.Duration, int)) {
	f.mu.Lock()
	f.onCommit = append(f.onCommit, fn)
	f.mu.Unlock()
}

func (f *fakeStats) OnSnapshot(fn func(pipeline.SnapshotInfo)) {
	f.mu.Lock()
	f.onSnapshot = append(f.onSnapshot, fn)
	f.mu.Unlock()
}

func (f *fakeStats) commit(lat time.Duration, records int) {
	f.mu.Lock()
	cbs := f.onCommit
	f.mu.Unlock()
	for _, fn := range cbs {
		fn(lat, records)
	}
}

func (f *fakeStats) snapshot(si pipeline.SnapshotInfo) {
	f.mu.Lock()
	f.snapshots = append(f.snapshots, si)
	if si.Status == "failed" {
		f.counters.SnapshotFailures++
	}
	cbs := f.onSnapshot
	f.mu.Unlock()
	for _, fn := range cbs {
		fn(si)
	}
}

func (f *fakeStats) set(fn func(f *fakeStats)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// fakeBackend is a Backend the test controls.
type fakeBackend struct {
	mu         sync.Mutex
	status     job.Status
	stats      *fakeStats
	savepoints []checkpoint.SavepointMeta
	spErr      error
	partitions int32
	trigger    func(ctx context.Context, name string) (any, error)
	cancels    int
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		status: job.Status{State: job.Running, Since: time.Now().Add(-time.Minute), Attempt: 1,
			Strategy: "fixed-delay(attempts=3, delay=5s)"},
		stats:      newFakeStats(),
		partitions: 4,
	}
}

func (b *fakeBackend) Job() job.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

func (b *fakeBackend) setJob(fn func(s *job.Status)) {
	b.mu.Lock()
	fn(&b.status)
	b.mu.Unlock()
}

func (b *fakeBackend) Stats() Stats { return b.stats }

func (b *fakeBackend) Savepoints() ([]checkpoint.SavepointMeta, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.savepoints, b.spErr
}

func (b *fakeBackend) InputPartitions() int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.partitions
}

func (b *fakeBackend) TriggerSavepoint(ctx context.Context, name string) (any, error) {
	b.mu.Lock()
	t := b.trigger
	b.mu.Unlock()
	if t == nil {
		return nil, errors.New("fake backend: no savepoint trigger set")
	}
	return t(ctx, name)
}

func (b *fakeBackend) Cancel() {
	b.mu.Lock()
	b.cancels++
	b.mu.Unlock()
}

func (b *fakeBackend) cancelCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cancels
}

// newTest builds a server on a fake backend; addr decides loopback.
func newTest(t *testing.T, addr, token string) (*Server, *fakeBackend) {
	t.Helper()
	b := newFakeBackend()
	s, err := New(Config{Addr: addr, Token: token, Version: "v-test", Backend: b,
		Settings: map[string]any{"topic": "transactions", "kafka": map[string]any{"brokers": []string{"k:9092"}, "sasl_password": "[redacted]"}}})
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

type reply struct {
	code   int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// do sends a request through the handler. host "" means 127.0.0.1:8081.
func do(t *testing.T, s *Server, method, target, body string, hdr map[string]string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	req.Host = "127.0.0.1:8081"
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return reply{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// wantError checks a JSON error answer and returns it.
func wantError(t *testing.T, r reply, code int, msgPart string) map[string]any {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d: %s", r.code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q, want JSON", ct)
	}
	m := r.json(t)
	msg, _ := m["error"].(string)
	if msg == "" || !strings.Contains(msg, msgPart) {
		t.Fatalf("error message %q does not mention %q", msg, msgPart)
	}
	if int(m["status"].(float64)) != code {
		t.Fatalf("error body status %v, want %d", m["status"], code)
	}
	return m
}
