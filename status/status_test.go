package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

func TestJob(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	failAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.setJob(func(st *job.Status) {
		st.State, st.Attempt, st.Restarts = job.Restarting, 2, 1
		next := failAt.Add(5 * time.Second)
		st.NextRestart = &next
		st.LastFailure = &job.Failure{Err: errors.New("boom"), Time: failAt, Attempt: 1,
			Topic: "transactions", Partition: 2, Offset: 77, HasRecord: true}
		st.Transitions = []job.Transition{{From: job.Created, To: job.Running, Time: failAt.Add(-time.Minute), Attempt: 1},
			{From: job.Running, To: job.Restarting, Time: failAt, Attempt: 1, Cause: errors.New("boom"), Delay: 5 * time.Second}}
	})
	r := do(t, s, "GET", "/api/v1/job", "", nil)
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	m := r.json(t)
	for k, want := range map[string]any{"state": "RESTARTING", "attempt": 2.0, "restarts": 1.0,
		"restart_strategy": "fixed-delay(attempts=3, delay=5s)", "version": "v-test"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	lf := m["last_failure"].(map[string]any)
	if lf["cause"] != "boom" || lf["partition"] != 2.0 || lf["offset"] != 77.0 || lf["topic"] != "transactions" || lf["time"] != "2026-01-02T03:04:05Z" {
		t.Errorf("last_failure = %v", lf)
	}
	if tr := m["transitions"].([]any); len(tr) != 2 || tr[1].(map[string]any)["cause"] != "boom" {
		t.Errorf("transitions = %v", tr)
	}
	if m["uptime_seconds"].(float64) < 0 || m["next_restart"] == nil {
		t.Errorf("uptime/next_restart: %v %v", m["uptime_seconds"], m["next_restart"])
	}
	set := m["settings"].(map[string]any)
	if set["topic"] != "transactions" || set["kafka"].(map[string]any)["sasl_password"] != "[redacted]" {
		t.Errorf("settings = %v", set)
	}

	// No failure yet: last_failure is null, transitions an empty list.
	b.setJob(func(st *job.Status) { st.LastFailure, st.Transitions = nil, nil })
	m = do(t, s, "GET", "/api/v1/job", "", nil).json(t)
	if v, ok := m["last_failure"]; !ok || v != nil {
		t.Errorf("last_failure = %v (present %v), want null", v, ok)
	}
	if tr, ok := m["transitions"].([]any); !ok || len(tr) != 0 {
		t.Errorf("transitions = %v, want []", m["transitions"])
	}
}

func TestCheckpoints(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.stats.snapshot(pipeline.SnapshotInfo{ID: "s1", Partition: 0, Offset: 10, Trigger: t0, Pause: 1500 * time.Microsecond,
		Duration: 20 * time.Millisecond, BytesWritten: 100, TotalBytes: 1000, Mode: "incremental", Status: "completed"})
	b.stats.snapshot(pipeline.SnapshotInfo{Partition: 1, Offset: 20, Trigger: t0.Add(time.Second), Status: "failed", Error: "disk full"})
	b.stats.snapshot(pipeline.SnapshotInfo{ID: "s3", Partition: 1, Offset: 30, Trigger: t0.Add(2 * time.Second), Pause: time.Millisecond,
		Duration: 30 * time.Millisecond, BytesWritten: 200, TotalBytes: 2000, Mode: "incremental", Status: "completed"})
	b.savepoints = []checkpoint.SavepointMeta{{Name: "before-upgrade", ID: "sp1", CreatedAt: t0, Dir: "/ck/savepoints/before-upgrade",
		Partitions: []checkpoint.SavepointPartition{{Topic: "transactions", Partition: 0, Offset: 10,
			Files: []checkpoint.FileInfo{{Size: 40}, {Size: 2}}}}}}

	m := do(t, s, "GET", "/api/v1/checkpoints", "", nil).json(t)
	hist := m["history"].([]any)
	if len(hist) != 3 {
		t.Fatalf("history has %d entries, want 3", len(hist))
	}
	first := hist[0].(map[string]any) // newest first
	if first["id"] != "s3" || first["duration_ms"] != 30.0 || first["pause_ms"] != 1.0 || first["bytes_written"] != 200.0 ||
		first["total_bytes"] != 2000.0 || first["mode"] != "incremental" || first["status"] != "completed" {
		t.Errorf("history[0] = %v", first)
	}
	if last := hist[2].(map[string]any); last["pause_ms"] != 1.5 || last["trigger_time"] != "2026-01-01T00:00:00Z" {
		t.Errorf("history[2] = %v", last)
	}
	if lc := m["latest_completed"].(map[string]any); lc["id"] != "s3" {
		t.Errorf("latest_completed = %v", lc)
	}
	if lf := m["latest_failed"].(map[string]any); lf["failure_cause"] != "disk full" || lf["partition"] != 1.0 {
		t.Errorf("latest_failed = %v", lf)
	}
	if c := m["counts"].(map[string]any); c["completed"] != 2.0 || c["failed"] != 1.0 {
		t.Errorf("counts = %v", c)
	}
	sp := m["savepoints"].([]any)[0].(map[string]any)
	if sp["name"] != "before-upgrade" || sp["bytes"] != 42.0 || sp["path"] != "/ck/savepoints/before-upgrade" {
		t.Errorf("savepoint = %v", sp)
	}

	// GET /api/v1/savepoints lists them too; a listing error is a 500 there
	// and a field in /checkpoints.
	if r := do(t, s, "GET", "/api/v1/savepoints", "", nil); r.code != 200 || !strings.Contains(string(r.body), "before-upgrade") {
		t.Errorf("savepoints: %d %s", r.code, r.body)
	}
	b.spErr = errors.New("permission denied")
	wantError(t, do(t, s, "GET", "/api/v1/savepoints", "", nil), 500, "permission denied")
	if m := do(t, s, "GET", "/api/v1/checkpoints", "", nil).json(t); m["savepoints_error"] != "permission denied" {
		t.Errorf("savepoints_error = %v", m["savepoints_error"])
	}
}

func TestPartitions(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	b.stats.set(func(f *fakeStats) {
		f.counters = Counters{RecordsIn: 100, RecordsOut: 90, DeadLetters: 7, Duplicates: 3, Epochs: 5, Recoveries: 3}
		f.partitions = []pipeline.PartitionInfo{
			{Partition: 2, Committed: 60, HighWatermark: 70, Lag: 10, RecordsIn: 60, RecordsOut: 55, DeadLetters: 4, Duplicates: 1, StateBytes: 4096, RecoveredFrom: "snapshot abc", LastSnapshotOffset: 50},
			{Partition: 0, Committed: 40, HighWatermark: 45, Lag: 5, RecordsIn: 40, RecordsOut: 35, DeadLetters: 3, Duplicates: 2, RecoveredFrom: "empty", LastSnapshotOffset: -1},
		}
		f.recovering[3] = [2]int64{250, 1000}
	})
	m := do(t, s, "GET", "/api/v1/partitions", "", nil).json(t)
	if m["input_partitions"] != 4.0 {
		t.Errorf("input_partitions = %v", m["input_partitions"])
	}
	ps := m["partitions"].([]any)
	if len(ps) != 3 {
		t.Fatalf("%d partitions, want 3: %v", len(ps), ps)
	}
	p0, p2, p3 := ps[0].(map[string]any), ps[1].(map[string]any), ps[2].(map[string]any)
	if p0["partition"] != 0.0 || p2["partition"] != 2.0 || p3["partition"] != 3.0 {
		t.Fatalf("not sorted by partition: %v", ps)
	}
	for k, want := range map[string]any{"committed_offset": 60.0, "high_watermark": 70.0, "lag": 10.0, "records_in": 60.0,
		"records_out": 55.0, "records_dlq": 4.0, "duplicates": 1.0, "state_bytes": 4096.0, "recovery_source": "snapshot abc", "status": "running"} {
		if p2[k] != want {
			t.Errorf("partition 2 %s = %v, want %v", k, p2[k], want)
		}
	}
	rec := p3["recovery"].(map[string]any)
	if p3["status"] != "recovering" || rec["replayed"] != 250.0 || rec["total"] != 1000.0 || rec["progress"] != 0.25 {
		t.Errorf("partition 3 = %v", p3)
	}
	tot := m["totals"].(map[string]any)
	if tot["records_in"] != 100.0 || tot["records_out"] != 90.0 || tot["records_dlq"] != 7.0 || tot["duplicates"] != 3.0 || tot["lag"] != 15.0 {
		t.Errorf("totals = %v", tot)
	}
}

// accountFor returns an id whose Kafka partition (of n) is p.
func accountFor(t *testing.T, p, n int32) string {
	t.Helper()
	for i := 0; i < 10000; i++ {
		id := fmt.Sprintf("ACC-%03d", i)
		if PartitionForKey([]byte(id), n) == p {
			return id
		}
	}
	t.Fatalf("no account id for partition %d", p)
	return ""
}

func TestAccountQuery(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	var st aggregate.AccountState
	st.Count = 3
	if _, _, err := st.Total.SetString("12.50"); err != nil {
		t.Fatal(err)
	}
	st.Min.Set(apd.New(-5, 0))
	st.Max.Set(apd.New(1250, -2))
	st.First = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	st.Last = time.Date(2024, 1, 1, 0, 0, 2, 0, time.UTC)
	st.LastOffset = 41
	known := accountFor(t, 1, 4)
	b.stats.set(func(f *fakeStats) {
		f.state[1] = map[string][]byte{string(aggregate.AccountKey(nil, known)): st.Encode(nil)}
		f.state[2] = map[string][]byte{}
	})

	r := do(t, s, "GET", "/api/v1/state/accounts/"+known, "", nil)
	if r.code != 200 {
		t.Fatalf("known account: %d %s", r.code, r.body)
	}
	m := r.json(t)
	for k, want := range map[string]any{"account_id": known, "partition": 1.0, "count": 3.0, "total": "12.50", "min": "-5", "max": "12.50",
		"first": "2024-01-01T00:00:00Z", "last": "2024-01-01T00:00:02Z", "last_offset": 41.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}

	// Owned partition, no state: 404.
	owned := accountFor(t, 2, 4)
	e := wantError(t, do(t, s, "GET", "/api/v1/state/accounts/"+owned, "", nil), 404, owned)
	if e["partition"] != 2.0 {
		t.Errorf("404 partition = %v", e["partition"])
	}
	// Another instance's partition: 421 naming it.
	other := accountFor(t, 3, 4)
	r = do(t, s, "GET", "/api/v1/state/accounts/"+other, "", nil)
	e = wantError(t, r, http.StatusMisdirectedRequest, "partition 3")
	if e["partition"] != 3.0 || fmt.Sprint(e["owned_partitions"]) != "[1 2]" {
		t.Errorf("421 body = %v", e)
	}
	if r.header.Get("Location") != "" {
		t.Errorf("421 must not redirect")
	}
	// The owning partition is being recovered: 503 with Retry-After.
	b.stats.set(func(f *fakeStats) { f.recovering[3] = [2]int64{0, 0} })
	r = do(t, s, "GET", "/api/v1/state/accounts/"+other, "", nil)
	wantError(t, r, 503, "recovered")
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	// Found state is served even while another partition recovers.
	if r := do(t, s, "GET", "/api/v1/state/accounts/"+known, "", nil); r.code != 200 {
		t.Errorf("known account during another partition's recovery: %d", r.code)
	}
	// Job not RUNNING (restart: stores closed): 503, not 421.
	b.stats.set(func(f *fakeStats) { delete(f.recovering, 3); f.state = map[int32]map[string][]byte{} })
	b.setJob(func(s *job.Status) { s.State = job.Restarting })
	e = wantError(t, do(t, s, "GET", "/api/v1/state/accounts/"+known, "", nil), 503, "RESTARTING")
	if e["state"] != "RESTARTING" {
		t.Errorf("503 state = %v", e["state"])
	}
	// Unknown partition count: 404 for what is not here.
	b.setJob(func(s *job.Status) { s.State = job.Running })
	b.partitions = 0
	wantError(t, do(t, s, "GET", "/api/v1/state/accounts/"+other, "", nil), 404, "no committed state")
	// Lookup error: 500; escaped ids work.
	b.stats.set(func(f *fakeStats) { f.lookupErr = errors.New("pebble: closed") })
	wantError(t, do(t, s, "GET", "/api/v1/state/accounts/a%2Fb", "", nil), 500, "pebble: closed")
	// Trailing slash, no id: unknown path.
	wantError(t, do(t, s, "GET", "/api/v1/state/accounts/", "", nil), 404, "no such endpoint")
}

func TestUnknownPathsAndMethods(t *testing.T) {
	s, _ := newTest(t, "127.0.0.1:8081", "")
	for _, p := range []string{"/api/v1/nope", "/api/v2/job", "/favicon.ico", "/api/v1/job/extra"} {
		wantError(t, do(t, s, "GET", p, "", nil), 404, "no such endpoint")
	}
	cases := []struct{ method, path, allow string }{
		{"POST", "/api/v1/job", "GET, HEAD"},
		{"DELETE", "/api/v1/checkpoints", "GET, HEAD"},
		{"GET", "/api/v1/job/cancel", "POST"},
		{"PUT", "/api/v1/savepoints", "GET, HEAD, POST"},
		{"POST", "/metrics", "GET, HEAD"},
		{"POST", "/", "GET, HEAD"},
		{"PATCH", "/api/v1/state/accounts/x", "GET, HEAD"},
	}
	for _, c := range cases {
		r := do(t, s, c.method, c.path, "", nil)
		wantError(t, r, 405, "not allowed")
		if got := r.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	if r := do(t, s, "HEAD", "/api/v1/job", "", nil); r.code != 200 {
		t.Errorf("HEAD /api/v1/job: %d", r.code)
	}
	m := do(t, s, "GET", "/api/v1/", "", nil).json(t)
	if len(m["endpoints"].([]any)) < 10 {
		t.Errorf("index: %v", m)
	}
	wantError(t, do(t, s, "GET", "/api/v1/timeseries?since=x", "", nil), 400, "since")
}

func TestHealthAndReadiness(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	if r := do(t, s, "GET", "/healthz", "", nil); r.code != 200 || r.json(t)["status"] != "ok" {
		t.Errorf("healthz: %d %s", r.code, r.body)
	}
	if r := do(t, s, "GET", "/readyz", "", nil); r.code != 200 || r.json(t)["ready"] != true {
		t.Errorf("readyz running: %d %s", r.code, r.body)
	}
	b.stats.set(func(f *fakeStats) { f.recovering[1] = [2]int64{5, 10} })
	if r := do(t, s, "GET", "/readyz", "", nil); r.code != 503 || !strings.Contains(string(r.body), "recovered") {
		t.Errorf("readyz recovering: %d %s", r.code, r.body)
	}
	b.stats.set(func(f *fakeStats) { delete(f.recovering, 1) })
	b.setJob(func(s *job.Status) { s.State = job.Restarting })
	if r := do(t, s, "GET", "/readyz", "", nil); r.code != 503 || !strings.Contains(string(r.body), "RESTARTING") {
		t.Errorf("readyz restarting: %d %s", r.code, r.body)
	}
	if r := do(t, s, "GET", "/healthz", "", nil); r.code != 200 {
		t.Errorf("healthz must stay 200 while restarting: %d", r.code)
	}
}

func TestMutatingLoopbackWithoutToken(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	r := do(t, s, "POST", "/api/v1/job/cancel", "", nil)
	if r.code != http.StatusAccepted || b.cancelCount() != 1 {
		t.Fatalf("cancel: %d %s (cancels %d)", r.code, r.body, b.cancelCount())
	}
	if r := do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Host": "localhost:8081"}); r.code != 202 {
		t.Errorf("cancel via localhost: %d", r.code)
	}
	// DNS rebinding: a loopback listener reached under another name.
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Host": "evil.example:8081"}), 403, "evil.example")
	// A cross-origin browser request.
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Origin": "http://evil.example"}), 403, "cross-origin")
	if r := do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Origin": "http://127.0.0.1:8081"}); r.code != 202 {
		t.Errorf("same-origin cancel: %d %s", r.code, r.body)
	}
	if b.cancelCount() != 3 {
		t.Errorf("cancels = %d, want 3", b.cancelCount())
	}
	// A job that has ended cannot be canceled.
	b.setJob(func(s *job.Status) { s.State = job.Finished })
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", nil), 409, "FINISHED")
}

func TestMutatingOffLoopback(t *testing.T) {
	// Bound to all interfaces, no token: mutating endpoints refuse with a
	// clear message, reading still works.
	s, b := newTest(t, "0.0.0.0:8081", "")
	for _, p := range []string{"/api/v1/job/cancel", "/api/v1/savepoints"} {
		wantError(t, do(t, s, "POST", p, "", map[string]string{"Host": "10.0.0.5:8081"}), 403, "--http-token")
	}
	if b.cancelCount() != 0 {
		t.Errorf("cancel called")
	}
	if r := do(t, s, "GET", "/api/v1/job", "", map[string]string{"Host": "10.0.0.5:8081"}); r.code != 200 {
		t.Errorf("GET off loopback: %d", r.code)
	}

	// With a token: 401 without or with a wrong one, 202 with the right one.
	s, b = newTest(t, "0.0.0.0:8081", "s3cret")
	r := do(t, s, "POST", "/api/v1/job/cancel", "", nil)
	wantError(t, r, 401, "bearer token")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Authorization": "Bearer wrong"}), 401, "bearer token")
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Authorization": "Basic czNjcmV0"}), 401, "bearer token")
	if b.cancelCount() != 0 {
		t.Fatalf("cancel called without the token")
	}
	r = do(t, s, "POST", "/api/v1/job/cancel", "", map[string]string{"Authorization": "Bearer s3cret", "Host": "10.0.0.5:8081"})
	if r.code != 202 || b.cancelCount() != 1 {
		t.Errorf("cancel with token: %d %s", r.code, r.body)
	}
	// A token set on loopback is required there too.
	s, _ = newTest(t, "127.0.0.1:8081", "s3cret")
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", nil), 401, "bearer token")
}

func TestSavepointTrigger(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	var got string
	b.trigger = func(ctx context.Context, name string) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("savepoint context has no deadline")
		}
		got = name
		return map[string]any{"name": name, "path": "/ck/savepoints/" + name}, nil
	}
	r := do(t, s, "POST", "/api/v1/savepoints", `{"name":"before-upgrade"}`, map[string]string{"Content-Type": "application/json"})
	if r.code != 200 || got != "before-upgrade" {
		t.Fatalf("savepoint: %d %s (name %q)", r.code, r.body, got)
	}
	if sp := r.json(t)["savepoint"].(map[string]any); sp["path"] != "/ck/savepoints/before-upgrade" {
		t.Errorf("savepoint answer = %v", sp)
	}
	if r := do(t, s, "POST", "/api/v1/savepoints", "", nil); r.code != 200 || got != "" {
		t.Errorf("savepoint without body: %d (name %q)", r.code, got)
	}
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"name":`, nil), 400, "JSON")
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"nmae":"x"}`, nil), 400, "unknown field")
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"name":"`+strings.Repeat("x", maxBodyBytes)+`"}`, nil), 413, "too large")

	b.trigger = func(context.Context, string) (any, error) { return nil, errors.New("disk full") }
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"name":"y"}`, nil), 500, "disk full")
	b.trigger = func(context.Context, string) (any, error) {
		return nil, fmt.Errorf("%w: savepoint y exists", ErrConflict)
	}
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"name":"y"}`, nil), 409, "exists")

	b.setJob(func(s *job.Status) { s.State = job.Restarting })
	wantError(t, do(t, s, "POST", "/api/v1/savepoints", `{"name":"z"}`, nil), 409, "RESTARTING")
}

func TestTimeseries(t *testing.T) {
	s, b := newTest(t, "127.0.0.1:8081", "")
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < 5; i++ {
		b.stats.set(func(f *fakeStats) {
			f.counters.RecordsIn, f.counters.RecordsOut = int64(i*100), int64(i*90)
			f.partitions = []pipeline.PartitionInfo{{Partition: 0, Lag: int64(i)}, {Partition: 1, Lag: 1}}
		})
		s.sample(t0.Add(time.Duration(i) * time.Second))
	}
	m := do(t, s, "GET", "/api/v1/timeseries", "", nil).json(t)
	ss := m["samples"].([]any)
	if len(ss) != 5 || m["interval_ms"] != 1000.0 {
		t.Fatalf("samples: %v", m)
	}
	last := ss[4].(map[string]any)
	if last["in"] != 400.0 || last["out"] != 360.0 || last["lag"] != 5.0 || last["in_rate"] != 100.0 || last["out_rate"] != 90.0 || last["state"] != "RUNNING" {
		t.Errorf("last sample = %v", last)
	}
	m = do(t, s, "GET", fmt.Sprintf("/api/v1/timeseries?since=%d", t0.Add(2*time.Second).UnixMilli()), "", nil).json(t)
	if n := len(m["samples"].([]any)); n != 2 {
		t.Errorf("since: %d samples, want 2", n)
	}
	// No partition owned (restarting): lag unknown, null, not 0.
	b.stats.set(func(f *fakeStats) { f.partitions = nil })
	s.sample(t0.Add(10 * time.Second))
	m = do(t, s, "GET", fmt.Sprintf("/api/v1/timeseries?since=%d", t0.Add(5*time.Second).UnixMilli()), "", nil).json(t)
	if ss := m["samples"].([]any); len(ss) != 1 || ss[0].(map[string]any)["lag"] != nil {
		t.Errorf("sample without partitions = %v, want lag null", ss)
	}
}

func TestSeriesRing(t *testing.T) {
	r := newSeries(3)
	if got := r.since(0); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := int64(1); i <= 5; i++ {
		r.add(Sample{T: i * 1000, In: i * 10})
	}
	got := r.since(0)
	if len(got) != 3 || got[0].T != 3000 || got[2].T != 5000 {
		t.Fatalf("ring after wrap: %+v", got)
	}
	if got[2].InRate != 10 {
		t.Errorf("rate = %v, want 10", got[2].InRate)
	}
	if got := r.since(4000); len(got) != 1 || got[0].T != 5000 {
		t.Errorf("since(4000) = %+v", got)
	}
}

func TestDashboard(t *testing.T) {
	s, _ := newTest(t, "127.0.0.1:8081", "")
	r := do(t, s, "GET", "/", "", nil)
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("dashboard: %d %s", r.code, r.header.Get("Content-Type"))
	}
	body := string(r.body)
	for _, want := range []string{`src="/assets/app.js"`, `href="/assets/app.css"`, `id="state"`} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
	// Works offline: nothing is loaded from another origin.
	for _, bad := range []string{"http://", "https://", "//cdn", "fonts.googleapis"} {
		for _, f := range []string{"/", "/assets/app.js", "/assets/app.css"} {
			b := do(t, s, "GET", f, "", nil).body
			if strings.Contains(strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", ""), bad) {
				t.Errorf("%s references %q", f, bad)
			}
		}
	}
	csp := r.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
	if r := do(t, s, "GET", "/assets/app.js", "", nil); r.code != 200 || !strings.Contains(r.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %s", r.code, r.header.Get("Content-Type"))
	}
	wantError(t, do(t, s, "GET", "/assets/nope.js", "", nil), 404, "")
}

func TestStartStop(t *testing.T) {
	b := newFakeBackend()
	s, err := New(Config{Addr: "127.0.0.1:0", Backend: b, SampleInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := s.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("readyz: %d", code)
	}
	// The sampler runs.
	deadline := time.Now().Add(5 * time.Second)
	for len(s.series.since(0)) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(s.series.since(0)); n < 3 {
		t.Errorf("%d samples after sampling for a while", n)
	}
	// The job's context ends: the server keeps answering (the dashboard
	// shows the drain) but is not ready.
	cancel()
	deadline = time.Now().Add(5 * time.Second)
	for {
		code, body := get("/readyz")
		if code == 503 && strings.Contains(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after cancel: %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.srv.ReadHeaderTimeout == 0 || s.srv.WriteTimeout == 0 || s.srv.MaxHeaderBytes == 0 || s.srv.IdleTimeout == 0 {
		t.Errorf("server timeouts/limits not set")
	}
	s.Stop()
	if _, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		t.Errorf("server still answers after Stop")
	}
	s.Stop() // idempotent
}

func TestStartBindsOffLoopback(t *testing.T) {
	// Port 0 on all interfaces: the listener decides, not the string.
	s, err := New(Config{Addr: ":0", Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(context.Background()); err != nil {
		t.Skip("cannot listen on all interfaces here:", err)
	}
	defer s.Stop()
	wantError(t, do(t, s, "POST", "/api/v1/job/cancel", "", nil), 403, "not a loopback address")
}

func TestPipelineStatsAdapter(t *testing.T) {
	ps := pipeline.NewStats()
	ps.RecordsIn.Add(5)
	ps.RecordsOut.Add(4)
	ps.DeadLetters.Add(1)
	ps.Duplicates.Add(2)
	ps.SnapshotFailures.Add(3)
	st := PipelineStats(ps)
	if c := st.Counters(); c.RecordsIn != 5 || c.RecordsOut != 4 || c.DeadLetters != 1 || c.Duplicates != 2 || c.SnapshotFailures != 3 {
		t.Errorf("counters = %+v", c)
	}
	r, err := st.Lookup(aggregate.AccountKey(nil, "x"))
	if err != nil || r.Found || len(r.Owned) != 0 {
		t.Errorf("lookup on empty stats = %+v, %v", r, err)
	}
}

func TestKafkaHooksSurviveClientRestarts(t *testing.T) {
	s, _ := newTest(t, "127.0.0.1:8081", "")
	for i := 0; i < 3; i++ {
		cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(s.KafkaHooks()))
		if err != nil {
			t.Fatal(err)
		}
		if !hasFamily(t, s, "txstream_kafka_buffered_fetch_bytes") {
			t.Errorf("client %d: no txstream_kafka_ metrics", i)
		}
		cl.Close()
	}
	// Two clients at once (should not happen) must not panic either.
	a, _ := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(s.KafkaHooks()))
	c, _ := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(s.KafkaHooks()))
	a.Close()
	c.Close()
}
