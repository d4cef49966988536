package job

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Clock is the runner's source of time; tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// HistoryLimit is the number of transitions a Runner keeps for Snapshot.
const HistoryLimit = 100

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Strategy decides restarts. nil means NewStrategy(Config{}), i.e.
	// fixed-delay(attempts=3, delay=5s).
	Strategy Strategy
	// Clock defaults to the real clock.
	Clock Clock
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// OnTransition, if set, is called synchronously and in order for every
	// transition (for metrics). It may call Snapshot; it must not block for
	// long and must not call the attempt's markRunning.
	OnTransition func(Transition)
}

// Status is a point-in-time copy of a runner's state, safe to serialise
// (the HTTP status API).
type Status struct {
	State State     `json:"state"`
	Since time.Time `json:"since"` // time of the last transition (or creation)
	// Attempt is the current (or last) attempt, from 1; 0 before Run.
	Attempt int `json:"attempt"`
	// Restarts is the number of restarts so far (Attempt-1 once running).
	Restarts int    `json:"restarts"`
	Strategy string `json:"strategy"`
	// NextRestart is when the pending restart is due (RESTARTING, waiting).
	NextRestart *time.Time `json:"next_restart,omitempty"`
	LastFailure *Failure   `json:"last_failure,omitempty"`
	// Transitions holds the last HistoryLimit transitions, oldest first.
	Transitions []Transition `json:"transitions"`
}

// Runner runs a job's attempts under a restart strategy and tracks its
// state. Create it with NewRunner; Run may be called once. Snapshot is safe
// to call from any goroutine at any time.
type Runner struct {
	strategy     Strategy
	describe     string // strategy.Describe(), fixed at creation
	clock        Clock
	log          *zap.Logger
	onTransition func(Transition)
	started      atomic.Bool

	// transMu serialises transitions (state change, log, callback) and the
	// strategy's calls; markRunning may come from any goroutine.
	transMu sync.Mutex

	mu          sync.RWMutex // guards the fields below
	state       State
	since       time.Time
	attempt     int
	restarts    int
	nextRestart time.Time
	lastFailure *Failure
	history     []Transition
}

// NewRunner returns a runner in state CREATED.
func NewRunner(cfg RunnerConfig) *Runner {
	r := &Runner{
		strategy:     cfg.Strategy,
		clock:        cfg.Clock,
		log:          cfg.Logger,
		onTransition: cfg.OnTransition,
		state:        Created,
	}
	if r.strategy == nil {
		r.strategy, _ = NewStrategy(Config{})
	}
	r.describe = r.strategy.Describe()
	if r.clock == nil {
		r.clock = realClock{}
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	r.since = r.clock.Now()
	return r
}

// Snapshot returns a copy of the runner's status.
func (r *Runner) Snapshot() Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := Status{
		State:       r.state,
		Since:       r.since,
		Attempt:     r.attempt,
		Restarts:    r.restarts,
		Strategy:    r.describe,
		Transitions: append([]Transition(nil), r.history...),
	}
	if !r.nextRestart.IsZero() {
		t := r.nextRestart
		s.NextRestart = &t
	}
	if r.lastFailure != nil {
		f := *r.lastFailure
		s.LastFailure = &f
	}
	return s
}

// attemptRun is the bookkeeping of one attempt, guarded by Runner.transMu.
type attemptRun struct {
	n       int
	running bool
	done    bool
}

// Run runs attempt(ctx, n, markRunning) for n = 1, 2, ... until an attempt
// finishes, ctx is canceled, or the strategy gives up, and returns the final
// state and error:
//
//   - An attempt calls markRunning (from any goroutine, any number of times)
//     once it has recovered and processes input: the job becomes RUNNING.
//   - nil or ErrFinished: FINISHED, error nil.
//   - ctx canceled while the attempt runs, and the attempt returns nil or an
//     error wrapping context.Canceled or context.DeadlineExceeded: CANCELED,
//     error context.Cause(ctx). Any other error after cancellation is
//     recorded as the last failure and returned, but the job still ends
//     CANCELED without a restart (as Flink ignores failures while
//     CANCELLING).
//   - ctx canceled during a restart delay: CANCELED at once, error
//     context.Cause(ctx).
//   - an error marked Permanent: FAILED without consulting the strategy.
//   - any other error, or a panic (recovered, stack logged): a failure; the
//     strategy either restarts the job after its delay (RESTARTING) or gives
//     up (FAILED). The returned error wraps the last failure.
//
// Panics in goroutines the attempt starts are not recovered here; wrap them
// with Safely.
func (r *Runner) Run(ctx context.Context, attempt func(ctx context.Context, n int, markRunning func()) error) (State, error) {
	if !r.started.CompareAndSwap(false, true) {
		return r.Snapshot().State, errors.New("job: Runner.Run called more than once")
	}
	r.log.Info("job starting", zap.String("strategy", r.describe))
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return r.cancel(ctx, n-1, nil)
		}
		r.mu.Lock()
		r.attempt, r.restarts, r.nextRestart = n, n-1, time.Time{}
		r.mu.Unlock()

		a := &attemptRun{n: n}
		mark := func() { r.markRunning(a) }
		err := Safely(func() error { return attempt(ctx, n, mark) })

		var pe *PanicError
		if errors.As(err, &pe) {
			r.log.Error("job attempt panicked", zap.Int("attempt", n),
				zap.String("panic", fmt.Sprint(pe.Value)), zap.ByteString("stack", pe.Stack))
		}

		r.transMu.Lock()
		a.done = true
		r.transMu.Unlock()

		switch {
		case ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrFinished)):
			return r.cancel(ctx, n, nil)
		case ctx.Err() != nil:
			return r.cancel(ctx, n, err)
		case err == nil || errors.Is(err, ErrFinished):
			r.transMu.Lock()
			r.transition(Transition{To: Finished, Attempt: n}, nil)
			r.transMu.Unlock()
			return Finished, nil
		}

		// A failure.
		r.transMu.Lock()
		now := r.clock.Now()
		f := newFailure(err, now, n)
		if IsPermanent(err) {
			r.transition(Transition{To: Failed, Attempt: n, Cause: err}, &f)
			r.transMu.Unlock()
			return Failed, fmt.Errorf("job failed permanently in attempt %d: %w", n, err)
		}
		delay, restart := r.strategy.OnFailure(now)
		if !restart {
			r.transition(Transition{To: Failed, Attempt: n, Cause: err}, &f)
			r.transMu.Unlock()
			return Failed, fmt.Errorf("job failed: restart strategy %s gave up after %d restart(s); last failure in attempt %d: %w",
				r.describe, n-1, n, err)
		}
		r.mu.Lock()
		r.nextRestart = now.Add(delay)
		r.mu.Unlock()
		r.transition(Transition{To: Restarting, Attempt: n, Cause: err, Delay: delay}, &f)
		r.transMu.Unlock()

		if delay > 0 {
			select {
			case <-r.clock.After(delay):
			case <-ctx.Done():
				return r.cancel(ctx, n, nil)
			}
		}
	}
}

// markRunning moves the job to RUNNING the first time attempt a calls it
// before returning.
func (r *Runner) markRunning(a *attemptRun) {
	r.transMu.Lock()
	defer r.transMu.Unlock()
	if a.done || a.running {
		return
	}
	a.running = true
	now := r.clock.Now()
	r.strategy.OnRunning(now)
	r.transition(Transition{To: Running, Attempt: a.n, Time: now}, nil)
}

// cancel ends the job CANCELED. attemptErr is a non-cancellation error the
// last attempt returned after ctx was canceled, if any.
func (r *Runner) cancel(ctx context.Context, n int, attemptErr error) (State, error) {
	r.transMu.Lock()
	defer r.transMu.Unlock()
	cause := context.Cause(ctx)
	if attemptErr == nil {
		r.transition(Transition{To: Canceled, Attempt: n, Cause: cause}, nil)
		return Canceled, cause
	}
	f := newFailure(attemptErr, r.clock.Now(), n)
	r.transition(Transition{To: Canceled, Attempt: n, Cause: attemptErr}, &f)
	return Canceled, attemptErr
}

// transition applies t (From and, if zero, Time are filled in), records f
// as the last failure if set, logs it and calls OnTransition. The caller
// holds r.transMu.
func (r *Runner) transition(t Transition, f *Failure) {
	if t.Time.IsZero() {
		t.Time = r.clock.Now()
	}
	r.mu.Lock()
	t.From = r.state
	r.state, r.since = t.To, t.Time
	if t.To != Restarting {
		r.nextRestart = time.Time{}
	}
	if f != nil {
		fc := *f
		r.lastFailure = &fc
	}
	if len(r.history) == HistoryLimit {
		copy(r.history, r.history[1:])
		r.history = r.history[:HistoryLimit-1]
	}
	r.history = append(r.history, t)
	restarts := r.restarts
	r.mu.Unlock()

	fields := []zap.Field{
		zap.Stringer("from", t.From),
		zap.Stringer("to", t.To),
		zap.Int("attempt", t.Attempt),
		zap.Int("restarts", restarts),
	}
	if t.Cause != nil {
		fields = append(fields, zap.NamedError("cause", t.Cause))
	}
	if t.To == Restarting {
		fields = append(fields, zap.Duration("restart_delay", t.Delay))
	}
	if f != nil && f.HasRecord {
		fields = append(fields, zap.String("topic", f.Topic), zap.Int32("partition", f.Partition), zap.Int64("offset", f.Offset))
	}
	if f != nil && IsPermanent(f.Err) {
		fields = append(fields, zap.Bool("permanent", true))
	}
	msg := "job " + string(t.From) + " -> " + string(t.To)
	if t.To == Failed {
		fields = append(fields, zap.String("strategy", r.describe))
		r.log.Error(msg, fields...)
	} else {
		r.log.Info(msg, fields...)
	}
	if r.onTransition != nil {
		r.onTransition(t)
	}
}
