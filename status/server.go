package status

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
)

// Limits and timeouts of the HTTP server.
const (
	maxBodyBytes      = 64 << 10
	maxHeaderBytes    = 32 << 10
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	// savepointTimeout bounds a synchronous savepoint request; it extends
	// that request's write deadline.
	savepointTimeout = 10 * time.Minute
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address (host:port). Whether it is a loopback
	// address decides the default for mutating endpoints (see Token).
	Addr string
	// Token, when set, is the bearer token every mutating request must
	// carry. When empty, mutating requests are only accepted on a loopback
	// listener, from a loopback Host; off loopback they are refused (403).
	Token string
	// Version, Started and Settings are reported by GET /api/v1/job.
	Version  string
	Started  time.Time
	Settings map[string]any
	Backend  Backend
	Logger   *zap.Logger
	// SampleInterval is the time-series sampling period (default 1 s) and
	// SampleCapacity the number of samples kept (default 600).
	SampleInterval time.Duration
	SampleCapacity int
}

// Server is the status HTTP server. Create it with New; Handler serves
// requests (tests use it with httptest), Start listens and samples, Stop
// shuts it down.
type Server struct {
	cfg      Config
	b        Backend
	log      *zap.Logger
	loopback atomic.Bool
	draining atomic.Bool
	handler  http.Handler
	metrics  *metrics
	series   *series
	snaps    snapCounts

	mu      sync.Mutex
	srv     *http.Server
	stopped chan struct{}
	addr    net.Addr
}

// New builds a server (it does not listen yet).
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("status: Config.Backend is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = time.Second
	}
	if cfg.SampleCapacity <= 0 {
		cfg.SampleCapacity = 600
	}
	s := &Server{cfg: cfg, b: cfg.Backend, log: cfg.Logger, series: newSeries(cfg.SampleCapacity)}
	s.loopback.Store(isLoopbackHost(hostOf(cfg.Addr)))
	st := s.b.Stats()
	m, err := newMetrics(s)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	st.OnSnapshot(s.snaps.add)
	s.handler = s.routes()
	return s, nil
}

// Handler serves the API, dashboard, metrics and health checks.
func (s *Server) Handler() http.Handler { return s.handler }

// KafkaHooks returns the franz-go hooks (kprom) that export the Kafka
// client's metrics under txstream_kafka_*: add kgo.WithHooks(h) to every
// client. One client may use them at a time (each attempt closes its
// client before the next one starts).
func (s *Server) KafkaHooks() kgo.Hook { return s.metrics.kafka }

// Registry is the Prometheus registry behind /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Start listens on Config.Addr, serves in the background and samples the
// time series. When ctx ends the server keeps serving (the job drains and
// the dashboard shows it) but /readyz answers 503; Stop ends it.
func (s *Server) Start(ctx context.Context) (net.Addr, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, err
	}
	// The real decision: what the socket is bound to.
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		s.loopback.Store(ta.IP.IsLoopback())
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.mu.Lock()
	s.srv, s.addr, s.stopped = srv, ln.Addr(), make(chan struct{})
	stopped := s.stopped
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", zap.Error(err))
		}
	}()
	context.AfterFunc(ctx, func() { s.draining.Store(true) })
	go s.sampleLoop(stopped)
	if !s.loopback.Load() && s.cfg.Token == "" {
		s.log.Warn("http is bound off loopback without a token: read-only endpoints are public and mutating ones (savepoint, cancel) are disabled; set --http-token or TXSTREAM_HTTP_TOKEN to enable them",
			zap.Stringer("addr", ln.Addr()))
	}
	return ln.Addr(), nil
}

// Addr is the bound address after Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stop shuts the server down, giving open requests a few seconds.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, stopped := s.srv, s.stopped
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	close(stopped)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
}

func (s *Server) sampleLoop(stop <-chan struct{}) {
	s.sample(time.Now())
	t := time.NewTicker(s.cfg.SampleInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			s.sample(now)
		case <-stop:
			return
		}
	}
}

// sample records one point of the time series.
func (s *Server) sample(now time.Time) {
	st := s.b.Stats()
	c := st.Counters()
	var lag *int64
	if parts := st.Partitions(); len(parts) > 0 {
		var sum int64
		for _, p := range parts {
			sum += p.Lag
		}
		lag = &sum
	}
	s.series.add(Sample{T: now.UnixMilli(), In: c.RecordsIn, Out: c.RecordsOut, DLQ: c.DeadLetters,
		Dup: c.Duplicates, Lag: lag, State: string(s.b.Job().State)})
}

// routes builds the router. Every answer that is not the dashboard or
// /metrics is JSON, errors included.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, methods map[string]http.HandlerFunc) {
		mux.Handle(pattern, methodRouter(methods))
	}
	get := func(h http.HandlerFunc) map[string]http.HandlerFunc {
		return map[string]http.HandlerFunc{http.MethodGet: h}
	}

	handle("/api/v1/{$}", get(s.getIndex))
	handle("/api/v1/job", get(s.getJob))
	handle("/api/v1/job/cancel", map[string]http.HandlerFunc{http.MethodPost: s.mutating(s.postCancel)})
	handle("/api/v1/checkpoints", get(s.getCheckpoints))
	handle("/api/v1/savepoints", map[string]http.HandlerFunc{
		http.MethodGet: s.getSavepoints, http.MethodPost: s.mutating(s.postSavepoint)})
	handle("/api/v1/partitions", get(s.getPartitions))
	handle("/api/v1/state/accounts/{id}", get(s.getAccount))
	handle("/api/v1/timeseries", get(s.getTimeseries))
	handle("/api/v1/openapi.yaml", get(s.getOpenAPI))
	handle("/healthz", get(s.getHealthz))
	handle("/readyz", get(s.getReadyz))
	handle("/metrics", get(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(s.log.Named("metrics")), ErrorHandling: promhttp.ContinueOnError,
		Timeout: 10 * time.Second, MaxRequestsInFlight: 4}).ServeHTTP))

	assets, _ := fs.Sub(webFS, "web")
	handle("/{$}", get(s.getDashboard))
	handle("/assets/{file}", get(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if fi, err := fs.Stat(assets, name); err != nil || fi.IsDir() || name == "index.html" {
			writeError(w, http.StatusNotFound, "no such asset: "+r.URL.Path, nil)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, assets, name)
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s (see GET /api/v1/ for the list)", r.URL.Path), nil)
	})
	return secure(mux)
}

// secure sets headers every answer carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.ServeHTTP(w, r)
	})
}

// methodRouter dispatches on the method: HEAD is served as GET, others get
// a JSON 405 with an Allow header.
func methodRouter(methods map[string]http.HandlerFunc) http.Handler {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if _, ok := methods[m]; ok {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	allowed := strings.Join(allow, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := r.Method
		if m == http.MethodHead {
			m = http.MethodGet
		}
		if h, ok := methods[m]; ok {
			h(w, r)
			return
		}
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allowed), nil)
	})
}

// mutating guards POST endpoints:
//
//   - a cross-origin browser request (Origin not this host) is refused;
//   - with a token configured, "Authorization: Bearer <token>" is required
//     (401 otherwise), whatever the address;
//   - without a token, the listener must be loopback (403 otherwise), and
//     the request's Host must be a loopback name, so that a web page cannot
//     reach the API through DNS rebinding.
//
// The body is limited to maxBodyBytes.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("cross-origin request from %s refused", o), nil)
			return
		}
		switch {
		case s.cfg.Token != "":
			if !tokenOK(r.Header.Get("Authorization"), s.cfg.Token) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="txstream"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token: send \"Authorization: Bearer <token>\" with the value of --http-token (TXSTREAM_HTTP_TOKEN)", nil)
				return
			}
		case !s.loopback.Load():
			writeError(w, http.StatusForbidden, fmt.Sprintf("mutating endpoints are disabled: --http %s is not a loopback address and no --http-token (TXSTREAM_HTTP_TOKEN) is set", s.cfg.Addr), nil)
			return
		case !isLoopbackHost(hostOf(r.Host)):
			writeError(w, http.StatusForbidden, fmt.Sprintf("request for host %q refused: without --http-token mutating endpoints only answer requests addressed to localhost or a loopback IP", r.Host), nil)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		h(w, r)
	}
}

// tokenOK compares in constant time (hashes first, so the length of the
// token does not leak either).
func tokenOK(header, token string) bool {
	const prefix = "bearer "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(header[len(prefix):])))
	want := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// hostOf returns the host of host:port (or host alone).
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// isLoopbackHost: "localhost" or a loopback IP. An empty host (all
// interfaces) and other names are not loopback.
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// apiError is the body of every error answer.
type apiError struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// writeError answers a JSON error; extra fields (may be nil) are merged in.
func writeError(w http.ResponseWriter, code int, msg string, extra map[string]any) {
	if extra == nil {
		writeJSON(w, nil, code, apiError{Error: msg, Status: code})
		return
	}
	m := map[string]any{"error": msg, "status": code}
	for k, v := range extra {
		m[k] = v
	}
	writeJSON(w, nil, code, m)
}

// writeJSON answers v; ?pretty indents it.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	if r != nil && r.URL.Query().Has("pretty") {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}
