package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type result struct {
	state State
	err   error
}

// harness runs a Runner with a fake clock in the background and records its
// transitions.
type harness struct {
	t      *testing.T
	clk    *fakeClock
	r      *Runner
	logs   *observer.ObservedLogs
	mu     sync.Mutex
	trans  []Transition
	done   chan result
	cancel context.CancelFunc
	calls  atomic.Int32
}

func start(t *testing.T, s Strategy, attempt func(ctx context.Context, n int, markRunning func()) error) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{t: t, clk: newFakeClock(), logs: logs, done: make(chan result, 1)}
	h.r = NewRunner(RunnerConfig{
		Strategy: s,
		Clock:    h.clk,
		Logger:   zap.New(core),
		OnTransition: func(tr Transition) {
			h.mu.Lock()
			h.trans = append(h.trans, tr)
			h.mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(cancel)
	go func() {
		st, err := h.r.Run(ctx, func(ctx context.Context, n int, markRunning func()) error {
			h.calls.Add(1)
			return attempt(ctx, n, markRunning)
		})
		h.done <- result{st, err}
	}()
	return h
}

func (h *harness) wait() result {
	h.t.Helper()
	select {
	case res := <-h.done:
		return res
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return")
		return result{}
	}
}

func (h *harness) transitions() []Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Transition(nil), h.trans...)
}

// path renders the transitions as "A→B→C".
func path(ts []Transition) string {
	if len(ts) == 0 {
		return ""
	}
	parts := []string{string(ts[0].From)}
	for _, tr := range ts {
		parts = append(parts, string(tr.To))
	}
	return strings.Join(parts, "→")
}

func fixed(t *testing.T, attempts int, delay time.Duration) Strategy {
	return mustStrategy(t, Config{Strategy: "fixed-delay", Attempts: attempts, Delay: delay})
}

func TestRunTransientFailureThenSuccess(t *testing.T) {
	boom := errors.New("broker went away")
	h := start(t, fixed(t, 3, 5*time.Second), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		markRunning() // idempotent
		if n == 1 {
			return boom
		}
		return nil
	})
	if d := h.clk.waitTimer(t); d != 5*time.Second {
		t.Fatalf("restart delay = %v, want 5s", d)
	}
	if st := h.r.Snapshot(); st.State != Restarting || st.NextRestart == nil || !st.NextRestart.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("while waiting: %+v", st)
	}
	h.clk.Advance(4 * time.Second)
	select {
	case <-h.done:
		t.Fatal("restarted before the delay elapsed")
	case <-time.After(20 * time.Millisecond):
	}
	h.clk.Advance(time.Second)
	res := h.wait()
	if res.state != Finished || res.err != nil {
		t.Fatalf("Run = %v, %v; want FINISHED, nil", res.state, res.err)
	}
	ts := h.transitions()
	if got, want := path(ts), "CREATED→RUNNING→RESTARTING→RUNNING→FINISHED"; got != want {
		t.Fatalf("transitions %s, want %s", got, want)
	}
	wantAttempt := []int{1, 1, 2, 2}
	wantTime := []time.Time{t0, t0, t0.Add(5 * time.Second), t0.Add(5 * time.Second)}
	for i, tr := range ts {
		if tr.Attempt != wantAttempt[i] || !tr.Time.Equal(wantTime[i]) {
			t.Errorf("transition %d %s→%s: attempt %d at %v, want %d at %v", i, tr.From, tr.To, tr.Attempt, tr.Time, wantAttempt[i], wantTime[i])
		}
	}
	if !errors.Is(ts[1].Cause, boom) || ts[1].Delay != 5*time.Second {
		t.Errorf("RESTARTING transition: cause %v delay %v", ts[1].Cause, ts[1].Delay)
	}
	st := h.r.Snapshot()
	if st.State != Finished || st.Attempt != 2 || st.Restarts != 1 || st.LastFailure == nil ||
		!errors.Is(st.LastFailure.Err, boom) || st.LastFailure.Attempt != 1 || st.NextRestart != nil ||
		st.Strategy != "fixed-delay(attempts=3, delay=5s)" || len(st.Transitions) != 4 {
		t.Fatalf("Snapshot = %+v", st)
	}
	if ExitCode(res.state) != ExitOK {
		t.Errorf("ExitCode(FINISHED) = %d", ExitCode(res.state))
	}
	// Every transition is logged at info.
	if n := h.logs.FilterMessageSnippet(" -> ").FilterLevelExact(zapcore.InfoLevel).Len(); n != 4 {
		t.Errorf("%d transition log lines at info, want 4", n)
	}
}

func TestRunPersistentFailureFixedDelayGivesUp(t *testing.T) {
	h := start(t, fixed(t, 3, 5*time.Second), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		return fmt.Errorf("attempt %d: sink unavailable", n)
	})
	for i := 0; i < 3; i++ {
		if d := h.clk.waitTimer(t); d != 5*time.Second {
			t.Fatalf("restart %d delay = %v", i+1, d)
		}
		h.clk.Advance(5 * time.Second)
	}
	res := h.wait()
	h.clk.noTimer(t)
	if res.state != Failed {
		t.Fatalf("state = %v, want FAILED", res.state)
	}
	if got := h.calls.Load(); got != 4 {
		t.Fatalf("attempt ran %d times, want 4 (1 + 3 restarts)", got)
	}
	if ExitCode(res.state) != ExitFailed || ExitFailed != 3 {
		t.Fatalf("ExitCode(FAILED) = %d, want 3", ExitCode(res.state))
	}
	if res.err == nil || !strings.Contains(res.err.Error(), "gave up after 3 restart(s)") ||
		!strings.Contains(res.err.Error(), "attempt 4: sink unavailable") {
		t.Fatalf("err = %v", res.err)
	}
	want := "CREATED→RUNNING→RESTARTING→RUNNING→RESTARTING→RUNNING→RESTARTING→RUNNING→FAILED"
	if got := path(h.transitions()); got != want {
		t.Fatalf("transitions %s\nwant        %s", got, want)
	}
	st := h.r.Snapshot()
	if st.Restarts != 3 || st.Attempt != 4 || st.LastFailure.Attempt != 4 {
		t.Fatalf("Snapshot = %+v", st)
	}
	failedLogs := h.logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessage("job RUNNING -> FAILED").All()
	if len(failedLogs) != 1 {
		t.Fatalf("want one FAILED log at error level, got %d", len(failedLogs))
	}
}

func TestRunFailureDuringRecovery(t *testing.T) {
	// Attempts that fail before markRunning: CREATED→RESTARTING→RESTARTING→RUNNING→FINISHED.
	h := start(t, fixed(t, 3, time.Second), func(ctx context.Context, n int, markRunning func()) error {
		if n < 3 {
			return errors.New("restore failed")
		}
		markRunning()
		return ErrFinished
	})
	for i := 0; i < 2; i++ {
		h.clk.waitTimer(t)
		h.clk.Advance(time.Second)
	}
	res := h.wait()
	if res.state != Finished || res.err != nil {
		t.Fatalf("Run = %v, %v", res.state, res.err)
	}
	if got, want := path(h.transitions()), "CREATED→RESTARTING→RESTARTING→RUNNING→FINISHED"; got != want {
		t.Fatalf("transitions %s, want %s", got, want)
	}
}

func TestRunPanicRecoveredWithRecordPosition(t *testing.T) {
	h := start(t, fixed(t, 1, time.Second), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		if n == 1 {
			panic(&RecordError{Topic: "transactions", Partition: 2, Offset: 42, Err: errors.New("nil account")})
		}
		var m map[string]int
		//lint:ignore SA5000 a deliberate runtime panic, not a *RecordError
		m["x"]++
		return nil
	})
	h.clk.waitTimer(t)
	if st := h.r.Snapshot(); st.LastFailure == nil || !st.LastFailure.HasRecord ||
		st.LastFailure.Topic != "transactions" || st.LastFailure.Partition != 2 || st.LastFailure.Offset != 42 {
		t.Fatalf("LastFailure after record panic = %+v", st.LastFailure)
	}
	h.clk.Advance(time.Second)
	res := h.wait()
	if res.state != Failed {
		t.Fatalf("state %v", res.state)
	}
	var pe *PanicError
	if !errors.As(res.err, &pe) || !strings.Contains(pe.Error(), "assignment to entry in nil map") {
		t.Fatalf("err = %v, want a *PanicError", res.err)
	}
	if st := h.r.Snapshot(); st.LastFailure.HasRecord {
		t.Fatalf("runtime panic should carry no record: %+v", st.LastFailure)
	}
	// The first failure kept the record position in its transition cause.
	ts := h.transitions()
	var re *RecordError
	if !errors.As(ts[1].Cause, &re) || re.Partition != 2 || re.Offset != 42 {
		t.Fatalf("RESTARTING cause = %v", ts[1].Cause)
	}
	// Stack logged.
	panics := h.logs.FilterMessage("job attempt panicked").All()
	if len(panics) != 2 {
		t.Fatalf("%d panic logs, want 2", len(panics))
	}
	if stack, _ := panics[0].ContextMap()["stack"].(string); !strings.Contains(stack, "runner_test.go") {
		t.Errorf("panic log lacks a stack: %q", stack)
	}
	restarting := h.logs.FilterMessage("job RUNNING -> RESTARTING").All()
	if len(restarting) != 1 || restarting[0].ContextMap()["offset"] != int64(42) || restarting[0].ContextMap()["partition"] != int32(2) {
		t.Fatalf("RESTARTING log lacks the record position: %+v", restarting)
	}
}

func TestRunRecordErrorReturned(t *testing.T) {
	h := start(t, mustStrategy(t, Config{Strategy: "none"}), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		return fmt.Errorf("operator: %w", &RecordError{Topic: "tx", Partition: 7, Offset: 1234, Err: errors.New("bad amount")})
	})
	res := h.wait()
	f := h.r.Snapshot().LastFailure
	if res.state != Failed || f == nil || !f.HasRecord || f.Partition != 7 || f.Offset != 1234 || f.Topic != "tx" {
		t.Fatalf("state %v, failure %+v", res.state, f)
	}
	if h.calls.Load() != 1 {
		t.Fatalf("strategy none restarted")
	}
}

func TestRunPermanentErrorFailsWithoutRestart(t *testing.T) {
	cfgErr := errors.New("topic transactions does not exist")
	h := start(t, fixed(t, 3, time.Second), func(ctx context.Context, n int, markRunning func()) error {
		return fmt.Errorf("setup: %w", Permanent(cfgErr))
	})
	res := h.wait()
	h.clk.noTimer(t)
	if res.state != Failed || !IsPermanent(res.err) || !errors.Is(res.err, cfgErr) {
		t.Fatalf("Run = %v, %v", res.state, res.err)
	}
	if h.calls.Load() != 1 {
		t.Fatalf("permanent error was retried: %d calls", h.calls.Load())
	}
	if got := path(h.transitions()); got != "CREATED→FAILED" {
		t.Fatalf("transitions %s", got)
	}
	if ExitCode(res.state) != 3 {
		t.Fatalf("exit code %d", ExitCode(res.state))
	}
	if Permanent(nil) != nil || IsPermanent(cfgErr) {
		t.Fatal("Permanent(nil) / IsPermanent of a plain error")
	}
}

func TestRunCancelDuringDelay(t *testing.T) {
	h := start(t, fixed(t, 3, time.Hour), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		return errors.New("boom")
	})
	h.clk.waitTimer(t)
	h.cancel() // the clock is never advanced: CANCELED must not wait out the hour
	res := h.wait()
	if res.state != Canceled || !errors.Is(res.err, context.Canceled) {
		t.Fatalf("Run = %v, %v", res.state, res.err)
	}
	if h.calls.Load() != 1 {
		t.Fatalf("restarted after cancel")
	}
	if got := path(h.transitions()); got != "CREATED→RUNNING→RESTARTING→CANCELED" {
		t.Fatalf("transitions %s", got)
	}
	if ExitCode(res.state) != ExitOK {
		t.Fatalf("exit code %d", ExitCode(res.state))
	}
	if st := h.r.Snapshot(); st.NextRestart != nil {
		t.Fatalf("NextRestart still set after cancel")
	}
}

func TestRunCancelDuringAttempt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ret     func(ctx context.Context) error
		wantErr error
	}{
		{"returns ctx.Err", func(ctx context.Context) error { return ctx.Err() }, context.Canceled},
		{"returns nil", func(ctx context.Context) error { return nil }, context.Canceled},
		{"returns wrapped ctx.Err", func(ctx context.Context) error { return fmt.Errorf("fetch: %w", ctx.Err()) }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			running := make(chan struct{})
			h := start(t, fixed(t, 3, time.Second), func(ctx context.Context, n int, markRunning func()) error {
				markRunning()
				close(running)
				<-ctx.Done()
				return tc.ret(ctx)
			})
			<-running
			h.cancel()
			res := h.wait()
			h.clk.noTimer(t)
			if res.state != Canceled || !errors.Is(res.err, tc.wantErr) {
				t.Fatalf("Run = %v, %v", res.state, res.err)
			}
			if got := path(h.transitions()); got != "CREATED→RUNNING→CANCELED" {
				t.Fatalf("transitions %s", got)
			}
			if h.r.Snapshot().LastFailure != nil {
				t.Fatal("a clean cancel recorded a failure")
			}
		})
	}

	t.Run("real error while canceling: CANCELED, error kept, no restart", func(t *testing.T) {
		drainErr := errors.New("final commit failed")
		running := make(chan struct{})
		h := start(t, fixed(t, 3, time.Second), func(ctx context.Context, n int, markRunning func()) error {
			markRunning()
			close(running)
			<-ctx.Done()
			return drainErr
		})
		<-running
		h.cancel()
		res := h.wait()
		if res.state != Canceled || !errors.Is(res.err, drainErr) || h.calls.Load() != 1 {
			t.Fatalf("Run = %v, %v (calls %d)", res.state, res.err, h.calls.Load())
		}
		if f := h.r.Snapshot().LastFailure; f == nil || !errors.Is(f.Err, drainErr) {
			t.Fatalf("LastFailure = %+v", f)
		}
	})
}

func TestRunCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := NewRunner(RunnerConfig{Clock: newFakeClock()})
	called := false
	st, err := r.Run(ctx, func(context.Context, int, func()) error { called = true; return nil })
	if st != Canceled || !errors.Is(err, context.Canceled) || called {
		t.Fatalf("Run = %v, %v, called=%v", st, err, called)
	}
	if st, err := r.Run(context.Background(), nil); st != Canceled || err == nil {
		t.Fatalf("second Run = %v, %v; want an error", st, err)
	}
}

func TestRunFinishedBeforeRunning(t *testing.T) {
	h := start(t, nil, func(ctx context.Context, n int, markRunning func()) error { return ErrFinished })
	res := h.wait()
	if res.state != Finished || res.err != nil {
		t.Fatalf("Run = %v, %v", res.state, res.err)
	}
	if got := path(h.transitions()); got != "CREATED→FINISHED" {
		t.Fatalf("transitions %s", got)
	}
	if s := h.r.Snapshot().Strategy; s != "fixed-delay(attempts=3, delay=5s)" {
		t.Fatalf("default strategy %q", s)
	}
}

func TestMarkRunningAfterAttemptReturnedIsIgnored(t *testing.T) {
	var late func()
	h := start(t, fixed(t, 3, time.Second), func(ctx context.Context, n int, markRunning func()) error {
		if n == 1 {
			late = markRunning
			return errors.New("fail before running")
		}
		<-ctx.Done()
		return nil
	})
	h.clk.waitTimer(t)
	late() // the runner is RESTARTING and attempt 1 is over: must not flip to RUNNING
	if st := h.r.Snapshot().State; st != Restarting {
		t.Fatalf("state %v after a stale markRunning", st)
	}
	h.cancel()
	h.wait()
}

func TestExponentialDelayThroughRunner(t *testing.T) {
	// The runner feeds OnRunning: a long healthy run resets the backoff.
	s := mustStrategy(t, Config{Strategy: "exponential-delay", InitialBackoff: time.Second, MaxBackoff: time.Minute,
		BackoffMultiplier: 2, ResetBackoffThreshold: 10 * time.Minute, Rand: half})
	var h *harness
	h = start(t, s, func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		if n == 3 {
			h.clk.Advance(time.Hour) // healthy for an hour
		}
		if n == 4 {
			return nil
		}
		return errors.New("boom")
	})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, time.Second} {
		if d := h.clk.waitTimer(t); d != want {
			t.Fatalf("restart %d delay %v, want %v", i+1, d, want)
		}
		h.clk.Advance(want)
	}
	if res := h.wait(); res.state != Finished {
		t.Fatalf("state %v", res.state)
	}
}

func TestSnapshotConcurrentReads(t *testing.T) {
	const restarts = 30
	h := start(t, fixed(t, restarts, time.Millisecond), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		if n <= restarts {
			return &RecordError{Topic: "t", Partition: int32(n), Offset: int64(n), Err: errors.New("x")}
		}
		return nil
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := h.r.Snapshot()
				if _, err := json.Marshal(st); err != nil {
					t.Error(err)
					return
				}
				if st.LastFailure != nil && st.LastFailure.Partition < 1 {
					t.Error("torn failure")
					return
				}
			}
		}()
	}
	for i := 0; i < restarts; i++ {
		h.clk.waitTimer(t)
		h.clk.Advance(time.Millisecond)
	}
	res := h.wait()
	close(stop)
	wg.Wait()
	if res.state != Finished || h.r.Snapshot().Restarts != restarts {
		t.Fatalf("Run = %v, %v; snapshot %+v", res.state, res.err, h.r.Snapshot())
	}
}

func TestHistoryIsBounded(t *testing.T) {
	const restarts = HistoryLimit // 1 + 2*restarts + 1 transitions
	h := start(t, fixed(t, restarts, time.Millisecond), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		if n <= restarts {
			return errors.New("x")
		}
		return nil
	})
	for i := 0; i < restarts; i++ {
		h.clk.waitTimer(t)
		h.clk.Advance(time.Millisecond)
	}
	h.wait()
	st := h.r.Snapshot()
	all := h.transitions()
	if len(st.Transitions) != HistoryLimit || len(all) != 2*restarts+2 {
		t.Fatalf("history %d (want %d), callbacks %d", len(st.Transitions), HistoryLimit, len(all))
	}
	last := all[len(all)-HistoryLimit:]
	for i := range last {
		if st.Transitions[i].From != last[i].From || st.Transitions[i].To != last[i].To || !st.Transitions[i].Time.Equal(last[i].Time) {
			t.Fatalf("history[%d] = %+v, want %+v", i, st.Transitions[i], last[i])
		}
	}
	if st.Transitions[len(st.Transitions)-1].To != Finished {
		t.Fatal("newest transition is not last")
	}
}

func TestStatusJSON(t *testing.T) {
	h := start(t, mustStrategy(t, Config{Strategy: "none"}), func(ctx context.Context, n int, markRunning func()) error {
		markRunning()
		return &RecordError{Topic: "tx", Partition: 1, Offset: 9, Err: errors.New("bad")}
	})
	h.wait()
	b, err := json.Marshal(h.r.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"state":"FAILED"`, `"strategy":"none"`, `"error":"record tx/1@9: bad"`,
		`"record":{"topic":"tx","partition":1,"offset":9}`, `"from":"RUNNING","to":"FAILED"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("status JSON lacks %s:\n%s", want, b)
		}
	}
}

func TestExitCodes(t *testing.T) {
	for s, want := range map[State]int{Finished: 0, Canceled: 0, Failed: 3, Running: 3, Created: 3, Restarting: 3} {
		if got := ExitCode(s); got != want {
			t.Errorf("ExitCode(%v) = %d, want %d", s, got, want)
		}
	}
	if ExitOK != 0 || ExitConfig != 2 || ExitFailed != 3 {
		t.Fatal("exit code constants changed")
	}
	if Running.String() != "RUNNING" || !Canceled.Terminal() || Restarting.Terminal() {
		t.Fatal("State methods")
	}
}

func TestSafelyRecordErrorValue(t *testing.T) {
	err := Safely(func() error { panic(RecordError{Partition: 3, Offset: 5, Err: errors.New("v")}) })
	var re *RecordError
	if !errors.As(err, &re) || re.Partition != 3 {
		t.Fatalf("Safely = %v", err)
	}
	if err := Safely(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}
