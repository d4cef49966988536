package status

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

// The handlers' contract: every answer of every endpoint, produced here
// with the fake backend, is validated against openapi.yaml (status code,
// headers, body schema; the schemas forbid fields they do not name), and
// every response the document names must have been produced. A handler
// whose answer drifts from the document, or a document response no
// handler gives, fails the test.

// contract validates answers against the embedded document and records
// which documented responses were seen.
type contract struct {
	doc    *openapi3.T
	router routers.Router
	seen   map[string]bool // "GET /api/v1/job 200"
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDoc)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	// Match requests whatever their host (the document names one server).
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{doc: doc, router: router, seen: map[string]bool{}}
}

// validate checks one answer to method target against the document.
func (c *contract) validate(method, target string, r reply) error {
	lookup := method
	if method == http.MethodHead {
		lookup = http.MethodGet // HEAD is served as GET, without a body
	}
	req := httptest.NewRequest(lookup, target, nil)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("%s %s is not in the document: %w", method, target, err)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
		ExcludeResponseBody: method == http.MethodHead}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 r.code,
		Header:                 r.header,
		Body:                   io.NopCloser(bytes.NewReader(r.body)),
		Options:                opts,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return err
	}
	c.seen[fmt.Sprintf("%s %s %d", route.Method, route.Path, r.code)] = true
	return nil
}

// call sends a request through s's handler and validates the answer;
// wantCode guards against exercising another branch than intended.
func (c *contract) call(t *testing.T, s *Server, method, target, body string, hdr map[string]string, wantCode int) reply {
	t.Helper()
	r := do(t, s, method, target, body, hdr)
	if r.code != wantCode {
		t.Fatalf("%s %s: status %d, want %d: %s", method, target, r.code, wantCode, r.body)
	}
	if err := c.validate(method, target, r); err != nil {
		t.Errorf("%s %s -> %d does not match openapi.yaml:\n%v\nbody: %s", method, target, r.code, err, r.body)
	}
	return r
}

// testAccountFor returns an account id that Kafka's default partitioner
// puts on partition p of n.
func testAccountFor(t *testing.T, p, n int32) string {
	t.Helper()
	for i := 0; i < 100000; i++ {
		id := fmt.Sprintf("ACC-%d", i)
		if PartitionForKey([]byte(id), n) == p {
			return id
		}
	}
	t.Fatalf("no account id for partition %d of %d", p, n)
	return ""
}

func TestOpenAPIContract(t *testing.T) {
	c := loadContract(t)
	s, b := newTest(t, "127.0.0.1:8081", "")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	// Index and the document itself.
	c.call(t, s, "GET", "/api/v1/", "", nil, 200)
	c.call(t, s, "GET", "/api/v1/?pretty", "", nil, 200)
	doc := c.call(t, s, "GET", "/api/v1/openapi.yaml", "", nil, 200)
	if !bytes.Equal(doc.body, openAPIDoc) || !strings.HasPrefix(doc.header.Get("Content-Type"), "application/yaml") {
		t.Errorf("GET /api/v1/openapi.yaml: Content-Type %q, %d bytes; want the embedded document", doc.header.Get("Content-Type"), len(doc.body))
	}

	// Job: a fresh RUNNING job, then RESTARTING after a failure on a record.
	c.call(t, s, "GET", "/api/v1/job", "", nil, 200)
	c.call(t, s, "HEAD", "/api/v1/job", "", nil, 200)
	b.setJob(func(st *job.Status) {
		st.State, st.Attempt, st.Restarts = job.Restarting, 2, 1
		next := t0.Add(5 * time.Second)
		st.NextRestart = &next
		st.LastFailure = &job.Failure{Err: errors.New("boom"), Time: t0, Attempt: 1, Topic: "transactions", Partition: 2, Offset: 77, HasRecord: true}
		st.Transitions = []job.Transition{{From: job.Created, To: job.Running, Time: t0.Add(-time.Minute), Attempt: 1},
			{From: job.Running, To: job.Restarting, Time: t0, Attempt: 1, Cause: errors.New("boom"), Delay: 5 * time.Second}}
	})
	c.call(t, s, "GET", "/api/v1/job?pretty", "", nil, 200)
	b.setJob(func(st *job.Status) {
		st.LastFailure = &job.Failure{Err: errors.New("bad settings"), Time: t0, Attempt: 2} // no record
	})
	c.call(t, s, "GET", "/api/v1/job", "", nil, 200)

	// Not RUNNING: readiness, savepoints and state queries refuse.
	c.call(t, s, "GET", "/readyz", "", nil, 503)
	c.call(t, s, "GET", "/healthz", "", nil, 200)
	c.call(t, s, "POST", "/api/v1/savepoints", "", nil, 409)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+testAccountFor(t, 1, 4), "", nil, 503)
	b.setJob(func(st *job.Status) { st.State, st.NextRestart = job.Running, nil })

	// Checkpoints: none yet, then a history with a failure and a savepoint.
	c.call(t, s, "GET", "/api/v1/checkpoints", "", nil, 200)
	b.stats.snapshot(pipeline.SnapshotInfo{ID: "s1", Partition: 0, Offset: 10, Trigger: t0, Pause: 1500 * time.Microsecond,
		Duration: 20 * time.Millisecond, BytesWritten: 100, TotalBytes: 1000, Mode: "full", Status: "completed"})
	b.stats.snapshot(pipeline.SnapshotInfo{Partition: 1, Offset: 20, Trigger: t0.Add(time.Second), Status: "failed", Error: "disk full"})
	b.stats.snapshot(pipeline.SnapshotInfo{ID: "s3", Partition: 1, Offset: 30, Trigger: t0.Add(2 * time.Second), Pause: time.Millisecond,
		Duration: 30 * time.Millisecond, BytesWritten: 200, TotalBytes: 2000, Mode: "incremental", Status: "completed"})
	sp := checkpoint.SavepointMeta{Format: 1, Name: "before-upgrade", ID: "sp1", CreatedAt: t0, Dir: "/ck/savepoints/before-upgrade",
		Partitions: []checkpoint.SavepointPartition{{Topic: "transactions", Partition: 0, Offset: 10, Dir: "transactions-0",
			Files: []checkpoint.FileInfo{{Name: "000001.sst", Size: 40, CRC32C: 7}, {Name: "MANIFEST", Size: 2}}}},
		Job: map[string]string{"topic": "transactions"}}
	b.mu.Lock()
	b.savepoints = []checkpoint.SavepointMeta{sp}
	b.mu.Unlock()
	c.call(t, s, "GET", "/api/v1/checkpoints?pretty", "", nil, 200)
	c.call(t, s, "GET", "/api/v1/savepoints", "", nil, 200)
	b.mu.Lock()
	b.spErr = errors.New("permission denied")
	b.mu.Unlock()
	c.call(t, s, "GET", "/api/v1/savepoints", "", nil, 500)
	c.call(t, s, "GET", "/api/v1/checkpoints", "", nil, 200) // with savepoints_error
	b.mu.Lock()
	b.spErr = nil
	b.mu.Unlock()

	// Triggering a savepoint: taken, conflicting, failed, bad body, body
	// too large.
	setTrigger := func(f func(ctx context.Context, name string) (any, error)) {
		b.mu.Lock()
		b.trigger = f
		b.mu.Unlock()
	}
	setTrigger(func(_ context.Context, name string) (any, error) { sp.Name = name; return sp, nil })
	c.call(t, s, "POST", "/api/v1/savepoints", `{"name": "before-upgrade"}`, map[string]string{"Content-Type": "application/json"}, 200)
	c.call(t, s, "POST", "/api/v1/savepoints?name=from-query", "", nil, 200)
	setTrigger(func(context.Context, string) (any, error) {
		return nil, fmt.Errorf("%w: savepoint %q exists", ErrConflict, "before-upgrade")
	})
	c.call(t, s, "POST", "/api/v1/savepoints", `{"name": "before-upgrade"}`, nil, 409)
	setTrigger(func(context.Context, string) (any, error) { return nil, errors.New("disk full") })
	c.call(t, s, "POST", "/api/v1/savepoints", "", nil, 500)
	c.call(t, s, "POST", "/api/v1/savepoints", `{"nam": "typo"}`, nil, 400)
	c.call(t, s, "POST", "/api/v1/savepoints", `{"name": "`+strings.Repeat("x", maxBodyBytes)+`"}`, nil, 413)

	// Partitions: one running, one recovering with an entry of its own, one
	// recovering without.
	b.stats.set(func(f *fakeStats) {
		f.counters = Counters{RecordsIn: 100, RecordsOut: 90, DeadLetters: 2, Duplicates: 8, Epochs: 7, Recoveries: 1}
		f.partitions = []pipeline.PartitionInfo{
			{Partition: 0, Committed: 60, HighWatermark: 65, Lag: 5, RecordsIn: 60, RecordsOut: 55, DeadLetters: 1, Duplicates: 4,
				StateBytes: 4096, RecoveredFrom: "snapshot s1", LastSnapshotOffset: 10},
			{Partition: 2, Committed: 40, HighWatermark: 40, RecoveredFrom: "empty", LastSnapshotOffset: -1},
		}
		f.recovering = map[int32][2]int64{2: {5, 10}, 3: {0, 0}}
	})
	c.call(t, s, "GET", "/api/v1/partitions", "", nil, 200)
	c.call(t, s, "GET", "/readyz", "", nil, 503) // recovering
	b.stats.set(func(f *fakeStats) { f.recovering = map[int32][2]int64{} })
	c.call(t, s, "GET", "/api/v1/partitions?pretty", "", nil, 200)
	c.call(t, s, "GET", "/readyz", "", nil, 200)

	// State queries: found; owned but unknown; another instance's;
	// recovering; unreadable; a bad id.
	var st aggregate.AccountState
	st.Count = 3
	if _, _, err := st.Total.SetString("12.50"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Min.SetString("-1.25"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Max.SetString("10"); err != nil {
		t.Fatal(err)
	}
	st.First, st.Last, st.LastOffset = t0, t0.Add(time.Hour), 41
	known, unknown, elsewhere, broken := testAccountFor(t, 1, 4), testAccountFor(t, 2, 4), testAccountFor(t, 3, 4), "ACC-broken"
	b.stats.set(func(f *fakeStats) {
		f.state[1] = map[string][]byte{
			string(aggregate.AccountKey(nil, known)):  st.Encode(nil),
			string(aggregate.AccountKey(nil, broken)): {0xff},
		}
		f.state[2] = map[string][]byte{}
	})
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(known), "", nil, 200)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(known)+"?pretty", "", nil, 200)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(broken), "", nil, 500)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(unknown), "", nil, 404)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(elsewhere), "", nil, 421)
	c.call(t, s, "GET", "/api/v1/state/accounts/"+strings.Repeat("a", 1025), "", nil, 400)
	b.stats.set(func(f *fakeStats) { f.recovering = map[int32][2]int64{2: {1, 2}} })
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(unknown), "", nil, 503)
	b.mu.Lock()
	b.partitions = 0 // partition count unknown
	b.mu.Unlock()
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(unknown), "", nil, 503)
	b.stats.set(func(f *fakeStats) { f.recovering = map[int32][2]int64{} })
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(unknown), "", nil, 404)
	b.mu.Lock()
	b.partitions = 4
	b.mu.Unlock()
	b.stats.set(func(f *fakeStats) { f.lookupErr = errors.New("pebble: closed") })
	c.call(t, s, "GET", "/api/v1/state/accounts/"+url.PathEscape(known), "", nil, 500)
	b.stats.set(func(f *fakeStats) { f.lookupErr = nil })

	// Time series: empty, then samples with and without a known lag.
	c.call(t, s, "GET", "/api/v1/timeseries", "", nil, 200)
	s.sample(t0)
	b.stats.set(func(f *fakeStats) { f.partitions = nil })
	s.sample(t0.Add(time.Second))
	c.call(t, s, "GET", "/api/v1/timeseries", "", nil, 200)
	c.call(t, s, "GET", fmt.Sprintf("/api/v1/timeseries?since=%d&pretty", t0.UnixMilli()), "", nil, 200)
	c.call(t, s, "GET", "/api/v1/timeseries?since=yesterday", "", nil, 400)

	c.call(t, s, "GET", "/metrics", "", nil, 200)

	// Cancel: accepted, then refused once the job has ended.
	c.call(t, s, "POST", "/api/v1/job/cancel", "", nil, 202)
	b.setJob(func(st *job.Status) { st.State = job.Canceled })
	c.call(t, s, "POST", "/api/v1/job/cancel", "", nil, 409)
	c.call(t, s, "GET", "/healthz", "", nil, 200)

	// The security model's refusals: a token required (401), off loopback
	// without a token (403), a cross-origin request (403).
	tok, _ := newTest(t, "127.0.0.1:8081", "s3cret")
	c.call(t, tok, "POST", "/api/v1/job/cancel", "", nil, 401)
	c.call(t, tok, "POST", "/api/v1/savepoints", "", map[string]string{"Authorization": "Bearer wrong"}, 401)
	c.call(t, tok, "POST", "/api/v1/job/cancel", "", map[string]string{"Authorization": "Bearer s3cret"}, 202)
	open, _ := newTest(t, "0.0.0.0:8081", "")
	c.call(t, open, "POST", "/api/v1/job/cancel", "", nil, 403)
	c.call(t, open, "POST", "/api/v1/savepoints", "", nil, 403)
	c.call(t, s, "POST", "/api/v1/savepoints", "", map[string]string{"Origin": "http://evil.example"}, 403)

	// Every response the document names was produced and matched.
	var missing []string
	for path, item := range c.doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code := range op.Responses.Map() {
				if key := fmt.Sprintf("%s %s %s", method, path, code); !c.seen[key] {
					missing = append(missing, key)
				}
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("responses in openapi.yaml that no request of this test produced (exercise them, or drop them from the document):\n%s",
			strings.Join(missing, "\n"))
	}
}

// TestOpenAPIIndex: GET /api/v1/ and the document list the same endpoints.
func TestOpenAPIIndex(t *testing.T) {
	c := loadContract(t)
	inDoc := map[string]bool{}
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			inDoc[method+" "+path] = true
		}
	}
	inIndex := map[string]bool{}
	for _, e := range endpoints {
		k := e["method"] + " " + e["path"]
		inIndex[k] = true
		if !inDoc[k] {
			t.Errorf("GET /api/v1/ lists %s, which openapi.yaml does not describe", k)
		}
	}
	for k := range inDoc {
		if !inIndex[k] && k != "GET /api/v1/" {
			t.Errorf("openapi.yaml describes %s, which GET /api/v1/ does not list", k)
		}
	}
}

// TestOpenAPIRejectsDrift makes sure the validation has teeth: answers
// that differ from the document in a field, a type, a missing field or the
// status code are rejected.
func TestOpenAPIRejectsDrift(t *testing.T) {
	c := loadContract(t)
	s, _ := newTest(t, "127.0.0.1:8081", "")
	good := do(t, s, "GET", "/healthz", "", nil)
	if err := c.validate("GET", "/healthz", good); err != nil {
		t.Fatalf("the real answer is rejected: %v", err)
	}
	jsonHdr := good.header
	for name, r := range map[string]reply{
		"unknown field":   {code: 200, header: jsonHdr, body: []byte(`{"status":"ok","state":"RUNNING","extra":1}`)},
		"missing field":   {code: 200, header: jsonHdr, body: []byte(`{"status":"ok"}`)},
		"wrong type":      {code: 200, header: jsonHdr, body: []byte(`{"status":"ok","state":1}`)},
		"not an enum":     {code: 200, header: jsonHdr, body: []byte(`{"status":"ok","state":"SLEEPING"}`)},
		"undocumented":    {code: 500, header: jsonHdr, body: []byte(`{"error":"x","status":500}`)},
		"not JSON at all": {code: 200, header: http.Header{"Content-Type": {"text/html"}}, body: []byte(`<html>`)},
	} {
		if err := c.validate("GET", "/healthz", r); err == nil {
			t.Errorf("%s: accepted %d %s", name, r.code, r.body)
		}
	}
	job := do(t, s, "GET", "/api/v1/job", "", nil)
	job.body = bytes.Replace(job.body, []byte(`"draining":false`), []byte(`"draining":"no"`), 1)
	if err := c.validate("GET", "/api/v1/job", job); err == nil {
		t.Errorf("a job answer with draining as a string is accepted: %s", job.body)
	}
}
