// Command devbroker runs franz-go's kfake as a standalone Kafka-protocol
// broker on localhost, with optional on-disk persistence, so that txstream
// runs end to end on one machine with no JVM and no Docker.
//
// It is a development and test tool. Production deployments point --brokers
// at Apache Kafka or Redpanda; txstream relies on nothing kfake-specific.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/txstream/txstream/logging"
	"github.com/txstream/txstream/settings"
)

const summary = `devbroker: a single-node Kafka-protocol broker for DEVELOPMENT AND TESTS ONLY.

It runs franz-go's kfake (an in-process Kafka implementation speaking the real
wire protocol: produce, fetch, consumer groups, transactions) as its own
process. With --data-dir it persists topics, records, committed offsets and
transactions, so a restarted broker has everything that was committed.

Do not use it in production: point txstream's --brokers at Apache Kafka or
Redpanda instead.

Usage: devbroker [flags]`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("devbroker", flag.ContinueOnError)
	var (
		addr       = fs.String("addr", "127.0.0.1:9092", "listen address host:port (port 0 picks a free one)")
		dataDir    = fs.String("data-dir", "", "persist topics, offsets and transactions here across restarts (empty: in memory)")
		partitions = fs.Int("partitions", 3, "partitions of auto-created topics")
		syncWrites = fs.Bool("sync", false, "fsync every write (survives power loss, slower)")
		seedTopics = fs.String("topics", "", "topics to create at start-up, comma-separated (others are auto-created on first use)")
		tlsCert    = fs.String("tls-cert", "", "serve TLS with this PEM certificate (with --tls-key)")
		tlsKey     = fs.String("tls-key", "", "PEM private key for --tls-cert")
		saslUsers  = fs.String("sasl-users-file", "", "enable SASL: file of MECHANISM:user:password lines (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
		addrFile   = fs.String("addr-file", "", "write the listen address to this file once ready (for scripts using port 0)")
		advertise  = fs.String("advertise", "", "host:port clients are told to connect to (default: the listen address); e.g. broker:9092 in a container network when listening on 0.0.0.0:9092")
		logLevel   = fs.String("log-level", "info", "log level: debug, info, warn, error")
	)
	fs.Usage = settings.Usage(fs, "DEVBROKER_", summary)
	if err := settings.Parse(fs, args, "DEVBROKER_", ""); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devbroker:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "devbroker: unexpected arguments %q (it takes flags only; see --help)\n", fs.Args())
		return 2
	}
	log, err := logging.New(*logLevel, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devbroker:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	if *advertise != "" {
		if _, port, err := net.SplitHostPort(*advertise); err != nil || port == "" || port == "0" {
			log.Error("--advertise must be host:port with a fixed port", zap.String("advertise", *advertise))
			return 2
		}
	}
	if *partitions < 1 || *partitions > 1<<16 {
		log.Error("--partitions must be 1 to 65536", zap.Int("partitions", *partitions))
		return 2
	}
	var bound string // the real listen address (ListenAddrs reports the advertised one)
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(*partitions),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, *addr)
			if err == nil {
				bound = ln.Addr().String()
			}
			if err != nil || *advertise == "" {
				return ln, err
			}
			// kfake advertises its listener's address in metadata and
			// coordinator responses.
			return advertisedListener{ln, advertisedAddr(*advertise)}, nil
		}),
		kfake.WithLogger(kfakeLogger{log.Named("kfake")}),
	}
	if *dataDir != "" {
		if err := os.MkdirAll(*dataDir, 0o750); err != nil {
			log.Error("cannot create data dir", zap.String("data_dir", *dataDir), zap.Error(err))
			return 1
		}
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		log.Error("--tls-cert and --tls-key go together")
		return 2
	}
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Error("loading TLS key pair", zap.Error(err))
			return 2
		}
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	}
	if *saslUsers != "" {
		users, err := readUsers(*saslUsers)
		if err != nil {
			log.Error("reading --sasl-users-file", zap.Error(err))
			return 2
		}
		opts = append(opts, kfake.EnableSASL())
		for _, u := range users {
			opts = append(opts, kfake.Superuser(u[0], u[1], u[2]))
		}
	}
	if *seedTopics != "" {
		opts = append(opts, kfake.SeedTopics(int32(*partitions), strings.Split(*seedTopics, ",")...))
	}

	start := time.Now()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		log.Error("starting broker", zap.String("addr", *addr), zap.Error(err))
		return 1
	}
	listen := bound
	if *addrFile != "" {
		err := os.WriteFile(*addrFile+".tmp", []byte(listen+"\n"), 0o600)
		if err == nil {
			err = os.Rename(*addrFile+".tmp", *addrFile)
		}
		if err != nil {
			log.Error("writing --addr-file", zap.Error(err))
			c.Close()
			return 1
		}
	}
	log.Info("broker ready", zap.String("addr", listen), zap.String("data_dir", *dataDir),
		zap.String("advertised", *advertise), zap.Int("partitions", *partitions), zap.Bool("sync", *syncWrites),
		zap.Duration("startup", time.Since(start)))

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	sig := <-sigs
	log.Info("shutting down", zap.String("signal", sig.String()))
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
		log.Info("stopped")
		return 0
	case <-sigs:
		log.Warn("second signal: forced exit without a clean shutdown")
		return 1
	}
}

// advertisedListener reports a configured address instead of the bound one,
// which is what kfake tells clients to connect to.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }

type advertisedAddr string

func (advertisedAddr) Network() string  { return "tcp" }
func (a advertisedAddr) String() string { return string(a) }

// readUsers parses MECHANISM:user:password lines (# comments allowed).
func readUsers(path string) ([][3]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][3]string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("line %d: want MECHANISM:user:password", i+1)
		}
		switch parts[0] {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			return nil, fmt.Errorf("line %d: unknown mechanism %q", i+1, parts[0])
		}
		out = append(out, [3]string{parts[0], parts[1], parts[2]})
	}
	if len(out) == 0 {
		return nil, errors.New("no users")
	}
	return out, nil
}

// kfakeLogger forwards kfake's logs to zap. kfake's info level is chatty
// per request, so it is mapped to debug.
type kfakeLogger struct{ l *zap.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	s := fmt.Sprintf(msg, args...)
	switch level {
	case kfake.LogLevelError:
		k.l.Error(s)
	case kfake.LogLevelWarn:
		k.l.Warn(s)
	default:
		k.l.Debug(s)
	}
}
