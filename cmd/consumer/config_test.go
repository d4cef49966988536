package main

import (
	"strings"
	"testing"
	"time"

	"github.com/txstream/txstream/job"
)

// Sizes are given as sizes: --max-epoch-bytes takes 16MiB as --memory-limit
// does, a plain number of bytes still works, and a bad or too small size is
// refused with the flag's name.
func TestMaxEpochBytesIsASize(t *testing.T) {
	for _, c := range []struct {
		arg  string
		want int
	}{{"", 64 << 20}, {"16MiB", 16 << 20}, {"2097152", 2 << 20}, {"1GiB", 1 << 30}} {
		args := []string{}
		if c.arg != "" {
			args = append(args, "--max-epoch-bytes", c.arg)
		}
		cfg, err := parseConfig(args)
		if err != nil || cfg.maxEpochBytes != c.want {
			t.Errorf("--max-epoch-bytes %q: %d (%v), want %d", c.arg, cfg.maxEpochBytes, err, c.want)
		}
	}
	for _, bad := range []string{"lots", "512KiB", "-1MiB", "3GiB", "17179869185GiB"} {
		if _, err := parseConfig([]string{"--max-epoch-bytes", bad}); err == nil || !strings.Contains(err.Error(), "max-epoch-bytes") {
			t.Errorf("--max-epoch-bytes %q: %v, want an error naming the flag", bad, err)
		}
	}
}

// A size that overflows int64 once multiplied is refused, not wrapped
// (17179869184GiB wraps to 0, which --memory-limit would read as no limit).
func TestSizeOverflow(t *testing.T) {
	for _, v := range []string{"17179869184GiB", "9223372036854775807KiB", "9300000000000000000MB"} {
		if n, err := parseBytes(v); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", v, n)
		}
	}
	if _, err := parseConfig([]string{"--memory-limit", "17179869184GiB"}); err == nil || !strings.Contains(err.Error(), "memory-limit") {
		t.Errorf("--memory-limit 17179869184GiB: %v, want an error naming the flag", err)
	}
	for _, r := range []string{"NaN", "+Inf", "-1"} {
		if _, err := parseConfig([]string{"--changelog-max-ratio", r}); err == nil || !strings.Contains(err.Error(), "changelog-max-ratio") {
			t.Errorf("--changelog-max-ratio %s: %v, want an error naming the flag", r, err)
		}
	}
}

// --restart-attempts left unset means each strategy's own default:
// fixed-delay allows 3 restarts, exponential-delay any number between
// backoff resets (Flink's attempts-before-reset-backoff default).
func TestRestartAttemptsDefaultPerStrategy(t *testing.T) {
	restarts := func(args ...string) int {
		t.Helper()
		cfg, err := parseConfig(args)
		if err != nil {
			t.Fatal(err)
		}
		s, err := job.NewStrategy(cfg.restart)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(0, 0)
		n := 0
		for ; n < 50; n++ {
			d, ok := s.OnFailure(now)
			if !ok {
				break
			}
			now = now.Add(d) // restarted, failed again before the reset threshold
		}
		return n
	}
	if n := restarts(); n != 3 {
		t.Errorf("fixed-delay by default: %d restarts, want 3", n)
	}
	if n := restarts("--restart-strategy", "exponential-delay"); n != 50 {
		t.Errorf("exponential-delay by default: stopped after %d restarts, want unlimited", n)
	}
	if n := restarts("--restart-strategy", "exponential-delay", "--restart-attempts", "5"); n != 5 {
		t.Errorf("exponential-delay with --restart-attempts 5: %d restarts", n)
	}
	if n := restarts("--restart-attempts", "7"); n != 7 {
		t.Errorf("fixed-delay with --restart-attempts 7: %d restarts", n)
	}
}
