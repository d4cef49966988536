package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// State is a job state, named as Flink's JobStatus.
type State string

// Job states.
const (
	// Created: the runner exists, the first attempt is recovering.
	Created State = "CREATED"
	// Running: the current attempt has recovered and is processing input.
	Running State = "RUNNING"
	// Restarting: an attempt failed and the strategy allowed a restart; the
	// runner is waiting out the delay or the next attempt is recovering.
	Restarting State = "RESTARTING"
	// Failed: terminal; the strategy gave up or the failure was permanent.
	Failed State = "FAILED"
	// Finished: terminal; an attempt returned nil or ErrFinished.
	Finished State = "FINISHED"
	// Canceled: terminal; the context was canceled.
	Canceled State = "CANCELED"
)

// String returns the upper-case state name.
func (s State) String() string { return string(s) }

// Terminal reports whether s is FAILED, FINISHED or CANCELED.
func (s State) Terminal() bool { return s == Failed || s == Finished || s == Canceled }

// Process exit codes.
const (
	// ExitOK: the job ended FINISHED or CANCELED (e.g. SIGTERM drained).
	ExitOK = 0
	// ExitConfig: bad flags or configuration; the job never started. A
	// supervisor should not restart the process without a config change.
	ExitConfig = 2
	// ExitFailed: the job ended FAILED because its restart strategy gave up
	// or the failure was permanent; a supervisor may restart the process.
	ExitFailed = 3
)

// ExitCode returns the process exit code for a job that ended in state s:
// ExitOK for FINISHED and CANCELED, ExitFailed for FAILED. A non-terminal
// state (the job did not end properly) also maps to ExitFailed.
func ExitCode(s State) int {
	switch s {
	case Finished, Canceled:
		return ExitOK
	default:
		return ExitFailed
	}
}

// ErrFinished is returned by an attempt (as is nil) to say that the job
// finished normally: an idle exit or a bounded run reached its end.
var ErrFinished = errors.New("job finished")

// RecordError is an error attributed to one input record. Operators return
// it (or panic with it) so that the failure keeps the record's position.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Err       error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("record %s/%d@%d: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// permanentError marks a failure that must not be restarted.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that no restart can fix (a configuration
// error, a missing topic, data loss that was not allowed): the runner makes
// the job FAILED without consulting the strategy. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// PanicError is the failure a recovered panic becomes. If the panic value
// is an error (such as a *RecordError), PanicError wraps it, so errors.As
// finds it.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value if it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// Safely calls fn and turns a panic in it into a *PanicError. The runner
// uses it for attempts; operators use it in goroutines they start, since a
// panic in another goroutine cannot be recovered by the runner.
func Safely(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if re, ok := v.(RecordError); ok {
				v = &re
			}
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn()
}

// Failure describes one failed attempt.
type Failure struct {
	Err     error
	Time    time.Time
	Attempt int // the attempt that failed, from 1
	// Topic, Partition and Offset locate the record that caused the failure
	// when HasRecord is set (the error or panic carried a *RecordError).
	Topic     string
	Partition int32
	Offset    int64
	HasRecord bool
}

func newFailure(err error, now time.Time, attempt int) Failure {
	f := Failure{Err: err, Time: now, Attempt: attempt}
	var re *RecordError
	if errors.As(err, &re) {
		f.Topic, f.Partition, f.Offset, f.HasRecord = re.Topic, re.Partition, re.Offset, true
	}
	return f
}

// MarshalJSON renders the error as its message.
func (f Failure) MarshalJSON() ([]byte, error) {
	type rec struct {
		Topic     string `json:"topic,omitempty"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
	}
	v := struct {
		Error     string    `json:"error"`
		Time      time.Time `json:"time"`
		Attempt   int       `json:"attempt"`
		Permanent bool      `json:"permanent,omitempty"`
		Record    *rec      `json:"record,omitempty"`
	}{Error: errString(f.Err), Time: f.Time, Attempt: f.Attempt, Permanent: IsPermanent(f.Err)}
	if f.HasRecord {
		v.Record = &rec{f.Topic, f.Partition, f.Offset}
	}
	return json.Marshal(v)
}

// Transition is one change of job state.
type Transition struct {
	From, To State
	Time     time.Time
	// Attempt is the attempt the transition concerns: the one that became
	// RUNNING, failed (→RESTARTING, →FAILED) or ended.
	Attempt int
	// Cause is the failure behind →RESTARTING and →FAILED, and the context's
	// cause (or the error the attempt returned) for →CANCELED.
	Cause error
	// Delay is the restart delay chosen by the strategy (→RESTARTING only).
	Delay time.Duration
}

// MarshalJSON renders the cause as its message.
func (t Transition) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		From    State     `json:"from"`
		To      State     `json:"to"`
		Time    time.Time `json:"time"`
		Attempt int       `json:"attempt"`
		Cause   string    `json:"cause,omitempty"`
		DelayMS int64     `json:"delay_ms,omitempty"`
	}{t.From, t.To, t.Time, t.Attempt, errString(t.Cause), t.Delay.Milliseconds()})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
