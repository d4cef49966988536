package producer

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestProgressRender(t *testing.T) {
	c := &counters{}
	c.rejected.Store(3)
	start := time.Unix(1000, 0)
	p := &progress{bar: true, c: c, width: func() int { return 100 }, start: start}
	line := p.render(start.Add(10*time.Second), 12345, 1234.5, 250, 1000)
	for _, want := range []string{" 25% [", "12,345 rows", "1,234 rows/s", "3 rejected", "ETA 0:30"} {
		if !strings.Contains(line, want) {
			t.Errorf("bar %q lacks %q", line, want)
		}
	}
	if len(line) > 100 {
		t.Errorf("bar longer than the terminal: %d", len(line))
	}
	// Unknown size (stdin, --follow): no percentage, no ETA.
	p.follow = true
	line = p.render(start.Add(time.Second), 10, 10, 500, 0)
	if strings.Contains(line, "%") || strings.Contains(line, "ETA") || !strings.Contains(line, "(following)") {
		t.Errorf("follow line %q", line)
	}
	// Narrow terminal: no bar, still the numbers.
	p.width = func() int { return 30 }
	line = p.render(start.Add(time.Second), 10, 10, 500, 1000)
	if strings.Contains(line, "[") || !strings.Contains(line, "10 rows") {
		t.Errorf("narrow line %q", line)
	}
}

func TestProgressLogMode(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	c := &counters{}
	c.read.Store(40)
	c.acked.Store(39)
	now := time.Unix(1000, 0)
	p := &progress{log: zap.New(core), c: c, now: func() time.Time { return now },
		bytes: func() int64 { return 500 }, total: func() int64 { return 1000 }}
	p.start = now.Add(-4 * time.Second)
	p.tick()
	e := logs.All()
	if len(e) != 1 || e[0].Message != "progress" {
		t.Fatalf("logs %v", e)
	}
	m := e[0].ContextMap()
	if m["read"] != int64(40) || m["produced"] != int64(39) || m["percent"] != 50.0 || m["rows_per_sec"] != 10.0 || m["eta"] != 4*time.Second {
		t.Errorf("fields %v", m)
	}
}

// A log line erases the bar first and redraws it after.
func TestBarCore(t *testing.T) {
	var term bytes.Buffer
	p := &progress{bar: true, w: &term}
	p.last = "BAR"
	p.drawLocked()
	inner := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(&term), zapcore.InfoLevel)
	log := zap.New(barCore{inner, p})
	log.Info("hello")
	log.Debug("dropped")
	got := term.String()
	want := "\r\033[KBAR" + "\r\033[K"
	if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "\r\033[KBAR") || !strings.Contains(got, "hello") || strings.Contains(got, "dropped") {
		t.Errorf("terminal output %q", got)
	}
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
	if !strings.HasSuffix(term.String(), "BAR\r\033[K") {
		t.Errorf("bar not cleared: %q", term.String())
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567"} {
		if got := groupThousands(n); got != want {
			t.Errorf("groupThousands(%d) = %q", n, got)
		}
	}
	for d, want := range map[time.Duration]string{0: "0:00", 61 * time.Second: "1:01", 3725 * time.Second: "1:02:05"} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q", d, got)
		}
	}
	s := summary{Read: 10, Produced: 8, Rejected: 2, Reasons: "field_count=2", Duration: 2 * time.Second, Failed: 1, Pending: 1}
	if got := s.String(); got != "read 10 rows: 8 produced, 2 rejected (field_count=2), 1 delivery failed, 1 not acknowledged in 2s (4 rows/s)" {
		t.Errorf("summary %q", got)
	}
}
