package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/pipeline"
)

// endpoints is the index served at GET /api/v1/.
var endpoints = []map[string]string{
	{"method": "GET", "path": "/api/v1/job", "what": "job state, attempts, restarts, last failure, uptime, version, settings"},
	{"method": "POST", "path": "/api/v1/job/cancel", "what": "stop the job gracefully (drain, commit, final snapshot)"},
	{"method": "GET", "path": "/api/v1/checkpoints", "what": "snapshot history, latest completed/failed, savepoints"},
	{"method": "GET", "path": "/api/v1/savepoints", "what": "savepoints in the checkpoint directory"},
	{"method": "POST", "path": "/api/v1/savepoints", "what": "trigger a savepoint ({\"name\": \"...\"})"},
	{"method": "GET", "path": "/api/v1/partitions", "what": "owned partitions: offsets, lag, counts, state size, recovery"},
	{"method": "GET", "path": "/api/v1/state/accounts/{id}", "what": "committed aggregate of one account"},
	{"method": "GET", "path": "/api/v1/timeseries", "what": "recent samples of totals and lag (?since=<unix ms>)"},
	{"method": "GET", "path": "/metrics", "what": "Prometheus metrics"},
	{"method": "GET", "path": "/healthz", "what": "process alive"},
	{"method": "GET", "path": "/readyz", "what": "job RUNNING and no partition recovering"},
}

func (s *Server) getIndex(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]any{"endpoints": endpoints})
}

// failureJSON is the last failure, flattened.
type failureJSON struct {
	Cause     string    `json:"cause"`
	Time      time.Time `json:"time"`
	Attempt   int       `json:"attempt"`
	Permanent bool      `json:"permanent"`
	Topic     string    `json:"topic,omitempty"`
	Partition *int32    `json:"partition,omitempty"`
	Offset    *int64    `json:"offset,omitempty"`
}

func failureOf(f *job.Failure) *failureJSON {
	if f == nil {
		return nil
	}
	out := &failureJSON{Time: f.Time, Attempt: f.Attempt, Permanent: job.IsPermanent(f.Err)}
	if f.Err != nil {
		out.Cause = f.Err.Error()
	}
	if f.HasRecord {
		p, o := f.Partition, f.Offset
		out.Topic, out.Partition, out.Offset = f.Topic, &p, &o
	}
	return out
}

type jobJSON struct {
	State           job.State        `json:"state"`
	Since           time.Time        `json:"since"`
	StateSeconds    float64          `json:"state_seconds"`
	Attempt         int              `json:"attempt"`
	Restarts        int              `json:"restarts"`
	RestartStrategy string           `json:"restart_strategy"`
	NextRestart     *time.Time       `json:"next_restart,omitempty"`
	LastFailure     *failureJSON     `json:"last_failure"`
	Transitions     []job.Transition `json:"transitions"`
	Started         time.Time        `json:"started"`
	UptimeSeconds   float64          `json:"uptime_seconds"`
	Version         string           `json:"version"`
	Now             time.Time        `json:"now"`
	Draining        bool             `json:"draining"`
	Settings        map[string]any   `json:"settings"`
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	js := s.b.Job()
	now := time.Now()
	tr := js.Transitions
	if tr == nil {
		tr = []job.Transition{}
	}
	settings := s.cfg.Settings
	if settings == nil {
		settings = map[string]any{}
	}
	writeJSON(w, r, http.StatusOK, jobJSON{
		State: js.State, Since: js.Since, StateSeconds: seconds(now.Sub(js.Since)),
		Attempt: js.Attempt, Restarts: js.Restarts, RestartStrategy: js.Strategy,
		NextRestart: js.NextRestart, LastFailure: failureOf(js.LastFailure), Transitions: tr,
		Started: s.cfg.Started, UptimeSeconds: seconds(now.Sub(s.cfg.Started)), Version: s.cfg.Version,
		Now: now, Draining: s.draining.Load(), Settings: settings,
	})
}

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }
func millis(d time.Duration) float64  { return float64(d.Microseconds()) / 1000 }

// snapshotJSON is one snapshot of the history.
type snapshotJSON struct {
	ID           string    `json:"id,omitempty"`
	Partition    int32     `json:"partition"`
	Offset       int64     `json:"offset"`
	TriggerTime  time.Time `json:"trigger_time"`
	PauseMS      float64   `json:"pause_ms"`
	DurationMS   float64   `json:"duration_ms"`
	BytesWritten int64     `json:"bytes_written"`
	TotalBytes   int64     `json:"total_bytes"`
	Mode         string    `json:"mode,omitempty"`
	Status       string    `json:"status"`
	FailureCause string    `json:"failure_cause,omitempty"`
}

func snapshotOf(si pipeline.SnapshotInfo) snapshotJSON {
	return snapshotJSON{ID: si.ID, Partition: si.Partition, Offset: si.Offset, TriggerTime: si.Trigger,
		PauseMS: millis(si.Pause), DurationMS: millis(si.Duration), BytesWritten: si.BytesWritten,
		TotalBytes: si.TotalBytes, Mode: si.Mode, Status: si.Status, FailureCause: si.Error}
}

// snapCounts counts snapshot results since the server started.
type snapCounts struct {
	mu                sync.Mutex
	completed, failed int64
}

func (c *snapCounts) add(si pipeline.SnapshotInfo) {
	c.mu.Lock()
	if si.Status == "failed" {
		c.failed++
	} else {
		c.completed++
	}
	c.mu.Unlock()
}

func (c *snapCounts) get() (completed, failed int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.completed, c.failed
}

type savepointJSON struct {
	Name       string                   `json:"name"`
	ID         string                   `json:"id"`
	CreatedAt  time.Time                `json:"created_at"`
	Path       string                   `json:"path"`
	Bytes      int64                    `json:"bytes"`
	Partitions []savepointPartitionJSON `json:"partitions"`
}

type savepointPartitionJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Bytes     int64  `json:"bytes"`
}

func savepointsOf(sps []checkpoint.SavepointMeta) []savepointJSON {
	out := make([]savepointJSON, 0, len(sps))
	for _, sp := range sps {
		j := savepointJSON{Name: sp.Name, ID: sp.ID, CreatedAt: sp.CreatedAt, Path: sp.Dir, Bytes: sp.Bytes(),
			Partitions: make([]savepointPartitionJSON, 0, len(sp.Partitions))}
		for _, p := range sp.Partitions {
			j.Partitions = append(j.Partitions, savepointPartitionJSON{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset, Bytes: p.Bytes()})
		}
		out = append(out, j)
	}
	return out
}

type checkpointsJSON struct {
	Counts struct {
		Completed int64 `json:"completed"`
		Failed    int64 `json:"failed"`
	} `json:"counts"`
	LatestCompleted *snapshotJSON   `json:"latest_completed"`
	LatestFailed    *snapshotJSON   `json:"latest_failed"`
	History         []snapshotJSON  `json:"history"`
	Savepoints      []savepointJSON `json:"savepoints"`
	SavepointsError string          `json:"savepoints_error,omitempty"`
}

func (s *Server) getCheckpoints(w http.ResponseWriter, r *http.Request) {
	st := s.b.Stats()
	hist := st.Snapshots() // oldest first
	var out checkpointsJSON
	out.Counts.Completed, _ = s.snaps.get()
	out.Counts.Failed = st.Counters().SnapshotFailures
	out.History = make([]snapshotJSON, 0, len(hist))
	for i := len(hist) - 1; i >= 0; i-- { // newest first
		sj := snapshotOf(hist[i])
		out.History = append(out.History, sj)
		if sj.Status == "failed" && out.LatestFailed == nil {
			out.LatestFailed = &sj
		} else if sj.Status != "failed" && out.LatestCompleted == nil {
			out.LatestCompleted = &sj
		}
	}
	sps, err := s.b.Savepoints()
	if err != nil {
		out.SavepointsError = err.Error()
	}
	out.Savepoints = savepointsOf(sps)
	writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) getSavepoints(w http.ResponseWriter, r *http.Request) {
	sps, err := s.b.Savepoints()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"savepoints": savepointsOf(sps)})
}

func (s *Server) postSavepoint(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large or unreadable: "+err.Error(), nil)
		return
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, `body must be JSON like {"name": "before-upgrade"}: `+err.Error(), nil)
			return
		}
	}
	if n := r.URL.Query().Get("name"); n != "" && req.Name == "" {
		req.Name = n
	}
	if js := s.b.Job(); js.State != job.Running {
		writeError(w, http.StatusConflict, fmt.Sprintf("a savepoint needs a RUNNING job; the job is %s", js.State), map[string]any{"state": js.State})
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(savepointTimeout + 10*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), savepointTimeout)
	defer cancel()
	res, err := s.b.TriggerSavepoint(ctx, req.Name)
	switch {
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error(), nil)
	case err != nil:
		s.log.Warn("savepoint over HTTP failed", zap.String("name", req.Name), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "savepoint failed: "+err.Error(), nil)
	default:
		s.log.Info("savepoint taken over HTTP", zap.String("name", req.Name))
		writeJSON(w, r, http.StatusOK, map[string]any{"savepoint": res})
	}
}

func (s *Server) postCancel(w http.ResponseWriter, r *http.Request) {
	js := s.b.Job()
	if js.State.Terminal() {
		writeError(w, http.StatusConflict, fmt.Sprintf("the job has already ended (%s)", js.State), map[string]any{"state": js.State})
		return
	}
	s.log.Info("job cancel requested over HTTP", zap.String("remote", r.RemoteAddr))
	s.b.Cancel()
	writeJSON(w, r, http.StatusAccepted, map[string]any{
		"state":   js.State,
		"message": "cancel requested: the job commits its open epoch, takes a final snapshot and ends CANCELED",
	})
}

type recoveryJSON struct {
	Replayed int64   `json:"replayed"`
	Total    int64   `json:"total"`
	Progress float64 `json:"progress"` // 0..1
}

type partitionJSON struct {
	pipeline.PartitionInfo
	Status   string        `json:"status"` // running or recovering
	Recovery *recoveryJSON `json:"recovery,omitempty"`
}

type totalsJSON struct {
	RecordsIn     int64 `json:"records_in"`
	RecordsOut    int64 `json:"records_out"`
	DeadLetters   int64 `json:"records_dlq"`
	Duplicates    int64 `json:"duplicates"`
	Epochs        int64 `json:"epochs"`
	EpochsAborted int64 `json:"epochs_aborted"`
	Recoveries    int64 `json:"recoveries"`
	Lag           int64 `json:"lag"`
}

func (s *Server) getPartitions(w http.ResponseWriter, r *http.Request) {
	st := s.b.Stats()
	c := st.Counters()
	rec := st.Recovering()
	parts := st.Partitions()
	out := make([]partitionJSON, 0, len(parts)+len(rec))
	seen := map[int32]bool{}
	t := totalsJSON{RecordsIn: c.RecordsIn, RecordsOut: c.RecordsOut, DeadLetters: c.DeadLetters, Duplicates: c.Duplicates,
		Epochs: c.Epochs, EpochsAborted: c.EpochsAborted, Recoveries: c.Recoveries}
	for _, p := range parts {
		seen[p.Partition] = true
		t.Lag += p.Lag
		pj := partitionJSON{PartitionInfo: p, Status: "running"}
		if v, ok := rec[p.Partition]; ok {
			pj.Status, pj.Recovery = "recovering", recoveryOf(v)
		}
		out = append(out, pj)
	}
	for p, v := range rec {
		if !seen[p] {
			out = append(out, partitionJSON{PartitionInfo: pipeline.PartitionInfo{Partition: p, LastSnapshotOffset: -1},
				Status: "recovering", Recovery: recoveryOf(v)})
		}
	}
	slices.SortFunc(out, func(a, b partitionJSON) int { return int(a.Partition) - int(b.Partition) })
	writeJSON(w, r, http.StatusOK, map[string]any{
		"input_partitions": s.b.InputPartitions(),
		"partitions":       out,
		"totals":           t,
	})
}

func recoveryOf(v [2]int64) *recoveryJSON {
	rj := &recoveryJSON{Replayed: v[0], Total: v[1]}
	if v[1] > 0 {
		rj.Progress = min(1, float64(v[0])/float64(v[1]))
	}
	return rj
}

type accountJSON struct {
	AccountID  string    `json:"account_id"`
	Partition  int32     `json:"partition"`
	Count      int64     `json:"count"`
	Total      string    `json:"total"`
	Min        string    `json:"min"`
	Max        string    `json:"max"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	LastOffset int64     `json:"last_offset"`
}

// getAccount answers an interactive query on committed state: 200 with the
// aggregate; 503 while the owning partition is recovering or the job is
// not RUNNING; 404 when this instance owns the key's partition but has no
// state for it; 421 when another instance owns it.
func (s *Server) getAccount(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || len(id) > 1024 || !utf8.ValidString(id) {
		writeError(w, http.StatusBadRequest, "account id must be 1-1024 bytes of UTF-8", nil)
		return
	}
	st := s.b.Stats()
	res, err := st.Lookup(aggregate.AccountKey(nil, id))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading state: "+err.Error(), nil)
		return
	}
	if res.Found {
		var a aggregate.AccountState
		if err := a.Decode(res.Value); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("account %q: %v", id, err), nil)
			return
		}
		writeJSON(w, r, http.StatusOK, accountJSON{AccountID: id, Partition: res.Partition, Count: a.Count,
			Total: a.Total.Text('f'), Min: a.Min.Text('f'), Max: a.Max.Text('f'),
			First: a.First, Last: a.Last, LastOffset: a.LastOffset})
		return
	}
	owner := PartitionForKey([]byte(id), s.b.InputPartitions())
	owned := nonNil(res.Owned)
	extra := map[string]any{"account_id": id, "owned_partitions": owned}
	if owner >= 0 {
		extra["partition"] = owner
	}
	unavailable := func(msg string) {
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, msg, extra)
	}
	switch js := s.b.Job(); {
	case owner >= 0 && slices.Contains(res.Recovering, owner):
		unavailable(fmt.Sprintf("partition %d, which owns account %q, is being recovered; retry shortly", owner, id))
	case owner < 0 && len(res.Recovering) > 0:
		unavailable(fmt.Sprintf("partitions %v are being recovered and the input partition count is unknown; retry shortly", res.Recovering))
	case js.State != job.Running:
		extra["state"] = js.State
		unavailable(fmt.Sprintf("the job is %s: committed state is served only while it is RUNNING", js.State))
	case owner < 0:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no committed state for account %q in the partitions this instance owns", id), extra)
	case slices.Contains(res.Owned, owner):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no committed state for account %q (partition %d, owned by this instance)", id, owner), extra)
	default:
		writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf("account %q belongs to partition %d, which another instance owns; ask the instance that owns partition %d", id, owner, owner), extra)
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) getTimeseries(w http.ResponseWriter, r *http.Request) {
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since must be a Unix time in milliseconds", nil)
			return
		}
		since = n
	}
	writeJSON(w, r, http.StatusOK, map[string]any{
		"interval_ms": s.cfg.SampleInterval.Milliseconds(),
		"capacity":    s.cfg.SampleCapacity,
		"samples":     s.series.since(since),
	})
}

func (s *Server) getHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]any{"status": "ok", "state": s.b.Job().State})
}

// getReadyz: ready when the job is RUNNING, not draining, and no owned
// partition is being recovered.
func (s *Server) getReadyz(w http.ResponseWriter, r *http.Request) {
	js := s.b.Job()
	rec := make([]int32, 0)
	for p := range s.b.Stats().Recovering() {
		rec = append(rec, p)
	}
	slices.Sort(rec)
	body := map[string]any{"ready": false, "state": js.State, "recovering": rec}
	switch {
	case s.draining.Load():
		body["reason"] = "draining: the job is stopping"
	case js.State != job.Running:
		body["reason"] = fmt.Sprintf("job is %s", js.State)
	case len(rec) > 0:
		body["reason"] = fmt.Sprintf("partitions %v are being recovered", rec)
	default:
		body["ready"] = true
		writeJSON(w, r, http.StatusOK, body)
		return
	}
	writeJSON(w, r, http.StatusServiceUnavailable, body)
}
