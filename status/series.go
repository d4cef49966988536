package status

import "sync"

// Sample is one point of the time series: job-wide totals, the summed lag
// of owned partitions and the job state at time T (Unix milliseconds).
// InRate and OutRate are records per second since the previous sample. Lag
// is nil while the instance owns no recovered partition (restarting,
// recovering): unknown, not zero.
type Sample struct {
	T       int64   `json:"t"`
	In      int64   `json:"in"`
	Out     int64   `json:"out"`
	DLQ     int64   `json:"dlq"`
	Dup     int64   `json:"dup"`
	Lag     *int64  `json:"lag"`
	InRate  float64 `json:"in_rate"`
	OutRate float64 `json:"out_rate"`
	State   string  `json:"state"`
}

// series is a fixed-size ring of samples.
type series struct {
	mu   sync.Mutex
	buf  []Sample
	next int // where the next sample goes
	full bool
}

func newSeries(n int) *series { return &series{buf: make([]Sample, n)} }

func (s *series) add(v Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.lastLocked(); ok && v.T > prev.T {
		dt := float64(v.T-prev.T) / 1000
		v.InRate = round2(float64(max(0, v.In-prev.In)) / dt)
		v.OutRate = round2(float64(max(0, v.Out-prev.Out)) / dt)
	}
	s.buf[s.next] = v
	s.next = (s.next + 1) % len(s.buf)
	if s.next == 0 {
		s.full = true
	}
}

func (s *series) lastLocked() (Sample, bool) {
	if !s.full && s.next == 0 {
		return Sample{}, false
	}
	return s.buf[(s.next-1+len(s.buf))%len(s.buf)], true
}

// since returns the samples after t (Unix ms), oldest first.
func (s *series) since(t int64) []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Sample, 0, len(s.buf))
	start, n := 0, s.next
	if s.full {
		start, n = s.next, len(s.buf)
	}
	for i := 0; i < n; i++ {
		v := s.buf[(start+i)%len(s.buf)]
		if v.T > t {
			out = append(out, v)
		}
	}
	return out
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
