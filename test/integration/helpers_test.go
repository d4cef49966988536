// Package integration runs txstream's binaries as real processes against a
// development broker (cmd/devbroker, franz-go's kfake) in another process,
// so that crashes (SIGKILL) and restarts are real.
//
// Shared helpers (this file):
//
//	bins := buildBinaries(t)           // go build, once per test binary
//	path := bins.Path("producer")      // builds ./cmd/producer on first use
//	b := startBroker(t, dataDir)        // devbroker on 127.0.0.1:0; dataDir "" = in memory
//	b.Addr                              // host:port
//	b.Kill(); b.Restart()               // SIGKILL, then start again on the same address and data dir
//	b.Stop()                            // SIGTERM (clean shutdown) and wait
//
// Tests here are skipped with -short.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce  sync.Once
	binDir   string
	binErr   error
	buildMu  sync.Mutex
	built    = map[string]error{}
	repoRoot string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Binaries are the repository's commands built into one temporary
// directory, shared by all tests of the package.
type Binaries struct {
	t   testing.TB
	Dir string
}

// buildBinaries returns the shared build directory. Commands are built by
// Path on first use (go build with the build cache, so a rebuild is cheap).
func buildBinaries(t testing.TB) *Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		binDir, binErr = os.MkdirTemp("", "txstream-it-bin-")
	})
	if binErr != nil {
		t.Fatalf("creating the build directory: %v", binErr)
	}
	return &Binaries{t: t, Dir: binDir}
}

// Path builds ./cmd/<name> once and returns the binary's path.
func (b *Binaries) Path(name string) string {
	b.t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(b.Dir, name)
	err, done := built[name]
	if !done {
		cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, e, msg)
		}
		built[name] = err
	}
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// RepoPath returns a path inside the repository (e.g. "testdata/transactions.csv").
func (b *Binaries) RepoPath(rel string) string { return filepath.Join(repoRoot, rel) }

// Broker is a devbroker process.
type Broker struct {
	t       testing.TB
	bin     string
	DataDir string // "" = in memory
	Addr    string // host:port, the same across restarts
	extra   []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
}

// startBroker starts a devbroker on 127.0.0.1 with a free port and waits
// until it listens. dataDir "" keeps everything in memory; otherwise topics,
// offsets and transactions persist there across Kill/Restart. extraArgs go
// to devbroker as they are (e.g. "--partitions", "1"). The broker is killed
// when the test ends.
func startBroker(t testing.TB, dataDir string, extraArgs ...string) *Broker {
	t.Helper()
	bins := buildBinaries(t)
	b := &Broker{
		t: t, bin: bins.Path("devbroker"), DataDir: dataDir, extra: extraArgs,
		logPath: filepath.Join(t.TempDir(), "devbroker.log"),
	}
	b.start("127.0.0.1:0")
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			t.Logf("devbroker log (last 3000 bytes):\n%s", tail(b.Logs(), 3000))
		}
	})
	return b
}

func (b *Broker) start(addr string) {
	b.t.Helper()
	var lastErr error
	// Restarting on the same port can race with the old socket or another
	// process: retry a few times.
	for attempt := 0; attempt < 20; attempt++ {
		if lastErr = b.startOnce(addr); lastErr == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("devbroker did not start: %v\nlog:\n%s", lastErr, tail(b.Logs(), 3000))
}

func (b *Broker) startOnce(addr string) error {
	addrFile := filepath.Join(b.t.TempDir(), "addr")
	args := []string{"--addr", addr, "--addr-file", addrFile, "--log-level", "warn"}
	if b.DataDir != "" {
		args = append(args, "--data-dir", b.DataDir)
	}
	args = append(args, b.extra...)
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "--- start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(b.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()

	deadline := time.After(30 * time.Second)
	for {
		if data, err := os.ReadFile(addrFile); err == nil && strings.HasSuffix(string(data), "\n") {
			b.mu.Lock()
			b.cmd, b.done, b.Addr = cmd, done, strings.TrimSpace(string(data))
			b.mu.Unlock()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("devbroker exited during start-up (%v)", cmd.ProcessState)
		case <-deadline:
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("devbroker did not write %s within 30s", addrFile)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (b *Broker) signal(sig syscall.Signal, timeout time.Duration) {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		b.t.Errorf("devbroker did not exit within %v of %v; killed", timeout, sig)
	}
}

// Kill sends SIGKILL and waits for the process to be gone: a crash, no
// clean shutdown. (Without devbroker --sync, written data is in the page
// cache, which survives a process kill.)
func (b *Broker) Kill() { b.signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM and waits for a clean shutdown.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM, 30*time.Second) }

// Restart starts the broker again with the same data directory on the same
// address, so that clients configured with Addr reconnect. A running broker
// is killed first.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Kill()
	b.start(b.Addr)
}

// Running reports whether the broker process is up.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// Logs returns the broker's output so far (all starts).
func (b *Broker) Logs() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// runResult is a finished command.
type runResult struct {
	Code   int
	Stdout string
	Stderr string
}

// runBinary runs a command to completion (at most timeout).
func runBinary(t testing.TB, timeout time.Duration, bin string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			t.Fatalf("%s: %v", filepath.Base(bin), err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), timeout, tail(errb.String(), 3000))
	}
	return runResult{code, out.String(), errb.String()}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// lockedBuffer is a bytes.Buffer safe for a process writing while a test
// reads (cmd.Stdout/Stderr of a running command).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
