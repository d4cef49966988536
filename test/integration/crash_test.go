package integration

import (
	"bufio"
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// consumerProc is one consumer process.
type consumerProc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	code int
}

func startConsumer(t *testing.T, bins *Binaries, env []string, args ...string) *consumerProc {
	t.Helper()
	cmd := exec.Command(bins.Path("consumer"), args...)
	cmd.Env = append(os.Environ(), env...)
	return runConsumer(t, cmd)
}

// runConsumer starts cmd (a consumer command line) with its output
// captured, records its exit code (128+signal when killed) and kills it at
// the end of the test.
func runConsumer(t *testing.T, cmd *exec.Cmd) *consumerProc {
	t.Helper()
	p := &consumerProc{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *consumerProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the process has exited.
func (p *consumerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit within d; it reports whether it did.
func (p *consumerProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// consumerArgs are the settings crash tests use: short epochs and snapshot
// intervals, so that kills land between commits and during snapshots.
func consumerArgs(broker, dir, instance string, extra ...string) []string {
	args := []string{"--brokers", broker, "--log-format", "json", "--log-level", "info",
		"--http", "", "--instance-id", instance,
		"--data-dir", filepath.Join(dir, "data-"+instance), "--checkpoint-dir", filepath.Join(dir, "checkpoints"),
		"--commit-interval", "150ms", "--checkpoint-interval", "300ms", "--restart-delay", "500ms",
		"--session-timeout", "10s"}
	return append(args, extra...)
}

// runToIdle runs a consumer until it finishes on idle input and checks it
// exited 0.
func runToIdle(t *testing.T, bins *Binaries, args []string) *consumerProc {
	t.Helper()
	p := startConsumer(t, bins, nil, append(args, "--exit-when-idle", "3s")...)
	if !p.wait(3 * time.Minute) {
		t.Fatalf("consumer did not finish within 3 minutes; log tail:\n%s", tail(p.log.String(), 4000))
	}
	if p.code != 0 {
		t.Fatalf("consumer exited %d; log tail:\n%s", p.code, tail(p.log.String(), 4000))
	}
	return p
}

// TestCrashRecoveryExactlyOnce feeds ~200k rows live while the consumer is
// killed again and again: at random moments and at named crash points
// around the transaction commit and inside snapshot writes, in both
// snapshot modes. After a last
// run to idle, the committed output must be exactly what one failure-free
// pass computes.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	// Named crash points: the Nth pass kills the process (SIGKILL, no
	// cleanup), so each lands exactly where docs/DESIGN.md's crash table says.
	// Armed on odd runs; runs 1, 5, 9, 13 are incremental (pool GC exists
	// only there), 3, 7, 11 full.
	points := []string{"after-sink-commit:4", "before-sink-commit:3", "snapshot-copy:5", "after-state-apply:6",
		"pool-gc:1", "after-sink-commit:9", "snapshot-publish:2"}
	// Both snapshot modes, alternating in pairs of runs: every run
	// restores what a run in the other mode wrote, and GC must keep
	// the pool files incremental snapshots share.
	crashRecovery(t, points, func(i int) []string {
		return []string{"--checkpoint-mode", []string{"incremental", "full"}[(i/2)%2]}
	})
}

// TestCrashRecoveryExactlyOnceChangelog is TestCrashRecoveryExactlyOnce
// in changelog mode: recoveries restore a base plus its change-log
// segments (a base every 4 snapshots, no size rule: the state is small),
// and processes are killed while a segment is written and while a base
// is copied. Runs 4 and 10 are incremental: a changelog base restores
// in incremental mode and an incremental snapshot starts a change log.
func TestCrashRecoveryExactlyOnceChangelog(t *testing.T) {
	points := []string{"after-sink-commit:4", "segment-append:3", "before-sink-commit:3", "snapshot-copy:2",
		"after-state-apply:6", "segment-append:8", "after-sink-commit:9"}
	restores := crashRecovery(t, points, func(i int) []string {
		if i == 4 || i == 10 {
			return []string{"--checkpoint-mode", "incremental"}
		}
		return []string{"--checkpoint-mode", "changelog", "--changelog-base-every", "4", "--changelog-max-ratio", "0"}
	})
	if restores == 0 {
		t.Error("no recovery applied change-log segments: the test does not exercise them")
	}
}

// crashRecovery runs 14 killed runs (points armed on the odd ones, with
// the extra arguments mode(i)), a final run to idle and the output check.
// It returns how many runs restored change-log segments.
func crashRecovery(t *testing.T, points []string, mode func(i int) []string) (segRestores int) {
	bins := buildBinaries(t)
	rows := 200_000
	if testing.Short() {
		rows = 20_000
	}
	ds := genDataset(t, rows, 1000, 42)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", "transactions")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodErr := make(chan error, 1)
	// ~45 s of live input: longer than the kill sequence, so that every
	// run has records to process and its crash point is reached.
	go func() { prodErr <- produceRaw(ctx, broker.Addr, ds.lines, rows/45) }()

	seed := uint64(time.Now().UnixNano())
	t.Logf("random kill schedule seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	kills, armed := 0, 0
	var fired []string
	for i := 0; i < 14; i++ {
		var env []string
		point := ""
		if i%2 == 1 && len(points) > 0 {
			point = points[0]
			env = []string{"TXSTREAM_TEST_CRASH=" + point}
			points = points[1:]
			armed++
		}
		p := startConsumer(t, bins, env, consumerArgs(broker.Addr, dir, "c1", append(mode(i), "--checkpoint-gc-grace", "0")...)...)
		if env != nil {
			// A crash point that is never reached (e.g. no GC work yet)
			// is cut short by a kill like the others.
			if p.wait(6 * time.Second) {
				fired = append(fired, point) // it killed itself at the point
			} else {
				p.kill()
			}
		} else {
			time.Sleep(time.Duration(700+rng.IntN(1800)) * time.Millisecond)
			p.kill()
		}
		if p.code != 137 {
			t.Fatalf("run %d: consumer exited %d before being killed; log tail:\n%s", i, p.code, tail(p.log.String(), 4000))
		}
		kills++
		if strings.Contains(p.log.String(), " change-log segments\"") {
			segRestores++
		}
		if strings.Contains(p.log.String(), `"level":"error"`) {
			t.Logf("run %d logged errors:\n%s", i, grepLines(p.log.String(), `"level":"error"`, 5))
		}
	}
	if err := <-prodErr; err != nil {
		t.Fatalf("producing: %v", err)
	}
	t.Logf("crash points that fired: %v (of %d armed)", fired, armed)
	if len(fired) < armed-1 {
		t.Errorf("only %d of %d crash points fired: the test no longer reaches them", len(fired), armed)
	}
	final := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1", mode(14)...))
	if !strings.Contains(final.log.String(), "restore snapshot") && !strings.Contains(final.log.String(), `"from":"snapshot`) {
		t.Errorf("final run did not restore any snapshot; log:\n%s", grepLines(final.log.String(), "recover", 10))
	}
	if strings.Contains(final.log.String(), " change-log segments\"") {
		segRestores++
	}
	t.Logf("%d runs restored change-log segments", segRestores)
	t.Logf("%d kills; verifying %d rows (%d valid, %d duplicates, %d bad)", kills, rows, ds.exp.Valid, ds.exp.Duplicates, ds.exp.Bad)
	verifyOutput(t, broker.Addr, ds.exp)

	// The checkpoint directory is a cache: losing it costs a full replay,
	// never correctness. Delete it, add input, and check again.
	if err := os.RemoveAll(filepath.Join(dir, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	more := genDataset(t, 5000, 1000, 43)
	for i, l := range more.lines { // new transactions: ids of their own
		more.lines[i] = bytes.Replace(l, []byte("TX-"), []byte("TY-"), 1)
	}
	if err := produceRaw(ctx, broker.Addr, more.lines, 0); err != nil {
		t.Fatal(err)
	}
	both := combine(t, ds, more)
	p := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1", mode(15)...))
	if !strings.Contains(p.log.String(), `"from":"empty"`) {
		t.Errorf("expected recovery from empty state after the checkpoint dir was deleted; log:\n%s", grepLines(p.log.String(), "recover", 10))
	}
	verifyOutput(t, broker.Addr, both.exp)
	return segRestores
}

func grepLines(s, sub string, max int) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}
