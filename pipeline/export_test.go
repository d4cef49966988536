package pipeline

import "errors"

// Test hooks for the external tests (package pipeline_test), which use the
// real aggregator: package aggregate imports pipeline, so tests that need
// it cannot be in package pipeline.

// SetAfterPoll sets the hook that runs between a poll and its processing.
func SetAfterPoll(cfg *Config, f func()) { cfg.afterPoll = f }

// EpochOpen reports whether an epoch is open (processing goroutine only).
func (e *Engine) EpochOpen() bool { return e.ep.open }

// PendingEvents is the number of group events the source holds that the
// engine has not applied yet.
func (e *Engine) PendingEvents() int { return len(e.src.Events()) }

// IsAbortFailed reports an epoch end whose abort failed too.
func IsAbortFailed(err error) bool {
	var af *abortFailedError
	return errors.As(err, &af)
}
