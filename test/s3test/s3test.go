// Package s3test runs a real S3 server for tests: versitygw (Apache-2.0)
// with its POSIX back end, built from the Go module proxy with `go
// install` into a cache outside the repository, and a small fault
// injecting proxy in front of any server.
//
//	srv := s3test.Start(t)         // skips (one line saying why) if versitygw cannot be built,
//	                               // or with -short if it is not built yet
//	srv.Endpoint                   // 127.0.0.1:port, the same across restarts
//	srv.Location("ck")             // s3://<bucket>/ck
//	srv.Kill(); srv.Restart()      // SIGKILL, then start again on the same port and data
//	p := s3test.NewProxy(t, srv.Endpoint); p.SetFailing(true); p.SetDelay(d)
//
// The server is killed when the test ends, and when the test binary dies
// (Linux: parent-death signal).
//
// Environment: TXSTREAM_VERSITYGW_CACHE is the binary cache (default
// ~/.cache/txstream/versitygw); TXSTREAM_VERSITYGW a prebuilt binary to
// use instead.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw release the harness builds.
const Version = "v1.8.0"

const module = "github.com/versity/versitygw/cmd/versitygw"

var (
	buildOnce sync.Once
	buildBin  string
	buildWhy  string
)

// Binary returns the path of the versitygw binary, building it on first use
// (at most once per test binary; a file lock keeps parallel test binaries
// from building it twice). why says what failed.
func Binary() (path, why string) {
	buildOnce.Do(func() { buildBin, buildWhy = build() })
	return buildBin, buildWhy
}

func cacheDir() (string, error) {
	if d := os.Getenv("TXSTREAM_VERSITYGW_CACHE"); d != "" {
		return filepath.Join(d, Version), nil
	}
	home, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "txstream", "versitygw", Version), nil
}

// cached reports whether a binary is there without building.
func cached() bool {
	if os.Getenv("TXSTREAM_VERSITYGW") != "" {
		return true
	}
	dir, err := cacheDir()
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "bin", "versitygw"))
	return err == nil
}

func build() (string, string) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		return "", "versitygw tests run on Linux and macOS only (GOOS=" + runtime.GOOS + ")"
	}
	if p := os.Getenv("TXSTREAM_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", "TXSTREAM_VERSITYGW: " + err.Error()
		}
		return p, ""
	}
	dir, err := cacheDir()
	if err != nil {
		return "", "no cache directory for versitygw: " + err.Error()
	}
	bin := filepath.Join(dir, "bin", "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin, ""
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", "cannot create the versitygw cache: " + err.Error()
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", "cannot lock the versitygw cache: " + err.Error()
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", "cannot lock the versitygw cache: " + err.Error()
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, "" // built by another test binary meanwhile
	}
	// go test puts its own GOROOT/bin first in the test's PATH.
	goBin := "go"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// Built outside the module (GOFLAGS=-mod=mod in a temporary dir) so that
	// the repository's go.mod is neither read nor changed.
	tmp, err := os.MkdirTemp("", "versitygw-build-")
	if err != nil {
		return "", err.Error()
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, goBin, "install", module+"@"+Version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(dir, "bin"), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Sprintf("cannot build versitygw %s (go install %s@%s): %v: %s", Version, module, Version, err, lastLine(out.String()))
	}
	return bin, ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Server is a running versitygw.
type Server struct {
	// Endpoint is host:port (plain HTTP).
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Bucket is created at start.
	Bucket string
	// Dir is the POSIX back end's root (Dir/<bucket>/<key>).
	Dir string

	t    testing.TB
	bin  string
	port int
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *bytes.Buffer
}

// Start builds (once) and starts versitygw on a free loopback port with a
// fresh bucket. It skips the test when versitygw cannot be built here.
func Start(t testing.TB) *Server {
	t.Helper()
	if testing.Short() && !cached() {
		t.Skip("S3 server (versitygw) not built yet, and go test -short does not build it (a run without -short does, once)")
	}
	bin, why := Binary()
	if why != "" {
		t.Skipf("S3 server (versitygw) not available: %s", why)
	}
	s := &Server{AccessKey: "txstream-test", SecretKey: randHex(16), Bucket: "txstream-test", Dir: t.TempDir(), t: t, bin: bin}
	if err := os.MkdirAll(filepath.Join(s.Dir, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "sidecar"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.port = freePort(t)
	s.Endpoint = "127.0.0.1:" + strconv.Itoa(s.port)
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("versitygw output (last 3000 bytes):\n%s", s.Logs(3000))
		}
	})
	s.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("versitygw: create bucket: %v", err)
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Location returns s3://<bucket>/<prefix>.
func (s *Server) Location(prefix string) string {
	return "s3://" + s.Bucket + "/" + strings.Trim(prefix, "/")
}

// Client returns a client of the server with the root credentials.
func (s *Server) Client() *minio.Client {
	cl, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		s.t.Fatal(err)
	}
	return cl
}

// Env returns the environment a consumer process needs to use the server:
// the AWS credential variables and TXSTREAM_S3_ENDPOINT/PATH_STYLE.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"TXSTREAM_S3_ENDPOINT=http://" + s.Endpoint, "TXSTREAM_S3_PATH_STYLE=true"}
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		s.logs = &bytes.Buffer{}
	}
	cmd := exec.Command(s.bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.Endpoint, "--quiet",
		"posix", "--sidecar", filepath.Join(s.Dir, "sidecar"), filepath.Join(s.Dir, "root"))
	cmd.Stdout, cmd.Stderr = lockedWriter{&s.mu, s.logs}, lockedWriter{&s.mu, s.logs}
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("versitygw: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	defer s.mu.Lock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			s.t.Fatalf("versitygw exited at start:\n%s", s.Logs(3000))
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Endpoint, time.Second); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw does not listen on %s after 30s:\n%s", s.Endpoint, s.Logs(3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Kill stops the server with SIGKILL and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts a killed server again on the same port and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	// The port may stay in TIME_WAIT briefly; the listener uses
	// SO_REUSEADDR, so it can be bound again at once.
	s.start()
}

// Logs returns the last n bytes of the server's output.
func (s *Server) Logs(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	b := s.logs.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Proxy is a TCP-level-transparent HTTP proxy in front of an S3 server that
// can delay requests and answer them with 503 Slow Down. It forwards the
// Host header as the client sent it, so signatures stay valid.
type Proxy struct {
	// Endpoint is the proxy's host:port.
	Endpoint string

	target   string
	srv      *http.Server
	client   *http.Client
	delay    atomic.Int64 // nanoseconds added to every request
	failing  atomic.Bool  // answer every request with 503
	failNext atomic.Int64 // answer the next n requests with 503
	// Requests and Failed count what the proxy saw and refused.
	Requests, Failed atomic.Int64
}

// NewProxy starts a proxy to target (host:port); it is closed when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Endpoint: l.Addr().String(), target: target,
		client: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// SetDelay delays every request by d before it is forwarded.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// SetFailing makes every request fail with 503 Slow Down (true) or pass
// (false).
func (p *Proxy) SetFailing(on bool) { p.failing.Store(on) }

// FailNext makes the next n requests fail with 503.
func (p *Proxy) FailNext(n int) { p.failNext.Store(int64(n)) }

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.Requests.Add(1)
	if d := time.Duration(p.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if p.failing.Load() || p.failNext.Add(-1) >= 0 {
		p.Failed.Add(1)
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate (test proxy).</Message></Error>`)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = p.target
	out.Host = r.Host // the signature covers the Host header the client sent
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
