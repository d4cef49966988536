package main

import "testing"

// Bad invocations exit 2 before a broker starts.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"extra"},
		{"--addr", "127.0.0.1:0", "stray"},
		{"--partitions", "0"},
		{"--partitions", "4294967296"},
		{"--advertise", "host"},
		{"--no-such-flag"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
