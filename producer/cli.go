package producer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/logging"
	"github.com/txstream/txstream/settings"
	"github.com/txstream/txstream/txcsv"
)

const envPrefix = "TXSTREAM_"

// Exit codes of Run.
const (
	ExitOK          = 0
	ExitFailure     = 1   // a row not delivered, --strict, an I/O or header error
	ExitUsage       = 2   // bad flags or settings
	ExitInterrupted = 130 // SIGINT/SIGTERM before the input ended (not with --follow)
)

const produceSummary = `producer: publish CSV transactions to a Kafka topic.

Usage:
  producer --file PATH|- [flags]   publish a CSV file (- = stdin)
  producer gen [flags]             write deterministic synthetic transactions (producer gen --help)
  producer expect [flags] FILE     print what a correct consumer computes from FILE (producer expect --help)

The input has a header line naming its columns, in any order: transaction_id
and amount are required, account_id and timestamp are the usual others, any
other column is carried along. Each valid row becomes one record: the value is
the row's CSV line, the key is --key-column, and the record header
` + txcsv.HeaderColumns + ` names the columns.

Rows that fail validation are logged with their line number and reason,
counted in the summary and written to --rejects when given; --strict makes the
first one an error. Delivery is idempotent with acks=all. The exit code is 0
only when every valid row read was acknowledged by the brokers; 1 on a
delivery failure, a bad row under --strict, a bad header or an I/O error; 2
on bad settings; 130 when interrupted before the end of the input (SIGINT
or SIGTERM flush what was read first; a second one aborts).

Every setting can also come from the environment (TXSTREAM_ + the flag name in
upper case, - as _) or from a YAML file given with --config; a flag beats
the environment, which beats the file.`

type produceConfig struct {
	conn             kconn.Config
	configFile       string
	file             string
	topic            string
	keyColumn        string
	maxLineBytes     int
	rejects          string
	strict           bool
	dryRun           bool
	rate             float64
	follow           bool
	followPoll       time.Duration
	createPartitions int
	maxBufRecords    int
	maxBufBytes      int
	linger           time.Duration
	compression      string
	deliveryTimeout  time.Duration
	connectTimeout   time.Duration
	progress         string
	progressInterval time.Duration
	logRejects       int
	logLevel         string
	logFormat        string
}

func produceFlags(cfg *produceConfig, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.configFile, "config", "", "YAML file with settings (keys are flag names)")
	fs.StringVar(&cfg.file, "file", "", "CSV input file with a header line; - reads stdin (required)")
	fs.StringVar(&cfg.topic, "topic", "transactions", "topic to publish to")
	fs.StringVar(&cfg.keyColumn, "key-column", "", "column whose value is the record key (default: account_id when present, else transaction_id)")
	fs.IntVar(&cfg.maxLineBytes, "max-line-bytes", txcsv.DefaultMaxLineBytes, "longest accepted CSV record in bytes; longer ones are rejected without being held in memory")
	fs.StringVar(&cfg.rejects, "rejects", "", "write rejected rows to this CSV file (line,reason,detail,raw)")
	fs.BoolVar(&cfg.strict, "strict", false, "stop with an error at the first bad row (rows before it are still delivered)")
	fs.BoolVar(&cfg.dryRun, "dry-run", false, "validate only: report bad rows without connecting to Kafka")
	fs.Float64Var(&cfg.rate, "rate", 0, "publish at most N rows per second (0 = unlimited)")
	fs.BoolVar(&cfg.follow, "follow", false, "keep reading the file as it grows, like tail -F (survives rotation and truncation); stop with SIGINT/SIGTERM")
	fs.DurationVar(&cfg.followPoll, "follow-poll", 250*time.Millisecond, "how often --follow checks the file for new data, rotation and truncation")
	fs.IntVar(&cfg.createPartitions, "create-topic-partitions", 0, "create the topic with N partitions if it does not exist (0 = rely on an existing or auto-created topic)")
	fs.IntVar(&cfg.maxBufRecords, "max-buffered-records", 10000, "records buffered in memory awaiting acknowledgement; reading pauses when full")
	fs.IntVar(&cfg.maxBufBytes, "max-buffered-bytes", 32<<20, "bytes of record values buffered awaiting acknowledgement; reading pauses when full")
	fs.DurationVar(&cfg.linger, "linger", 10*time.Millisecond, "how long a partition waits for more records before sending a batch")
	fs.StringVar(&cfg.compression, "compression", "snappy", "batch compression: none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&cfg.deliveryTimeout, "delivery-timeout", 2*time.Minute, "fail a row not acknowledged within this time (0 = retry forever)")
	fs.DurationVar(&cfg.connectTimeout, "connect-timeout", 30*time.Second, "give up when no broker answers within this time at start-up")
	fs.StringVar(&cfg.progress, "progress", "auto", "progress display: bar (terminal), log (info lines), off, or auto (bar when stderr is a terminal, else log)")
	fs.DurationVar(&cfg.progressInterval, "progress-interval", 5*time.Second, "interval of progress log lines (--progress log)")
	fs.IntVar(&cfg.logRejects, "log-rejects", 10, "with --rejects, log only the first N rejected rows at warn level (the rest at debug); without --rejects every one is logged")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&cfg.logFormat, "log-format", "auto", "log format: auto (console on a terminal, else JSON), json or console")
	cfg.conn.RegisterFlags(fs)
	fs.Usage = settings.Usage(fs, envPrefix, produceSummary)
	return fs
}

func (c *produceConfig) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.file == "" {
		add("--file is required (a CSV file, or - for stdin)")
	}
	if c.rejects != "" {
		if err := notTheInput(c.rejects, c.file); err != nil {
			errs = append(errs, err)
		}
	}
	if c.follow && c.file == "-" {
		add("--follow needs a file path (stdin is read until it ends anyway)")
	}
	if c.topic == "" {
		add("--topic must not be empty")
	}
	if c.maxLineBytes < 16 || c.maxLineBytes > 16<<20 {
		add("--max-line-bytes %d: want 16 to %d", c.maxLineBytes, 16<<20)
	}
	if c.rate != 0 && !(c.rate >= minRate && c.rate <= maxRate) { // NaN fails both
		add("--rate %v: want 0 (unlimited) or %v to %v rows per second", c.rate, minRate, maxRate)
	}
	if c.followPoll <= 0 {
		add("--follow-poll must be > 0")
	}
	if c.createPartitions < 0 || c.createPartitions > math.MaxInt32 {
		add("--create-topic-partitions %d: want 0 to %d", c.createPartitions, math.MaxInt32)
	}
	if c.maxBufRecords < 1 {
		add("--max-buffered-records must be >= 1")
	}
	if c.maxBufBytes < 2*c.maxLineBytes {
		add("--max-buffered-bytes %d must be at least twice --max-line-bytes (%d)", c.maxBufBytes, c.maxLineBytes)
	}
	if c.linger < 0 || c.deliveryTimeout < 0 || c.connectTimeout <= 0 {
		add("--linger and --delivery-timeout must be >= 0, --connect-timeout > 0")
	}
	if _, err := compressionCodec(c.compression); err != nil {
		errs = append(errs, err)
	}
	switch c.progress {
	case "auto", "bar", "log", "off":
	default:
		add("--progress %q: want auto, bar, log or off", c.progress)
	}
	if c.progressInterval <= 0 {
		add("--progress-interval must be > 0")
	}
	if !c.dryRun {
		if err := c.conn.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func compressionCodec(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("--compression %q: want none, gzip, snappy, lz4 or zstd", name)
}

// Env is the process environment Run works in: cmd/producer passes the
// real one, tests substitute buffers and a signal channel of their own.
type Env struct {
	Stdin  io.Reader // the input of --file - and of expect -
	Stdout io.Writer // gen and expect write their results here
	Stderr io.Writer // logs, the progress bar, usage and the summary
	// Signals delivers SIGINT/SIGTERM: the first stops reading and
	// delivers what was read, a second aborts.
	Signals <-chan os.Signal
	// IsTerminal says whether Stderr is a terminal (--progress auto shows
	// a bar then); TermWidth returns its width in columns (0 = unknown,
	// may be nil).
	IsTerminal bool
	TermWidth  func() int
}

// Run runs the producer command line args (without the program name) and
// returns the process exit code: ExitOK, ExitFailure, ExitUsage or
// ExitInterrupted. The first argument may name a subcommand, gen or
// expect; anything else is the publisher's flags.
func Run(args []string, e Env) int {
	if len(args) > 0 {
		switch args[0] {
		case "gen":
			return genMain(args[1:], e)
		case "expect":
			return expectMain(args[1:], e)
		}
	}
	return produceMain(args, e)
}

func produceMain(args []string, e Env) int {
	var cfg produceConfig
	fs := produceFlags(&cfg, e.Stderr)
	if err := settings.Parse(fs, args, envPrefix, "config"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintln(e.Stderr, "producer:", err)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.Stderr, "producer: unexpected argument %q (the input is --file PATH; subcommands: gen, expect)\n", fs.Arg(0))
		return ExitUsage
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(e.Stderr, "producer:", strings.ReplaceAll(err.Error(), "\n", "\nproducer: "))
		return ExitUsage
	}
	log, err := logging.NewFormat(cfg.logLevel, cfg.logFormat)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer:", err)
		return ExitUsage
	}
	defer func() { _ = log.Sync() }()
	// Errors here are about data and brokers, not code: no stack traces.
	log = log.WithOptions(zap.AddStacktrace(zapcore.FatalLevel))
	return produce(&cfg, log, e)
}

// produce runs a validated configuration.
func produce(cfg *produceConfig, log *zap.Logger, e Env) int {
	mode := cfg.progress
	if mode == "auto" {
		mode = "log"
		if e.IsTerminal {
			mode = "bar"
		}
	}
	// The source belongs to the reading goroutine, which closes it.
	src := &source{path: cfg.file, follow: cfg.follow, poll: cfg.followPoll, maxLen: cfg.maxLineBytes, log: log, stdin: e.Stdin}

	var pub *publisher
	prog := &progress{
		bar: mode == "bar", w: e.Stderr, width: e.TermWidth, interval: cfg.progressInterval,
		bytes: src.consumed.Load, total: src.total.Load, follow: cfg.follow, now: time.Now,
	}
	if prog.bar {
		log = log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return barCore{c, prog} }))
	}
	prog.log = log

	var rejects *rejectWriter
	if cfg.rejects != "" {
		var err error
		if rejects, err = openRejects(cfg.rejects); err != nil {
			log.Error("cannot open the rejects file", zap.Error(err))
			return ExitFailure
		}
	}

	var cl *kgo.Client
	if !cfg.dryRun {
		var err error
		cl, err = newClient(cfg, log)
		if err != nil {
			log.Error("cannot set up the Kafka client", zap.Error(err))
			if rejects != nil {
				rejects.close()
			}
			return ExitUsage
		}
		// An interrupt while waiting for the brokers ends the wait.
		prepCtx, cancelPrep := context.WithCancel(context.Background())
		prepDone := make(chan struct{})
		go func() {
			select {
			case <-e.Signals:
				cancelPrep()
			case <-prepDone:
			}
		}()
		err = prepare(prepCtx, cfg, cl, log)
		close(prepDone)
		interruptedEarly := prepCtx.Err() != nil
		cancelPrep()
		if err != nil {
			log.Error("cannot start", zap.Error(err))
			cl.Close()
			if rejects != nil {
				rejects.close()
			}
			if interruptedEarly {
				return ExitInterrupted
			}
			return ExitFailure
		}
	}

	opt := publishOptions{
		KeyColumn: cfg.keyColumn, MaxLineBytes: cfg.maxLineBytes, Strict: cfg.strict,
		DryRun: cfg.dryRun, Rate: cfg.rate, LogRejects: -1,
	}
	if rejects != nil {
		opt.LogRejects = cfg.logRejects
	}
	var pc producerClient
	if cl != nil {
		pc = cl
	}
	pub = newPublisher(opt, log, pc, rejects)
	prog.c = &pub.c

	log.Info("starting", zap.String("input", src.name()), zap.String("topic", cfg.topic),
		zap.Bool("follow", cfg.follow), zap.Bool("dry_run", cfg.dryRun), zap.Float64("rate", cfg.rate),
		zap.Any("kafka", cfg.conn.Redacted()))

	start := time.Now()
	prog.run()
	readCtx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
	loopDone := make(chan error, 1)
	go func() {
		err := pub.run(readCtx, src)
		src.Close()
		loopDone <- err
	}()

	// The brokers may stop answering altogether (a hung broker, a network
	// black hole); franz-go cannot safely time out a request in flight, so
	// a watchdog gives up when nothing was acknowledged for a while.
	stalled := make(chan struct{})
	stopWatchdog := make(chan struct{})
	defer close(stopWatchdog)
	if cl != nil && cfg.deliveryTimeout > 0 {
		go watchdog(&pub.c, cfg.deliveryTimeout+min(cfg.deliveryTimeout, 10*time.Second), time.Second, stalled, stopWatchdog, log)
	}

	interrupted, aborted := false, false
	var loopErr error
	select {
	case loopErr = <-loopDone:
	case <-stalled:
		aborted = true
		stopReading()
	case sig := <-e.Signals:
		interrupted = true
		log.Info("interrupted: delivering the rows already read; interrupt again to abort", zap.String("signal", sig.String()))
		stopReading()
		select {
		case loopErr = <-loopDone:
		case <-e.Signals:
			aborted = true
		case <-stalled:
			aborted = true
		case <-time.After(2 * time.Second):
			// A read from a pipe or terminal cannot be interrupted; what
			// it returns later is discarded (publisher.run checks ctx).
			log.Warn("the input read did not return; finishing without it")
		}
	}

	flushCtx, abort := context.WithCancel(context.Background())
	defer abort()
	if aborted {
		abort()
	}
	flushDone := make(chan struct{})
	go func() {
		select {
		case <-e.Signals:
			log.Warn("second interrupt: aborting; rows not yet acknowledged are reported as such")
			abort()
		case <-stalled:
			abort()
		case <-flushDone:
		}
	}()
	if cl != nil {
		if err := cl.Flush(flushCtx); err != nil {
			log.Warn("flush aborted", zap.Error(err))
		}
		closeClient(cl, log)
	}
	close(flushDone)
	prog.finish()

	code := ExitOK
	if rejects != nil {
		if err := rejects.close(); err != nil {
			log.Error("rejects file incomplete", zap.Error(err))
			code = ExitFailure
		}
	}

	sum := pub.summary(time.Since(start))
	sum.Blank = src.blank.Load()
	var strict *strictError
	switch {
	case loopErr == nil, errors.Is(loopErr, io.EOF), errors.Is(loopErr, context.Canceled), errors.Is(loopErr, errDeliveryFailed):
	case errors.As(loopErr, &strict):
		log.Error("bad row", zap.Error(loopErr))
		code = ExitFailure
	default:
		log.Error("stopped", zap.Error(loopErr))
		code = ExitFailure
	}
	if sum.Failed > 0 || sum.Pending > 0 {
		msg := fmt.Sprintf("%d of %d valid rows not acknowledged", sum.Failed+sum.Pending, sum.Sent)
		select {
		case <-stalled:
			msg += " (the brokers stopped answering; rows in flight may or may not have been written)"
		default:
		}
		if ff := pub.firstFailure(); ff != nil {
			log.Error(msg, zap.Int64("first_failed_line", ff.Line), zap.String("cause", ff.Error()))
		} else {
			log.Error(msg + " (aborted before the brokers answered)")
		}
		code = ExitFailure
	}
	if code == ExitOK && interrupted && !cfg.follow {
		code = ExitInterrupted
	}
	if prog.bar {
		fmt.Fprintln(e.Stderr, "producer: "+sum.String())
	} else {
		log.Info("summary: "+sum.String(), sum.fields()...)
	}
	return code
}

func newClient(cfg *produceConfig, log *zap.Logger) (*kgo.Client, error) {
	opts, err := cfg.conn.Opts()
	if err != nil {
		return nil, err
	}
	codec, err := compressionCodec(cfg.compression)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ClientID("txstream-producer"),
		kgo.DefaultProduceTopic(cfg.topic),
		// Ask for auto-creation in metadata requests; brokers that do not
		// allow it answer UNKNOWN_TOPIC_OR_PARTITION, reported per row.
		kgo.AllowAutoTopicCreation(),
		// Idempotent writes are franz-go's default and need acks=all;
		// spelled out because exactly-once downstream relies on both.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedRecords(cfg.maxBufRecords),
		kgo.MaxBufferedBytes(cfg.maxBufBytes),
		kgo.ProducerLinger(cfg.linger),
		kgo.ProducerBatchCompression(codec),
		kgo.WithLogger(kconn.ClientLogger(log.Named("kafka"), kgo.LogLevelWarn)),
	)
	if cfg.deliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(cfg.deliveryTimeout))
	}
	return kgo.NewClient(opts...)
}

// prepare checks that a broker answers and creates the topic when asked.
func prepare(ctx context.Context, cfg *produceConfig, cl *kgo.Client, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("no broker of %q answered within %s: %w", cfg.conn.Brokers, cfg.connectTimeout, cfg.conn.Explain(err))
	}
	if cfg.createPartitions <= 0 {
		return nil
	}
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, int32(cfg.createPartitions), -1, nil, cfg.topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		log.Info("topic created", zap.String("topic", cfg.topic), zap.Int("partitions", cfg.createPartitions))
	case errors.Is(err, kerr.TopicAlreadyExists):
		td, derr := adm.ListTopics(ctx, cfg.topic)
		if derr == nil {
			if t, ok := td[cfg.topic]; ok && t.Err == nil && len(t.Partitions) != cfg.createPartitions {
				log.Warn("topic exists with another partition count; left unchanged", zap.String("topic", cfg.topic),
					zap.Int("partitions", len(t.Partitions)), zap.Int("requested", cfg.createPartitions))
				return nil
			}
		}
		log.Info("topic exists", zap.String("topic", cfg.topic))
	default:
		return fmt.Errorf("creating topic %q: %w", cfg.topic, err)
	}
	return nil
}

// watchdog closes stalled when records are outstanding and none was
// acknowledged or failed for limit.
func watchdog(c *counters, limit, every time.Duration, stalled chan<- struct{}, stop <-chan struct{}, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		done := c.acked.Load() + c.failed.Load()
		if done != last || c.sent.Load() == done {
			last, since = done, time.Now()
			continue
		}
		if time.Since(since) >= limit {
			log.Error("the brokers acknowledged nothing for too long; giving up (the outcome of rows in flight is unknown)",
				zap.Duration("silent_for", time.Since(since).Round(time.Second)), zap.Int64("outstanding", c.sent.Load()-done))
			close(stalled)
			return
		}
	}
}

// closeClient closes the client, giving up after a few seconds (a broker
// that went away must not keep an interrupted producer from exiting).
func closeClient(cl *kgo.Client, log *zap.Logger) {
	done := make(chan struct{})
	go func() { cl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Warn("Kafka client did not close within 5s")
	}
}
