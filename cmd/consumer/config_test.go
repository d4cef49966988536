package main

import (
	"strings"
	"testing"
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
	for _, bad := range []string{"lots", "512KiB", "-1MiB", "3GiB"} {
		if _, err := parseConfig([]string{"--max-epoch-bytes", bad}); err == nil || !strings.Contains(err.Error(), "max-epoch-bytes") {
			t.Errorf("--max-epoch-bytes %q: %v, want an error naming the flag", bad, err)
		}
	}
}
