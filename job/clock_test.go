package job

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual clock: After's channel fires only when the test
// advances the clock past its deadline. Every After call is announced on
// timers so tests can wait for the runner to block and check the delay.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	timers  chan time.Duration
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeClock() *fakeClock {
	return &fakeClock{now: t0, timers: make(chan time.Duration, 1000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
	} else {
		c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	}
	c.timers <- d
	return ch
}

// Advance moves the clock forward and fires due timers.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitTimer waits until someone calls After and returns its duration.
func (c *fakeClock) waitTimer(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.timers:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the runner to start a timer")
		return 0
	}
}

// noTimer asserts nobody called After (beyond those already consumed).
func (c *fakeClock) noTimer(t *testing.T) {
	t.Helper()
	select {
	case d := <-c.timers:
		t.Fatalf("unexpected timer of %v", d)
	default:
	}
}
