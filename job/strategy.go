package job

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// Strategy decides, for each failure of a job, whether the job is restarted
// and after what delay. It mirrors Flink's RestartBackoffTimeStrategy.
//
// A Strategy is stateful (it counts failures) and belongs to one job; it is
// not safe for concurrent use (the [Runner] serialises its calls).
type Strategy interface {
	// OnFailure records a failure at time now and says whether to restart
	// and after what delay.
	OnFailure(now time.Time) (delay time.Duration, restart bool)
	// OnRunning tells the strategy an attempt became healthy (RUNNING) at
	// now. exponential-delay uses it to reset its backoff once the job has
	// been running for ResetBackoffThreshold; the others ignore it.
	OnRunning(now time.Time)
	// Name is the canonical strategy name, e.g. "fixed-delay".
	Name() string
	// Describe names the strategy with its effective parameters, e.g.
	// "fixed-delay(attempts=3, delay=5s)".
	Describe() string
}

// Strategy names accepted in [Config.Strategy].
const (
	StrategyFixedDelay       = "fixed-delay"
	StrategyExponentialDelay = "exponential-delay"
	StrategyFailureRate      = "failure-rate"
	StrategyNone             = "none"
)

// StrategyNames lists the canonical strategy names.
var StrategyNames = []string{StrategyFixedDelay, StrategyExponentialDelay, StrategyFailureRate, StrategyNone}

// strategyAliases maps every accepted spelling (Flink's included) to the
// canonical name.
var strategyAliases = map[string]string{
	"":                  StrategyFixedDelay,
	"fixed-delay":       StrategyFixedDelay,
	"fixeddelay":        StrategyFixedDelay,
	"exponential-delay": StrategyExponentialDelay,
	"exponentialdelay":  StrategyExponentialDelay,
	"failure-rate":      StrategyFailureRate,
	"failurerate":       StrategyFailureRate,
	"none":              StrategyNone,
	"off":               StrategyNone,
	"disable":           StrategyNone,
}

// Defaults applied to zero-valued [Config] fields.
const (
	DefaultFixedDelayAttempts     = 3
	DefaultDelay                  = 5 * time.Second
	DefaultInitialBackoff         = time.Second
	DefaultMaxBackoff             = time.Minute
	DefaultBackoffMultiplier      = 1.5
	DefaultResetBackoffThreshold  = time.Hour
	DefaultJitterFactor           = 0.1
	DefaultMaxFailuresPerInterval = 1
	DefaultFailureRateInterval    = time.Minute
)

// Config selects and parameterises a restart strategy. Zero-valued fields
// take the defaults documented on each field, so Config{} is
// fixed-delay(attempts=3, delay=5s). See the package documentation for the
// Flink configuration key each field mirrors.
//
// Because zero means "default", a few values Flink accepts cannot be
// expressed: fixed-delay with 0 attempts (use "none", which behaves the same),
// a zero delay (use a small positive one) and a zero jitter factor (use a
// tiny positive one).
type Config struct {
	// Strategy is "fixed-delay" (default), "exponential-delay",
	// "failure-rate" or "none". Flink's aliases (fixeddelay,
	// exponentialdelay, failurerate, off, disable) are accepted.
	Strategy string

	// Attempts is the number of restarts allowed.
	//   fixed-delay: over the life of the job (restart-strategy.fixed-delay.attempts);
	//     default 3, so the 4th failure makes the job FAILED.
	//   exponential-delay: between two backoff resets
	//     (restart-strategy.exponential-delay.attempts-before-reset-backoff);
	//     default 0 = unlimited.
	// Ignored by failure-rate and none.
	Attempts int
	// Delay between a failure and the restart for fixed-delay and
	// failure-rate. Default 5s.
	Delay time.Duration

	// InitialBackoff is exponential-delay's first delay. Default 1s.
	InitialBackoff time.Duration
	// MaxBackoff caps exponential-delay's delay. Default 1m.
	MaxBackoff time.Duration
	// BackoffMultiplier grows the delay after every failure. Default 1.5;
	// must be >= 1 (Flink requires > 1; 1 gives a constant delay).
	BackoffMultiplier float64
	// ResetBackoffThreshold is how long the job must run (RUNNING) without
	// failure for the backoff and attempt counter to reset. Default 1h.
	ResetBackoffThreshold time.Duration
	// JitterFactor is the portion of the delay added or subtracted at
	// random, in [0, 1]. Default 0.1.
	JitterFactor float64

	// MaxFailuresPerInterval is failure-rate's allowance: more failures than
	// this within FailureRateInterval make the job FAILED. Default 1.
	MaxFailuresPerInterval int
	// FailureRateInterval is failure-rate's sliding window. Default 1m.
	FailureRateInterval time.Duration

	// Rand returns a number in [0, 1) for jitter. nil uses math/rand/v2.
	// Tests inject a deterministic source.
	Rand func() float64
}

// DefaultConfig returns the fixed-delay default configuration with every
// field set explicitly (useful as the base that flags overlay).
func DefaultConfig() Config {
	return Config{
		Strategy:               StrategyFixedDelay,
		Attempts:               DefaultFixedDelayAttempts,
		Delay:                  DefaultDelay,
		InitialBackoff:         DefaultInitialBackoff,
		MaxBackoff:             DefaultMaxBackoff,
		BackoffMultiplier:      DefaultBackoffMultiplier,
		ResetBackoffThreshold:  DefaultResetBackoffThreshold,
		JitterFactor:           DefaultJitterFactor,
		MaxFailuresPerInterval: DefaultMaxFailuresPerInterval,
		FailureRateInterval:    DefaultFailureRateInterval,
	}
}

// canonicalName returns the canonical name for s, or false.
func canonicalName(s string) (string, bool) {
	n, ok := strategyAliases[strings.ToLower(strings.TrimSpace(s))]
	return n, ok
}

// withDefaults returns c with its zero-valued fields set to the defaults of
// its strategy and Strategy made canonical. c must have been validated.
func (c Config) withDefaults() Config {
	c.Strategy, _ = canonicalName(c.Strategy)
	if c.Attempts == 0 && c.Strategy == StrategyFixedDelay {
		c.Attempts = DefaultFixedDelayAttempts
	}
	if c.Delay == 0 {
		c.Delay = DefaultDelay
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.BackoffMultiplier == 0 {
		c.BackoffMultiplier = DefaultBackoffMultiplier
	}
	if c.ResetBackoffThreshold == 0 {
		c.ResetBackoffThreshold = DefaultResetBackoffThreshold
	}
	if c.JitterFactor == 0 {
		c.JitterFactor = DefaultJitterFactor
	}
	if c.MaxFailuresPerInterval == 0 {
		c.MaxFailuresPerInterval = DefaultMaxFailuresPerInterval
	}
	if c.FailureRateInterval == 0 {
		c.FailureRateInterval = DefaultFailureRateInterval
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// Validate reports every problem with c, joined. Zero values are valid (they
// mean "default"); negative values, a multiplier below 1, a jitter factor
// outside [0, 1], an initial backoff above the max backoff and an unknown
// strategy name are not.
func (c Config) Validate() error {
	var errs []error
	name, ok := canonicalName(c.Strategy)
	if !ok {
		errs = append(errs, fmt.Errorf("unknown restart strategy %q: valid strategies are %s",
			c.Strategy, strings.Join(StrategyNames, ", ")))
	}
	nonNeg := func(field string, neg bool, v any) {
		if neg {
			errs = append(errs, fmt.Errorf("restart strategy: %s must not be negative, got %v", field, v))
		}
	}
	nonNeg("attempts", c.Attempts < 0, c.Attempts)
	nonNeg("delay", c.Delay < 0, c.Delay)
	nonNeg("initial backoff", c.InitialBackoff < 0, c.InitialBackoff)
	nonNeg("max backoff", c.MaxBackoff < 0, c.MaxBackoff)
	nonNeg("reset backoff threshold", c.ResetBackoffThreshold < 0, c.ResetBackoffThreshold)
	nonNeg("max failures per interval", c.MaxFailuresPerInterval < 0, c.MaxFailuresPerInterval)
	nonNeg("failure rate interval", c.FailureRateInterval < 0, c.FailureRateInterval)
	if c.BackoffMultiplier != 0 && !(c.BackoffMultiplier >= 1) { // also catches NaN
		errs = append(errs, fmt.Errorf("restart strategy: backoff multiplier must be >= 1, got %v", c.BackoffMultiplier))
	} else if math.IsInf(c.BackoffMultiplier, 0) {
		errs = append(errs, fmt.Errorf("restart strategy: backoff multiplier must be finite"))
	}
	if !(c.JitterFactor >= 0 && c.JitterFactor <= 1) { // also catches NaN
		errs = append(errs, fmt.Errorf("restart strategy: jitter factor must be within [0, 1], got %v", c.JitterFactor))
	}
	if ok && name == StrategyExponentialDelay && c.InitialBackoff >= 0 && c.MaxBackoff >= 0 {
		d := c.withDefaults()
		if d.InitialBackoff > d.MaxBackoff {
			errs = append(errs, fmt.Errorf("restart strategy: initial backoff %v must not exceed max backoff %v",
				d.InitialBackoff, d.MaxBackoff))
		}
	}
	return errors.Join(errs...)
}

// NewStrategy validates c, applies defaults and returns a fresh strategy.
func NewStrategy(c Config) (Strategy, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	switch c.Strategy {
	case StrategyFixedDelay:
		return &fixedDelay{attempts: c.Attempts, delay: c.Delay}, nil
	case StrategyExponentialDelay:
		return &exponentialDelay{
			initial:    c.InitialBackoff,
			max:        c.MaxBackoff,
			multiplier: c.BackoffMultiplier,
			reset:      c.ResetBackoffThreshold,
			jitter:     c.JitterFactor,
			attempts:   c.Attempts,
			rand:       c.Rand,
		}, nil
	case StrategyFailureRate:
		return &failureRate{max: c.MaxFailuresPerInterval, interval: c.FailureRateInterval, delay: c.Delay}, nil
	case StrategyNone:
		return noRestart{}, nil
	}
	panic("unreachable: validated strategy name " + c.Strategy)
}

// fixedDelay is Flink's fixed-delay strategy
// (FixedDelayRestartBackoffTimeStrategy): every failure increments a
// counter that is never reset, and the job restarts after delay while the
// counter is <= attempts. attempts=3 allows 3 restarts; the 4th failure
// makes the job FAILED.
type fixedDelay struct {
	attempts int
	delay    time.Duration
	failures int
}

func (s *fixedDelay) OnFailure(time.Time) (time.Duration, bool) {
	s.failures++
	if s.failures > s.attempts {
		return 0, false
	}
	return s.delay, true
}

func (s *fixedDelay) OnRunning(time.Time) {}
func (s *fixedDelay) Name() string        { return StrategyFixedDelay }
func (s *fixedDelay) Describe() string {
	return fmt.Sprintf("fixed-delay(attempts=%d, delay=%v)", s.attempts, s.delay)
}

// exponentialDelay is Flink's exponential-delay strategy
// (ExponentialDelayRestartBackoffTimeStrategy, Flink 1.19+):
//
//   - the n-th restart since the last reset (n from 0) waits
//     min(initial*multiplier^n, max) ± jitter, clamped to [initial, max];
//   - a failure after the job has been RUNNING for at least reset resets n
//     (and so the backoff) to 0;
//   - with attempts > 0, the job is FAILED when n reaches attempts, i.e.
//     attempts restarts are allowed between resets.
//
// Flink measures the healthy period from the scheduled restart time; here it
// is measured from the moment the attempt reported RUNNING (OnRunning), so
// time spent recovering does not count as healthy.
type exponentialDelay struct {
	initial, max time.Duration
	multiplier   float64
	reset        time.Duration
	jitter       float64
	attempts     int // 0 = unlimited
	rand         func() float64

	n            int       // restarts since the last reset
	runningSince time.Time // zero unless the current attempt is RUNNING
}

func (s *exponentialDelay) OnFailure(now time.Time) (time.Duration, bool) {
	if !s.runningSince.IsZero() && now.Sub(s.runningSince) >= s.reset {
		s.n = 0
	}
	s.runningSince = time.Time{}
	if s.attempts > 0 && s.n >= s.attempts {
		return 0, false
	}
	d := s.backoff(s.n)
	s.n++
	return d, true
}

// backoff computes the delay of the n-th restart since the last reset.
func (s *exponentialDelay) backoff(n int) time.Duration {
	base := float64(s.initial) * math.Pow(s.multiplier, float64(n))
	if base > float64(s.max) || math.IsInf(base, 0) || math.IsNaN(base) {
		base = float64(s.max)
	}
	d := base
	if s.jitter > 0 {
		d += base * s.jitter * (2*s.rand() - 1) // uniform in [-base*jitter, +base*jitter)
	}
	d = math.Max(float64(s.initial), math.Min(d, float64(s.max)))
	return time.Duration(d)
}

func (s *exponentialDelay) OnRunning(now time.Time) {
	if s.runningSince.IsZero() {
		s.runningSince = now
	}
}

func (s *exponentialDelay) Name() string { return StrategyExponentialDelay }
func (s *exponentialDelay) Describe() string {
	att := "unlimited"
	if s.attempts > 0 {
		att = fmt.Sprint(s.attempts)
	}
	return fmt.Sprintf("exponential-delay(initial-backoff=%v, max-backoff=%v, multiplier=%g, reset-backoff-threshold=%v, jitter=%g, attempts-before-reset=%s)",
		s.initial, s.max, s.multiplier, s.reset, s.jitter, att)
}

// failureRate is Flink's failure-rate strategy
// (FailureRateRestartBackoffTimeStrategy): it keeps the times of the last
// max+1 failures and refuses to restart when the oldest of them is no more
// than interval before now, i.e. when more than max failures fell within the
// sliding window (now-interval, now] — inclusive at interval, as in Flink.
type failureRate struct {
	max      int
	interval time.Duration
	delay    time.Duration
	times    []time.Time // the last up to max+1 failure times, oldest first
}

func (s *failureRate) OnFailure(now time.Time) (time.Duration, bool) {
	s.times = append(s.times, now)
	if len(s.times) > s.max+1 {
		s.times = append(s.times[:0], s.times[len(s.times)-(s.max+1):]...)
	}
	if len(s.times) > s.max && now.Sub(s.times[0]) <= s.interval {
		return 0, false
	}
	return s.delay, true
}

func (s *failureRate) OnRunning(time.Time) {}
func (s *failureRate) Name() string        { return StrategyFailureRate }
func (s *failureRate) Describe() string {
	return fmt.Sprintf("failure-rate(max-failures-per-interval=%d, interval=%v, delay=%v)", s.max, s.interval, s.delay)
}

// noRestart is Flink's "none" strategy: never restart.
type noRestart struct{}

func (noRestart) OnFailure(time.Time) (time.Duration, bool) { return 0, false }
func (noRestart) OnRunning(time.Time)                       {}
func (noRestart) Name() string                              { return StrategyNone }
func (noRestart) Describe() string                          { return "none" }
