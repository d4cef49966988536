// Package kafkatest runs a real Apache Kafka broker (one KRaft node,
// broker and controller, on 127.0.0.1), or a cluster of three such nodes
// (StartCluster, cluster.go), for tests, from the jars that
// test/kafka/kafka.sh fetches from Maven Central into a cache outside the
// repository.
//
//	if ok, why := kafkatest.Available(); !ok { t.Skip(why) }   // Start skips by itself too
//	b := kafkatest.Start(t, kafkatest.Options{Topics: []string{"in"}, Partitions: 3})
//	b.Addr                 // 127.0.0.1:port, the same across restarts
//	b.Kill(); b.Restart()  // SIGKILL, then start again on the same port and data
//	b.Stop()               // SIGTERM (controlled shutdown) and wait
//
// The broker is killed when the test ends; it is also killed if the test
// binary dies (Linux: parent-death signal).
//
// Environment: TXSTREAM_KAFKA_VERSION selects the version (default: the
// script's, a 4.x; 3.9.x for the pre-KIP-890 transaction protocol),
// TXSTREAM_KAFKA_CACHE the jar cache (default ~/.cache/txstream/kafka).
package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options configure a broker. The zero value is a broker with the
// script's defaults in a temporary directory on a free port.
type Options struct {
	// Dir holds the configuration, data and server.log; "" = t.TempDir().
	// A Dir that held a broker before is started with its data and port.
	Dir string
	// Port is the client port; 0 = a free one.
	Port int
	// Partitions of auto-created topics and of Topics (num.partitions);
	// 0 = the script's default (1).
	Partitions int
	// Topics are created once the broker runs (Partitions each, at least 1).
	Topics []string
	// Props override server.properties entries.
	Props map[string]string
	// StartTimeout bounds each start; 0 = 2 minutes.
	StartTimeout time.Duration
	// Version is the Kafka version; "" = Version() (a Dir keeps the
	// version it was first started with).
	Version string
}

// Broker is a running (or killed) Kafka broker process.
type Broker struct {
	Addr    string // 127.0.0.1:port (a cluster's node i: 127.0.0.<i+1>:port)
	Dir     string
	Version string

	t       testing.TB
	opts    Options
	host    string // "" = 127.0.0.1
	port    int
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	lastErr *bytes.Buffer // the script's own stderr (before it redirects to server.log)
}

var (
	availMu  sync.Mutex
	availRes = map[string]availResult{} // by version
)

type availResult struct {
	ok  bool
	why string
}

// Script is the path of test/kafka/kafka.sh in this source tree.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "kafka", "kafka.sh")
}

// Version is the Kafka version brokers run: $TXSTREAM_KAFKA_VERSION or the
// script's default (read from it, so there is one place to change it).
func Version() string {
	if v := os.Getenv("TXSTREAM_KAFKA_VERSION"); v != "" {
		return v
	}
	data, err := os.ReadFile(Script())
	if err == nil {
		if m := regexp.MustCompile(`(?m)^default_version=(\S+)$`).FindSubmatch(data); m != nil {
			return string(m[1])
		}
	}
	return "unknown"
}

// Available reports whether a real broker can run here: bash, Java 17 or
// later, and the Kafka jars in the cache or fetchable with Maven (the fetch
// is done at most once per test binary). why says what is missing.
func Available() (ok bool, why string) { return AvailableVersion(Version()) }

// AvailableVersion is Available for a given Kafka version ("" = Version()).
func AvailableVersion(ver string) (ok bool, why string) {
	if ver == "" {
		ver = Version()
	}
	availMu.Lock()
	defer availMu.Unlock()
	r, done := availRes[ver]
	if !done {
		r.ok, r.why = available(ver)
		availRes[ver] = r
	}
	return r.ok, r.why
}

func available(ver string) (bool, string) {
	if runtime.GOOS != "linux" {
		return false, "real Kafka tests run on Linux only (GOOS=" + runtime.GOOS + ")"
	}
	if _, err := exec.LookPath("bash"); err != nil {
		return false, "bash not found on PATH"
	}
	if _, err := os.Stat(Script()); err != nil {
		return false, "test/kafka/kafka.sh not found: " + err.Error()
	}
	if _, err := exec.LookPath("java"); err != nil {
		return false, "java not found on PATH (Kafka needs Java 17+)"
	}
	out, err := exec.Command("java", "-version").CombinedOutput()
	if err != nil {
		return false, fmt.Sprintf("java -version failed: %v: %s", err, firstLine(string(out)))
	}
	m := regexp.MustCompile(`version "(1\.)?(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		return false, "cannot tell the Java version from: " + firstLine(string(out))
	}
	if major, _ := strconv.Atoi(m[2]); major < 17 {
		return false, fmt.Sprintf("java is version %d; Kafka needs 17 or later", major)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", Script(), "fetch", ver)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := cmd.Output(); err != nil {
		return false, fmt.Sprintf("cannot fetch Kafka %s jars (test/kafka/kafka.sh fetch): %v: %s",
			ver, err, lastLine(stderr.String()))
	}
	return true, ""
}

// Start starts a broker and waits until it serves clients. It skips the
// test (one line saying why) where Available is false, and fails it when
// the broker does not start.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if ok, why := AvailableVersion(opts.Version); !ok {
		t.Skipf("real Kafka not available: %s", why)
	}
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{Dir: abs, Version: opts.Version, t: t, opts: opts, port: opts.Port}
	if b.Version == "" {
		b.Version = Version()
	}
	if data, err := os.ReadFile(filepath.Join(abs, "version")); err == nil {
		b.Version = strings.TrimSpace(string(data)) // a Dir keeps its version
	}
	t.Cleanup(func() {
		b.Kill()
		if t.Failed() {
			t.Logf("kafka server.log (last 4000 bytes):\n%s", tail(b.Logs(), 4000))
		}
	})
	began := time.Now()
	b.start(true)
	t.Logf("Kafka %s at %s started in %v (dir %s)", b.Version, b.Addr, time.Since(began).Round(time.Millisecond), b.Dir)
	if len(opts.Topics) > 0 {
		if err := b.CreateTopics(opts.Partitions, opts.Topics...); err != nil {
			t.Fatalf("creating topics %v: %v", opts.Topics, err)
		}
	}
	return b
}

// start runs the broker; first is false on restarts (the port is fixed).
func (b *Broker) start(first bool) {
	b.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := b.port
		if port == 0 {
			if p, err := readInt(filepath.Join(b.Dir, "port")); err == nil {
				port = p // a Dir that ran a broker before keeps its port
			} else if port, err = freePort(); err != nil {
				b.t.Fatal(err)
			}
		}
		lastErr = b.startOnce(port)
		if lastErr == nil {
			b.port = port
			return
		}
		// A port taken meanwhile is retried on new ports, when they were
		// picked here.
		if !first || b.opts.Port != 0 || !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
		os.Remove(filepath.Join(b.Dir, "port"))
		os.Remove(filepath.Join(b.Dir, "controller-port"))
	}
	b.t.Fatalf("Kafka did not start: %v", lastErr)
}

func (b *Broker) startOnce(port int) error {
	timeout := b.opts.StartTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(b.Dir, "server.log")
	var off int64
	if st, err := os.Stat(logPath); err == nil {
		off = st.Size()
	}
	args := []string{Script(), "run", b.Dir, strconv.Itoa(port)}
	props := map[string]string{}
	if b.opts.Partitions > 0 {
		props["num.partitions"] = strconv.Itoa(b.opts.Partitions)
	}
	for k, v := range b.opts.Props {
		props[k] = v
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k+"="+props[k])
	}
	cmd := exec.Command("bash", args...)
	cmd.Env = append(os.Environ(), "TXSTREAM_KAFKA_VERSION="+b.Version)
	setDeathSignal(cmd)
	stderr := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done, b.lastErr = cmd, done, stderr
	b.mu.Unlock()

	addr := net.JoinHostPort(b.hostname(), strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	started, scan := false, off
	for {
		if !started {
			// Read only what is new since the last look (with an overlap
			// for a line written in two pieces).
			data := logFrom(logPath, scan)
			started = strings.Contains(data, "Kafka Server started")
			if len(data) > 100 {
				scan += int64(len(data) - 100)
			}
		}
		if started {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				b.Addr = addr
				return nil
			}
		}
		select {
		case <-done:
			b.mu.Lock()
			b.cmd = nil
			b.mu.Unlock()
			return fmt.Errorf("the broker exited during start-up (%v)\n%s\nserver.log:\n%s",
				cmd.ProcessState, stderr.String(), tail(logFrom(logPath, off), 3000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.signal(syscall.SIGKILL, 10*time.Second)
			return fmt.Errorf("the broker did not start within %v\n%s\nserver.log:\n%s",
				timeout, stderr.String(), tail(logFrom(logPath, off), 3000))
		}
	}
}

func (b *Broker) signal(sig syscall.Signal, timeout time.Duration) bool {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

func (b *Broker) hostname() string {
	if b.host == "" {
		return "127.0.0.1"
	}
	return b.host
}

// Pid is the broker's current process id (0: not started). The start
// script execs java, so this is the JVM.
func (b *Broker) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Kill sends SIGKILL and waits until the process is gone: a crash. Data
// Kafka wrote but did not fsync is in the page cache and survives.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM (a controlled shutdown) and waits; after 30 s the
// broker is killed and the test fails.
func (b *Broker) Stop() {
	if !b.signal(syscall.SIGTERM, 30*time.Second) {
		b.t.Errorf("Kafka did not shut down within 30s of SIGTERM; killed")
	}
}

// Restart starts the broker again on the same port and data, killing a
// running one first. After a kill, the new process waits until the
// controller has expired the old registration (broker.session.timeout.ms,
// 4 s in kafka.sh).
func (b *Broker) Restart() {
	b.t.Helper()
	b.Kill()
	began := time.Now()
	b.start(false)
	b.t.Logf("Kafka restarted at %s in %v", b.Addr, time.Since(began).Round(time.Millisecond))
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

// Logs returns server.log (all starts).
func (b *Broker) Logs() string {
	data, _ := os.ReadFile(filepath.Join(b.Dir, "server.log"))
	return string(data)
}

// CreateTopics creates topics with partitions each (0 = the broker's
// num.partitions) and replication factor 1; existing topics are left as
// they are.
func (b *Broker) CreateTopics(partitions int, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	return createTopics(kadm.NewClient(cl), partitions, 1, topics)
}

// createTopics creates topics with partitions each (0 = the brokers'
// num.partitions) and replication factor rf (-1 = the brokers' default),
// leaving existing topics as they are.
func createTopics(adm *kadm.Client, partitions int, rf int16, topics []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := int32(partitions)
	if p <= 0 {
		p = -1
	}
	resp, err := adm.CreateTopics(ctx, p, rf, nil, topics...)
	if err != nil {
		return err
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("%s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readInt(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

func logFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return ""
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	return buf.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
