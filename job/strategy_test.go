package job

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// step is one event fed to a strategy: a failure at offset at (expecting
// restart/delay) or, with running set, an OnRunning call at at.
type step struct {
	at      time.Duration
	running bool
	restart bool
	delay   time.Duration
}

func fail(at time.Duration, restart bool, delay time.Duration) step {
	return step{at: at, restart: restart, delay: delay}
}

func healthy(at time.Duration) step { return step{at: at, running: true} }

func runSteps(t *testing.T, s Strategy, steps []step) {
	t.Helper()
	for i, st := range steps {
		now := t0.Add(st.at)
		if st.running {
			s.OnRunning(now)
			continue
		}
		d, ok := s.OnFailure(now)
		if ok != st.restart || (ok && d != st.delay) {
			t.Fatalf("step %d (failure at +%v): got restart=%v delay=%v, want restart=%v delay=%v",
				i, st.at, ok, d, st.restart, st.delay)
		}
	}
}

func mustStrategy(t *testing.T, c Config) Strategy {
	t.Helper()
	s, err := NewStrategy(c)
	if err != nil {
		t.Fatalf("NewStrategy(%+v): %v", c, err)
	}
	return s
}

// half makes jitter zero: 2*0.5-1 = 0.
func half() float64 { return 0.5 }

func TestStrategies(t *testing.T) {
	s := time.Second
	tests := []struct {
		name  string
		cfg   Config
		desc  string
		steps []step
	}{
		{
			name: "fixed-delay default: attempts=3 allows 3 restarts, the 4th failure fails",
			cfg:  Config{},
			desc: "fixed-delay(attempts=3, delay=5s)",
			steps: []step{
				fail(0, true, 5*s), fail(10*s, true, 5*s), fail(20*s, true, 5*s), fail(30*s, false, 0),
				fail(40*s, false, 0),
			},
		},
		{
			name:  "fixed-delay attempts=1 (Flink's default)",
			cfg:   Config{Strategy: "fixed-delay", Attempts: 1, Delay: 2 * s},
			desc:  "fixed-delay(attempts=1, delay=2s)",
			steps: []step{fail(0, true, 2*s), fail(time.Hour, false, 0)},
		},
		{
			name: "fixed-delay counts over the job's life: healthy periods do not reset it",
			cfg:  Config{Strategy: "fixeddelay", Attempts: 2, Delay: s},
			desc: "fixed-delay(attempts=2, delay=1s)",
			steps: []step{
				healthy(0), fail(24*time.Hour, true, s),
				healthy(25 * time.Hour), fail(48*time.Hour, true, s),
				healthy(49 * time.Hour), fail(72*time.Hour, false, 0),
			},
		},
		{
			name: "exponential-delay grows by the multiplier and caps at max",
			cfg: Config{Strategy: "exponential-delay", InitialBackoff: s, MaxBackoff: 10 * s,
				BackoffMultiplier: 2, Rand: half},
			desc: "exponential-delay(initial-backoff=1s, max-backoff=10s, multiplier=2, reset-backoff-threshold=1h0m0s, jitter=0.1, attempts-before-reset=unlimited)",
			steps: []step{
				fail(0, true, 1*s), fail(2*s, true, 2*s), fail(5*s, true, 4*s), fail(10*s, true, 8*s),
				fail(20*s, true, 10*s), fail(31*s, true, 10*s), fail(42*s, true, 10*s),
			},
		},
		{
			name: "exponential-delay defaults (Flink): 1s, x1.5, max 1m",
			cfg:  Config{Strategy: "exponential-delay", Rand: half},
			desc: "exponential-delay(initial-backoff=1s, max-backoff=1m0s, multiplier=1.5, reset-backoff-threshold=1h0m0s, jitter=0.1, attempts-before-reset=unlimited)",
			steps: []step{
				fail(0, true, 1000*time.Millisecond), fail(2*s, true, 1500*time.Millisecond),
				fail(4*s, true, 2250*time.Millisecond), fail(7*s, true, 3375*time.Millisecond),
			},
		},
		{
			name: "exponential-delay resets backoff after running healthy for the threshold",
			cfg: Config{Strategy: "exponential-delay", InitialBackoff: s, MaxBackoff: time.Minute,
				BackoffMultiplier: 2, ResetBackoffThreshold: 10 * time.Minute, Rand: half},
			steps: []step{
				fail(0, true, 1*s),
				healthy(2 * s), fail(5*time.Minute, true, 2*s), // healthy 5m < 10m: keeps growing
				healthy(5*time.Minute + 3*s), fail(15*time.Minute+3*s, true, 1*s), // healthy exactly 10m: reset
				fail(15*time.Minute+5*s, true, 2*s),
			},
		},
		{
			name: "exponential-delay does not reset when the job never became RUNNING",
			cfg: Config{Strategy: "exponential-delay", InitialBackoff: s, MaxBackoff: time.Hour,
				BackoffMultiplier: 2, ResetBackoffThreshold: time.Minute, Rand: half},
			steps: []step{
				fail(0, true, 1*s), fail(2*time.Hour, true, 2*s), fail(4*time.Hour, true, 4*s),
			},
		},
		{
			name: "exponential-delay attempts-before-reset-backoff: N restarts, then FAILED; reset restores them",
			cfg: Config{Strategy: "exponential-delay", Attempts: 2, InitialBackoff: s, MaxBackoff: time.Minute,
				BackoffMultiplier: 2, ResetBackoffThreshold: time.Minute, Rand: half},
			desc: "exponential-delay(initial-backoff=1s, max-backoff=1m0s, multiplier=2, reset-backoff-threshold=1m0s, jitter=0.1, attempts-before-reset=2)",
			steps: []step{
				fail(0, true, s), healthy(s), fail(10*s, true, 2*s),
				healthy(12 * s), fail(2*time.Minute, true, s), // healthy > 1m: counter reset
				fail(2*time.Minute+1*s, true, 2*s),
				fail(2*time.Minute+3*s, false, 0),
			},
		},
		{
			name: "failure-rate: more than max failures in the sliding interval fails",
			cfg:  Config{Strategy: "failure-rate", MaxFailuresPerInterval: 2, FailureRateInterval: time.Minute, Delay: 3 * s},
			desc: "failure-rate(max-failures-per-interval=2, interval=1m0s, delay=3s)",
			steps: []step{
				fail(0, true, 3*s), fail(10*s, true, 3*s), fail(20*s, false, 0),
			},
		},
		{
			name: "failure-rate: the window slides, old failures drop out",
			cfg:  Config{Strategy: "failurerate", MaxFailuresPerInterval: 2, FailureRateInterval: time.Minute, Delay: 3 * s},
			steps: []step{
				fail(0, true, 3*s), fail(10*s, true, 3*s),
				fail(71*s, true, 3*s), // in (11s,71s]: only 71s; 0s and 10s dropped out
				fail(75*s, true, 3*s), // in (15s,75s]: 71s, 75s = 2, allowed
				fail(80*s, false, 0),  // in (20s,80s]: 71s, 75s, 80s = 3 > 2
			},
		},
		{
			name: "failure-rate defaults (Flink): 1 per minute; exactly one interval apart still counts",
			cfg:  Config{Strategy: "failure-rate"},
			desc: "failure-rate(max-failures-per-interval=1, interval=1m0s, delay=5s)",
			steps: []step{
				fail(0, true, 5*s), fail(time.Minute, false, 0),
			},
		},
		{
			name: "failure-rate: one failure per interval forever is fine",
			cfg:  Config{Strategy: "failure-rate", Delay: s},
			steps: []step{
				fail(0, true, s), fail(time.Minute+time.Millisecond, true, s),
				fail(2*time.Minute+2*time.Millisecond, true, s), fail(3*time.Minute+3*time.Millisecond, true, s),
			},
		},
		{
			name:  "none never restarts",
			cfg:   Config{Strategy: "none"},
			desc:  "none",
			steps: []step{fail(0, false, 0)},
		},
		{
			name:  "off is Flink's alias of none",
			cfg:   Config{Strategy: "off"},
			desc:  "none",
			steps: []step{healthy(0), fail(time.Hour, false, 0)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustStrategy(t, tc.cfg)
			if tc.desc != "" && s.Describe() != tc.desc {
				t.Errorf("Describe() = %q, want %q", s.Describe(), tc.desc)
			}
			runSteps(t, s, tc.steps)
		})
	}
}

func TestFailureRateSlidingWindowExact(t *testing.T) {
	// max=2 per 60s. Failures at 0, 10, 71, 100:
	//   at 71: last three are 0,10,71 -> oldest 0 is 71s ago (> 60s): restart.
	//   at 100: last three are 10,71,100 -> oldest 10 is 90s ago: restart.
	//   at 130: last three are 71,100,130 -> oldest 71 is 59s ago: FAILED.
	s := mustStrategy(t, Config{Strategy: "failure-rate", MaxFailuresPerInterval: 2, FailureRateInterval: time.Minute, Delay: time.Second})
	runSteps(t, s, []step{
		fail(0, true, time.Second), fail(10*time.Second, true, time.Second),
		fail(71*time.Second, true, time.Second), fail(100*time.Second, true, time.Second),
		fail(130*time.Second, false, 0),
	})
}

func TestExponentialJitterBounds(t *testing.T) {
	const (
		initial = time.Second
		max     = 20 * time.Second
		mult    = 2.0
		jitter  = 0.25
	)
	// base for n = 0..6: 1, 2, 4, 8, 16, 20(cap), 20
	bases := []time.Duration{1, 2, 4, 8, 16, 20, 20}
	for i := range bases {
		bases[i] *= time.Second
	}
	clamp := func(d time.Duration) time.Duration { return min(max, d) }
	clampLow := func(d time.Duration) time.Duration { return maxDur(initial, d) }

	tests := []struct {
		name string
		r    float64
		want func(base time.Duration) time.Duration
	}{
		{"lowest jitter (r=0) subtracts base*factor, never below initial", 0,
			func(b time.Duration) time.Duration { return clampLow(b - b/4) }},
		{"no jitter (r=0.5)", 0.5, func(b time.Duration) time.Duration { return b }},
		{"r=0.75 adds base*factor/2, never above max", 0.75,
			func(b time.Duration) time.Duration { return clamp(b + b/8) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustStrategy(t, Config{Strategy: "exponential-delay", InitialBackoff: initial, MaxBackoff: max,
				BackoffMultiplier: mult, JitterFactor: jitter, Rand: func() float64 { return tc.r }})
			for n, b := range bases {
				d, ok := s.OnFailure(t0)
				if !ok || d != tc.want(b) {
					t.Fatalf("restart %d: got %v,%v want %v", n, d, ok, tc.want(b))
				}
			}
		})
	}

	t.Run("random jitter stays within base±factor and [initial,max]", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		seen := map[int][2]time.Duration{}
		for trial := 0; trial < 300; trial++ {
			s := mustStrategy(t, Config{Strategy: "exponential-delay", InitialBackoff: initial, MaxBackoff: max,
				BackoffMultiplier: mult, JitterFactor: jitter, Rand: rng.Float64})
			for n, b := range bases {
				d, _ := s.OnFailure(t0)
				lo := maxDur(initial, b-time.Duration(float64(b)*jitter))
				hi := min(max, b+time.Duration(float64(b)*jitter))
				if d < lo || d > hi {
					t.Fatalf("restart %d: delay %v outside [%v, %v]", n, d, lo, hi)
				}
				mm, ok := seen[n]
				if !ok {
					mm = [2]time.Duration{d, d}
				}
				seen[n] = [2]time.Duration{min(mm[0], d), maxDur(mm[1], d)}
			}
		}
		// Jitter really varies the delay (n=3: base 8s, range [6s, 10s]).
		if r := seen[3]; r[1]-r[0] < 3*time.Second {
			t.Errorf("jitter spread at n=3 too small: %v..%v", r[0], r[1])
		}
		// At the cap the delay still varies, downwards only.
		if r := seen[6]; r[0] > 16*time.Second || r[1] > max {
			t.Errorf("jitter at cap: %v..%v", r[0], r[1])
		}
	})
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func TestExponentialHugeAttemptCountStaysAtMax(t *testing.T) {
	s := mustStrategy(t, Config{Strategy: "exponential-delay", BackoffMultiplier: 10, Rand: half})
	var d time.Duration
	for i := 0; i < 2000; i++ { // 10^2000 overflows float64 to +Inf
		d, _ = s.OnFailure(t0)
	}
	if d != time.Minute {
		t.Fatalf("delay after 2000 failures = %v, want max 1m", d)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings; nil = valid
	}{
		{"zero config is valid", Config{}, nil},
		{"defaults are valid", DefaultConfig(), nil},
		{"aliases", Config{Strategy: "ExponentialDelay"}, nil},
		{"disable alias", Config{Strategy: "disable"}, nil},
		{"multiplier 1 allowed (constant delay)", Config{Strategy: "exponential-delay", BackoffMultiplier: 1}, nil},
		{"jitter 1 allowed", Config{JitterFactor: 1}, nil},
		{"unknown strategy lists the valid ones", Config{Strategy: "linear"},
			[]string{`unknown restart strategy "linear"`, "fixed-delay, exponential-delay, failure-rate, none"}},
		{"negative attempts", Config{Attempts: -1}, []string{"attempts must not be negative"}},
		{"negative delay", Config{Delay: -time.Second}, []string{"delay must not be negative"}},
		{"negative backoffs", Config{InitialBackoff: -1, MaxBackoff: -1, ResetBackoffThreshold: -1},
			[]string{"initial backoff must not be negative", "max backoff must not be negative", "reset backoff threshold must not be negative"}},
		{"negative failure rate", Config{MaxFailuresPerInterval: -1, FailureRateInterval: -1},
			[]string{"max failures per interval must not be negative", "failure rate interval must not be negative"}},
		{"multiplier below 1", Config{BackoffMultiplier: 0.5}, []string{"backoff multiplier must be >= 1, got 0.5"}},
		{"negative multiplier", Config{BackoffMultiplier: -2}, []string{"backoff multiplier must be >= 1"}},
		{"jitter above 1", Config{JitterFactor: 1.5}, []string{"jitter factor must be within [0, 1], got 1.5"}},
		{"negative jitter", Config{JitterFactor: -0.1}, []string{"jitter factor must be within [0, 1]"}},
		{"initial above max", Config{Strategy: "exponential-delay", InitialBackoff: 2 * time.Minute},
			[]string{"initial backoff 2m0s must not exceed max backoff 1m0s"}},
		{"several problems reported together", Config{Strategy: "x", Attempts: -1, JitterFactor: 2},
			[]string{"unknown restart strategy", "attempts", "jitter"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := NewStrategy(tc.cfg); err != nil {
					t.Fatalf("NewStrategy: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, err2 := NewStrategy(tc.cfg); err2 == nil {
				t.Errorf("NewStrategy accepted an invalid config")
			}
		})
	}
}

func TestStrategyNames(t *testing.T) {
	for alias, want := range map[string]string{
		"": "fixed-delay", "fixeddelay": "fixed-delay", "exponentialdelay": "exponential-delay",
		"failurerate": "failure-rate", "none": "none", "off": "none", "disable": "none",
	} {
		if got := mustStrategy(t, Config{Strategy: alias}).Name(); got != want {
			t.Errorf("Name() for %q = %q, want %q", alias, got, want)
		}
	}
}
