package producer

import (
	"context"
	"time"
)

// pacer spaces events at a fixed rate. After an idle period (a followed
// file that did not grow) it allows at most one second of catch-up burst.
type pacer struct {
	rate  float64 // events per second; <= 0: unlimited
	now   func() time.Time
	start time.Time
	n     int64
}

// The --rate bounds: below minRate a row's due time overflows a Duration
// within a run's reach; above maxRate pacing is no different from none.
const minRate, maxRate = 0.001, 1e9

func newPacer(rate float64) *pacer { return &pacer{rate: rate, now: time.Now} }

// wait blocks until the next event is due or ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	if d := p.delay(); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err()
}

// delay books the next event and returns how long until it is due.
func (p *pacer) delay() time.Duration {
	if p.rate <= 0 {
		return 0
	}
	now := p.now()
	if p.n == 0 {
		p.start = now
	}
	due := p.start.Add(time.Duration(float64(p.n) / p.rate * float64(time.Second)))
	if now.Sub(due) > time.Second {
		// Behind by more than a second (input was idle): restart the
		// schedule instead of bursting through the backlog.
		p.start, p.n, due = now, 0, now
	}
	p.n++
	return due.Sub(now)
}
