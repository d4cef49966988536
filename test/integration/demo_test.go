package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `make demo`'s program (in its fast mode) and checks its own
// summary: scenario 1 exactly-once with exact totals, scenario 2 FAILED
// with exit code 3 and no output after the failure.
func TestDemo(t *testing.T) {
	bins := buildBinaries(t)
	for _, b := range []string{"devbroker", "producer", "consumer"} {
		bins.Path(b) // the demo runs its siblings
	}
	cmd := exec.Command(bins.Path("demo"), "--fast", "--work", filepath.Join(t.TempDir(), "demo"), "--http", "127.0.0.1:0")
	cmd.Dir = bins.RepoPath(".")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(4 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("demo did not finish in 4 minutes:\n%s", out)
	}
	s := string(out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, s)
	}
	for _, want := range []string{
		"job RUNNING -> RESTARTING",
		"restore snapshot",
		"scenario 1: every transaction exactly once, totals exact: YES",
		"scenario 2: job FAILED after 3 restarts, exit code 3 (3 = FAILED): YES; output committed after the failure: 0",
		"demo passed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "-> RESTARTING"); n != 4 {
		t.Errorf("%d RESTARTING transitions, want 1 (scenario 1) + 3 (scenario 2):\n%s", n, s)
	}
}
