// Package integration runs txstream's binaries as real processes against a
// broker in another process, so that crashes (SIGKILL) and restarts are
// real. The broker is Apache Kafka (test/kafkatest: one KRaft node from the
// jars test/kafka/kafka.sh fetches with Maven) or the development broker
// (cmd/devbroker, franz-go's kfake):
//
//	TXSTREAM_TEST_BROKER=kafka   real Kafka; the test fails if it cannot run here
//	TXSTREAM_TEST_BROKER=kfake   devbroker
//	(unset)                      real Kafka where Java and the jars (or Maven) are
//	                             available, else devbroker, with one logged line why
//
// Shared helpers (this file):
//
//	bins := buildBinaries(t)           // go build, once per test binary
//	path := bins.Path("producer")      // builds ./cmd/producer on first use
//	b := startBroker(t, dataDir)        // broker on 127.0.0.1, free port; dataDir "" = in memory (devbroker) / temporary (Kafka)
//	b.Addr                              // host:port
//	b.Kind                              // "kafka" or "kfake"
//	b.Kill(); b.Restart()               // SIGKILL, then start again on the same address and data dir
//	b.Stop()                            // SIGTERM (clean shutdown) and wait
//	startDevbroker(t, dataDir, args...) // always devbroker (for devbroker-only flags)
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/txstream/txstream/test/kafkatest"
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

// Broker kinds (TXSTREAM_TEST_BROKER).
const (
	brokerKafka = "kafka" // Apache Kafka, test/kafkatest
	brokerKfake = "kfake" // cmd/devbroker
)

var (
	kindOnce   sync.Once
	kindChosen string
	kindErr    string // TXSTREAM_TEST_BROKER=kafka but Kafka cannot run
	kindWhy    string // why the default is kfake
	kindLogged sync.Once
)

// testBrokerKind is the broker kind of this test binary, chosen once.
func testBrokerKind(t testing.TB) string {
	t.Helper()
	kindOnce.Do(func() {
		switch env := os.Getenv("TXSTREAM_TEST_BROKER"); env {
		case brokerKfake:
			kindChosen = brokerKfake
		case brokerKafka:
			kindChosen = brokerKafka
			if ok, why := kafkatest.Available(); !ok {
				kindErr = "TXSTREAM_TEST_BROKER=kafka, but real Kafka cannot run here: " + why
			}
		case "":
			if ok, why := kafkatest.Available(); ok {
				kindChosen = brokerKafka
			} else {
				kindChosen, kindWhy = brokerKfake, why
			}
		default:
			kindErr = fmt.Sprintf("TXSTREAM_TEST_BROKER=%q: want %q or %q", env, brokerKafka, brokerKfake)
		}
	})
	if kindErr != "" {
		t.Fatal(kindErr)
	}
	if kindWhy != "" {
		first := false
		kindLogged.Do(func() { first = true })
		if first {
			t.Logf("integration tests use devbroker (kfake), not real Kafka: %s (TXSTREAM_TEST_BROKER=kafka|kfake chooses)", kindWhy)
		}
	}
	return kindChosen
}

// Broker is a broker process: Apache Kafka or devbroker (Kind).
type Broker struct {
	t       testing.TB
	Kind    string // brokerKafka or brokerKfake
	bin     string
	DataDir string // devbroker: "" = in memory; Kafka: its directory (data, config, server.log)
	Addr    string // host:port, the same across restarts
	extra   []string
	logPath string // devbroker's output

	kafka *kafkatest.Broker

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
}

// Devbroker flags that only devbroker understands: a broker started with
// them is a devbroker whatever the chosen kind (its TLS and SASL listener
// is devbroker's; real Kafka would need keystores and JAAS set up).
var kfakeOnlyFlags = map[string]bool{
	"--advertise": true, "--sync": true,
}

// startBroker starts the chosen kind of broker (testBrokerKind) on
// 127.0.0.1 with a free port and waits until it serves. extraArgs are
// devbroker flags; for Kafka, --topics (created at start) and --partitions
// (of those and of auto-created topics; devbroker's default, 3, otherwise)
// carry over, --tls-cert, --tls-key and --sasl-users-file make a SASL_SSL
// listener (startKafkaSecure; Addr is then that listener's), --log-level is
// ignored, and any kfakeOnlyFlags keep this broker on devbroker.
//
// dataDir: devbroker keeps everything in memory for "", otherwise topics,
// offsets and transactions persist there across Kill/Restart. Kafka always
// persists, in dataDir or a temporary directory. The broker is killed when
// the test ends.
func startBroker(t testing.TB, dataDir string, extraArgs ...string) *Broker {
	t.Helper()
	buildBinaries(t) // skips with -short
	if testBrokerKind(t) == brokerKafka {
		for _, a := range extraArgs {
			if kfakeOnlyFlags[a] {
				t.Logf("broker: devbroker, not Kafka: %s is a devbroker-only flag", a)
				return startDevbroker(t, dataDir, extraArgs...)
			}
		}
		return startKafka(t, dataDir, extraArgs...)
	}
	return startDevbroker(t, dataDir, extraArgs...)
}

// startKafka starts Apache Kafka; extraArgs are devbroker flags, see
// startBroker.
func startKafka(t testing.TB, dataDir string, extraArgs ...string) *Broker {
	t.Helper()
	opts := kafkatest.Options{Dir: dataDir, Partitions: 3}
	var sec kafkaSecurity
	for i := 0; i < len(extraArgs); i++ {
		flag, val := extraArgs[i], ""
		if k, v, ok := strings.Cut(flag, "="); ok {
			flag, val = k, v
		} else if i+1 < len(extraArgs) {
			val = extraArgs[i+1]
			i++
		}
		switch flag {
		case "--topics":
			for _, tp := range strings.Split(val, ",") {
				if tp = strings.TrimSpace(tp); tp != "" {
					opts.Topics = append(opts.Topics, tp)
				}
			}
		case "--partitions":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				t.Fatalf("startBroker: --partitions %q", val)
			}
			opts.Partitions = n
		case "--tls-cert":
			sec.cert = val
		case "--tls-key":
			sec.key = val
		case "--sasl-users-file":
			sec.users = val
		case "--log-level":
		default:
			t.Fatalf("startBroker: devbroker flag %s has no Kafka equivalent here; add it to startKafka or kfakeOnlyFlags", flag)
		}
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "kafka")
	}
	if sec.on() {
		if sec.cert == "" || sec.key == "" {
			t.Fatal("startBroker: Kafka's secure listener needs --tls-cert and --tls-key")
		}
		return startKafkaSecure(t, opts, sec)
	}
	k := kafkatest.Start(t, opts)
	return &Broker{t: t, Kind: brokerKafka, DataDir: k.Dir, Addr: k.Addr, kafka: k}
}

// startDevbroker starts a devbroker (kfake) whatever TXSTREAM_TEST_BROKER
// says: for tests of devbroker itself or of its devbroker-only flags.
// extraArgs go to devbroker as they are (e.g. "--partitions", "1").
func startDevbroker(t testing.TB, dataDir string, extraArgs ...string) *Broker {
	t.Helper()
	bins := buildBinaries(t)
	b := &Broker{
		t: t, Kind: brokerKfake, bin: bins.Path("devbroker"), DataDir: dataDir, extra: extraArgs,
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
// clean shutdown. (Without devbroker --sync, and with Kafka's default of no
// fsync per write, written data is in the page cache, which survives a
// process kill.)
func (b *Broker) Kill() {
	if b.kafka != nil {
		b.kafka.Kill()
		return
	}
	b.signal(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM and waits for a clean shutdown.
func (b *Broker) Stop() {
	if b.kafka != nil {
		b.kafka.Stop()
		return
	}
	b.signal(syscall.SIGTERM, 30*time.Second)
}

// Restart starts the broker again with the same data directory on the same
// address, so that clients configured with Addr reconnect. A running broker
// is killed first. (Kafka after a kill takes a few seconds longer: the
// controller must first expire the killed broker's registration.)
func (b *Broker) Restart() {
	b.t.Helper()
	if b.kafka != nil {
		b.kafka.Restart()
		return
	}
	b.Kill()
	b.start(b.Addr)
}

// Pid is the broker's current process id (0: not started).
func (b *Broker) Pid() int {
	if b.kafka != nil {
		return b.kafka.Pid()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Running reports whether the broker process is up.
func (b *Broker) Running() bool {
	if b.kafka != nil {
		return b.kafka.Running()
	}
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

// Logs returns the broker's output so far, all starts: Kafka's server.log
// or devbroker's stdout and stderr.
func (b *Broker) Logs() string {
	if b.kafka != nil {
		return b.kafka.Logs()
	}
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
