package producer

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// progress reports how far the run is: a redrawn bar on a terminal, or a
// structured log line every interval otherwise.
type progress struct {
	bar      bool
	w        io.Writer // the terminal (bar mode)
	width    func() int
	log      *zap.Logger
	interval time.Duration
	c        *counters
	bytes    func() int64 // bytes read so far
	total    func() int64 // input size, 0 = unknown (stdin, --follow)
	follow   bool
	now      func() time.Time

	mu      sync.Mutex
	shown   bool // a bar line is on screen
	last    string
	start   time.Time
	samples []sample // recent (time, rows) for the current rate
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	t    time.Time
	rows int64
}

const rateWindow = 5 * time.Second

func (p *progress) run() {
	p.start = p.now()
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	every := p.interval
	if p.bar {
		every = 200 * time.Millisecond
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.tick()
			}
		}
	}()
}

// finish stops the reporter and removes the bar.
func (p *progress) finish() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

func (p *progress) tick() {
	now := p.now()
	rows := p.c.read.Load()
	p.mu.Lock()
	p.samples = append(p.samples, sample{now, rows})
	for len(p.samples) > 2 && now.Sub(p.samples[0].t) > rateWindow {
		p.samples = p.samples[1:]
	}
	rate := 0.0
	if first := p.samples[0]; now.Sub(first.t) > 0 && len(p.samples) > 1 {
		rate = float64(rows-first.rows) / now.Sub(first.t).Seconds()
	} else if el := now.Sub(p.start).Seconds(); el > 0 {
		rate = float64(rows) / el
	}
	p.mu.Unlock()

	done, total := p.bytes(), p.total()
	if !p.bar {
		f := []zap.Field{
			zap.Int64("read", rows), zap.Int64("produced", p.c.acked.Load()), zap.Int64("rejected", p.c.rejected.Load()),
			zap.Float64("rows_per_sec", float64(int64(rate*10))/10),
		}
		if total > 0 {
			f = append(f, zap.Float64("percent", float64(int64(1000*float64(done)/float64(total)))/10))
			if eta, ok := p.eta(now, done, total); ok {
				f = append(f, zap.Duration("eta", eta))
			}
		}
		p.log.Info("progress", f...)
		return
	}
	line := p.render(now, rows, rate, done, total)
	p.mu.Lock()
	p.last = line
	p.drawLocked()
	p.mu.Unlock()
}

// eta estimates the remaining time from the average byte rate so far.
func (p *progress) eta(now time.Time, done, total int64) (time.Duration, bool) {
	el := now.Sub(p.start)
	if done <= 0 || el <= 0 || done > total {
		return 0, false
	}
	rem := time.Duration(float64(el) * float64(total-done) / float64(done))
	return rem.Round(time.Second), true
}

func (p *progress) render(now time.Time, rows int64, rate float64, done, total int64) string {
	stats := fmt.Sprintf("%s rows  %s rows/s", groupThousands(rows), groupThousands(int64(rate)))
	if r := p.c.rejected.Load(); r > 0 {
		stats += fmt.Sprintf("  %s rejected", groupThousands(r))
	}
	if total <= 0 {
		if p.follow {
			stats += "  (following)"
		}
		return stats
	}
	frac := float64(done) / float64(total)
	frac = max(0, min(frac, 1))
	eta := "ETA --:--"
	if d, ok := p.eta(now, done, total); ok {
		eta = "ETA " + fmtDuration(d)
	}
	width := 80
	if p.width != nil {
		if w := p.width(); w > 0 {
			width = w
		}
	}
	head := fmt.Sprintf("%3d%% ", int(frac*100))
	tail := "  " + stats + "  " + eta
	barW := width - len(head) - len(tail) - 3
	if barW < 10 {
		return head + stats + "  " + eta
	}
	fill := int(frac * float64(barW))
	bar := strings.Repeat("=", fill)
	if fill < barW {
		bar += ">" + strings.Repeat(" ", barW-fill-1)
	}
	return head + "[" + bar + "]" + tail
}

func (p *progress) drawLocked() {
	if !p.bar || p.last == "" {
		return
	}
	fmt.Fprint(p.w, "\r\033[K"+p.last)
	p.shown = true
}

func (p *progress) clearLocked() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

func fmtDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

func groupThousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// barCore wraps a zap core so that a log line first erases the progress
// bar and then redraws it below, instead of the two garbling each other.
type barCore struct {
	zapcore.Core
	p *progress
}

func (c barCore) With(f []zapcore.Field) zapcore.Core { return barCore{c.Core.With(f), c.p} }

func (c barCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c barCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.clearLocked()
	err := c.Core.Write(e, f)
	c.p.drawLocked()
	return err
}
