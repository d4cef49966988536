package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/job"
	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/logging"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/settings"
	"github.com/txstream/txstream/txcsv"
)

var version = "dev"

const envPrefix = "TXSTREAM_"

const summary = `consumer: the txstream daemon, an exactly-once stateful Kafka consumer.

It reads CSV transactions from --topic as a member of consumer group --group,
keeps per-account aggregates in one Pebble store per partition, and writes one
JSON record per accepted transaction to --output-topic, and invalid input to
--dlq-topic, in one Kafka transaction per epoch together with the input
offsets (exactly-once). Every --checkpoint-interval it snapshots each
partition's state with the offsets it reflects into --checkpoint-dir; after a
crash it restores the newest usable snapshot and replays the gap without
output. Failures are retried in-process by the restart strategy; when it
gives up the process exits with code 3 (FAILED).

Usage:
  consumer [settings]                      run the daemon
  consumer checkpoints list|verify|inspect|gc DIR ...   offline checkpoint tools
  consumer savepoint [--http ADDR] [--name N]             ask the running daemon for a savepoint
  consumer version

Exit codes: 0 finished or drained on SIGTERM, 2 bad settings, 3 FAILED.

Every setting below can be given as a flag, as an environment variable
(TXSTREAM_ + the flag name in upper case with _ for -), or as a key in the
YAML file named by --config; flags win over the environment, which wins over
the file. Settings, by topic:`

type config struct {
	conn kconn.Config

	configFile    string
	topic         string
	outputTopic   string
	dlqTopic      string
	progressTopic string
	group         string
	instanceID    string
	txnID         string
	sink          string
	columns       string
	dedupWindow   time.Duration
	dedupIndex    int
	maxLineBytes  int

	commitInterval     time.Duration
	checkpointInterval time.Duration
	checkpointDir      string
	checkpointRetain   int
	checkpointMode     string
	clogBaseEvery      int
	clogMaxRatio       float64
	gcGrace            time.Duration
	dataDir            string
	allowStateLoss     bool
	exitWhenIdle       time.Duration
	maxEpochBytes      int
	tolerableFailures  int
	sessionTimeout     time.Duration
	rebalanceTimeout   time.Duration
	txnTimeout         time.Duration

	restart job.Config

	failAtRecord  int64
	failTimes     int
	crashAtRecord int64

	createTopics bool
	memoryLimit  string
	memLimit     int64
	compression  string

	savepointOnStop bool
	fromSavepoint   string
	reprocess       bool

	httpAddr  string
	httpToken string

	logLevel  string
	logFormat string

	schema *txcsv.Schema
	mode   checkpoint.Mode
	s3     checkpoint.S3Config
}

func parseConfig(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	host, _ := os.Hostname()
	if host == "" {
		host = "txstream-0"
	}
	def := job.DefaultConfig()

	fs.StringVar(&c.configFile, "config", "", "YAML file with settings (keys are flag names)")
	c.conn.RegisterFlags(fs)
	fs.StringVar(&c.topic, "topic", "transactions", "input topic of CSV transactions")
	fs.StringVar(&c.outputTopic, "output-topic", "transactions-out", "output topic: one JSON record per accepted transaction")
	fs.StringVar(&c.dlqTopic, "dlq-topic", "transactions-dlq", "dead-letter topic for invalid records and conflicting duplicates")
	fs.StringVar(&c.progressTopic, "progress-topic", "txstream-progress", "compacted topic that records each partition's commit point in every epoch's transaction, so that it survives the loss of the group's offsets (they expire after offsets.retention.minutes of an empty group); shared by groups")
	fs.StringVar(&c.group, "group", "txstream", "consumer group id")
	fs.StringVar(&c.instanceID, "instance-id", host, "static group membership id, unique per running consumer (empty: dynamic membership); a restarted member with the same id gets its partitions back without waiting for the session timeout")
	fs.StringVar(&c.txnID, "transactional-id", "", "Kafka transactional id (default txstream-<group>-<instance-id>); must be stable across restarts of the same member and unique across members")
	fs.StringVar(&c.sink, "sink", "kafka", "output sink: kafka (exactly-once) or stdout (debug, at-least-once: replays print again)")
	fs.StringVar(&c.columns, "columns", strings.Join(txcsv.DefaultColumns, ","), "column order of records that carry no "+txcsv.HeaderColumns+" header (e.g. from kcat)")
	fs.DurationVar(&c.dedupWindow, "dedup-window", aggregate.DefaultDedupWindow, "record-time window in which a repeated transaction_id is a duplicate")
	fs.IntVar(&c.dedupIndex, "dedup-index-entries", pipeline.DefaultPackEntries, "dedup entries per partition packed many to a state value and found through an in-memory index (8 bytes a slot, at most 16 MiB per partition at the default); beyond it they are written one state key each, which needs more CPU per record (0: never pack)")
	fs.IntVar(&c.maxLineBytes, "max-line-bytes", txcsv.DefaultMaxLineBytes, "longest accepted record value; longer ones go to the dead-letter topic")
	fs.DurationVar(&c.commitInterval, "commit-interval", time.Second, "longest epoch: how often output and offsets are committed under load (output latency); an epoch also ends when the input is quiet for a tenth of it")
	fs.DurationVar(&c.checkpointInterval, "checkpoint-interval", 5*time.Second, "how often state is snapshotted (durability cost; recovery replays at most this much)")
	fs.StringVar(&c.checkpointDir, "checkpoint-dir", "./checkpoints", "where snapshots are kept: a directory (may be on another filesystem, a mounted volume) or s3://bucket/prefix on S3-compatible object storage (see the --s3-* settings)")
	fs.IntVar(&c.checkpointRetain, "checkpoint-retain", 3, "recovery points kept per partition (changelog mode: a base and each of its segments count one each)")
	fs.StringVar(&c.checkpointMode, "checkpoint-mode", "incremental", "snapshot mode: full (copy every file each time), incremental (share immutable files) or changelog (a base, an incremental snapshot, now and then; in between each snapshot appends the committed epochs' state changes to a change log)")
	fs.IntVar(&c.clogBaseEvery, "changelog-base-every", pipeline.DefaultChangelogBaseEvery, "changelog mode: a base every N snapshots of a partition (1: every snapshot is a base)")
	fs.Float64Var(&c.clogMaxRatio, "changelog-max-ratio", pipeline.DefaultChangelogMaxRatio, "changelog mode: also write a base when the change log since the last one passes this fraction of the state store's size (0: no size rule)")
	fs.DurationVar(&c.gcGrace, "checkpoint-gc-grace", 10*time.Minute, "keep unreferenced pool files and temporary entries this long before garbage collection (protects another consumer's publish in flight in a shared --checkpoint-dir; 0 = collect at once, safe with a single consumer)")
	c.s3.RegisterFlags(fs)
	fs.StringVar(&c.dataDir, "data-dir", "./data", "directory for the live Pebble stores (rebuilt from snapshots on start; one consumer per directory)")
	fs.BoolVar(&c.allowStateLoss, "allow-state-loss", false, "start even if records needed to rebuild state are gone from the log (aggregates will be incomplete)")
	fs.DurationVar(&c.exitWhenIdle, "exit-when-idle", 0, "after this long with no new input and everything committed, snapshot and exit 0 (0: run forever)")
	c.maxEpochBytes = 64 << 20
	fs.Var((*byteSize)(&c.maxEpochBytes), "max-epoch-bytes", "commit an epoch early when the uncommitted state of the member's partitions passes this `size` (e.g. 64MiB): bounds an epoch's memory and the batch that applies it; smaller epochs commit more often in a backlog, which costs records/s")
	fs.IntVar(&c.tolerableFailures, "tolerable-checkpoint-failures", 3, "consecutive snapshot failures tolerated before the attempt fails")
	fs.DurationVar(&c.sessionTimeout, "session-timeout", 45*time.Second, "group session timeout")
	fs.DurationVar(&c.rebalanceTimeout, "rebalance-timeout", time.Minute, "how long a rebalance waits for members to rejoin (Kafka's max.poll.interval.ms); a member that neither rejoins nor expires within it is dropped from the new generation")
	fs.DurationVar(&c.txnTimeout, "transaction-timeout", 10*time.Second, "Kafka transaction timeout: a member that dies and does not come back holds read_committed readers of the output back until the broker aborts its transaction: this long after the transaction began, plus up to the broker's transaction.abort.timed.out.transaction.cleanup.interval.ms (default 10s) (a restarted member fences its old transaction at once); must be well above --commit-interval (Kafka Streams' EOS default: 10s)")

	fs.StringVar(&c.restart.Strategy, "restart-strategy", def.Strategy, "restart strategy: fixed-delay, exponential-delay, failure-rate or none")
	// 0 means each strategy's own default, so that choosing
	// exponential-delay alone keeps Flink's unlimited attempts.
	fs.IntVar(&c.restart.Attempts, "restart-attempts", 0, "restarts allowed before the job FAILS: fixed-delay, over the job's life (0 = 3); exponential-delay, between two backoff resets (0 = unlimited)")
	fs.DurationVar(&c.restart.Delay, "restart-delay", def.Delay, "fixed-delay and failure-rate: wait before a restart")
	fs.DurationVar(&c.restart.InitialBackoff, "restart-initial-backoff", def.InitialBackoff, "exponential-delay: first delay")
	fs.DurationVar(&c.restart.MaxBackoff, "restart-max-backoff", def.MaxBackoff, "exponential-delay: largest delay")
	fs.Float64Var(&c.restart.BackoffMultiplier, "restart-backoff-multiplier", def.BackoffMultiplier, "exponential-delay: delay growth per failure")
	fs.DurationVar(&c.restart.ResetBackoffThreshold, "restart-reset-backoff-threshold", def.ResetBackoffThreshold, "exponential-delay: healthy running time after which the delay resets")
	fs.Float64Var(&c.restart.JitterFactor, "restart-jitter", def.JitterFactor, "exponential-delay: random +/- fraction of each delay")
	fs.IntVar(&c.restart.MaxFailuresPerInterval, "restart-max-failures-per-interval", def.MaxFailuresPerInterval, "failure-rate: failures allowed within --restart-failure-rate-interval")
	fs.DurationVar(&c.restart.FailureRateInterval, "restart-failure-rate-interval", def.FailureRateInterval, "failure-rate: sliding window for counting failures")

	fs.Int64Var(&c.failAtRecord, "fail-at-record", 0, "TESTING: fail each attempt at its Nth processed record (Flink tutorial's FailingMapFunction)")
	fs.IntVar(&c.failTimes, "fail-times", 0, "TESTING: apply --fail-at-record only in the first K attempts (0: every attempt)")
	fs.Int64Var(&c.crashAtRecord, "crash-at-record", 0, "TESTING: kill the process abruptly (no cleanup) at the Nth processed record")

	fs.BoolVar(&c.savepointOnStop, "savepoint-on-stop", false, "on SIGTERM, after the final commit, write a savepoint named stop-<time> under <checkpoint-dir>/savepoints")
	fs.StringVar(&c.fromSavepoint, "from-savepoint", "", "start from this savepoint, a directory or s3://bucket/prefix/savepoints/NAME: its state is restored for its partitions, offsets follow the recovery rule (no duplicate output)")
	fs.BoolVar(&c.reprocess, "reprocess", false, "with --from-savepoint: rewind the group to the savepoint's offsets and output everything after them again (after a bug fix); the group must have no running members. One-shot: remove it after the run")
	fs.StringVar(&c.compression, "output-compression", "snappy", "compression of output and dead-letter batches: none, gzip, snappy, lz4 or zstd")
	fs.StringVar(&c.memoryLimit, "memory-limit", "400MiB", "soft memory limit for the Go runtime (e.g. 400MiB, 1GiB; 0 = none); the GOMEMLIMIT environment variable wins when set. State stores, block cache and Kafka buffers live inside it")
	fs.BoolVar(&c.createTopics, "create-topics", true, "create the output, dead-letter and progress topics at start-up if missing (as many partitions as --topic, or the broker's default when --topic does not exist yet; broker-default replication; the progress topic compacted)")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8081", "status API, dashboard and metrics address (empty: off); binding off loopback is explicit")
	fs.StringVar(&c.httpToken, "http-token", "", "bearer token required by mutating endpoints when --http is not loopback (prefer the environment variable)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "auto", "log format: auto (console on a terminal, else JSON), json or console")

	fs.Usage = settings.UsageGroups(fs, envPrefix, summary, []settings.Group{
		{Title: "Kafka", Flags: []string{"brokers", "topic", "output-topic", "dlq-topic", "progress-topic", "group", "instance-id", "transactional-id", "sink",
			"output-compression", "create-topics", "session-timeout", "rebalance-timeout", "transaction-timeout"}},
		{Title: "Security (TLS, SASL)", Flags: []string{"tls", "tls-ca", "tls-cert", "tls-key", "tls-server-name", "tls-insecure-skip-verify",
			"sasl-mechanism", "sasl-user", "sasl-password-file"}},
		{Title: "Input and the built-in aggregator", Flags: []string{"columns", "dedup-window", "dedup-index-entries", "max-line-bytes"}},
		{Title: "Epochs, state and checkpoints", Flags: []string{"commit-interval", "checkpoint-interval", "checkpoint-dir", "checkpoint-mode", "changelog-base-every", "changelog-max-ratio",
			"checkpoint-retain", "checkpoint-gc-grace", "data-dir", "max-epoch-bytes", "memory-limit", "tolerable-checkpoint-failures", "allow-state-loss",
			"exit-when-idle"}},
		{Title: "Checkpoints on S3-compatible object storage (--checkpoint-dir s3://bucket/prefix; credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file)",
			Flags: []string{"s3-endpoint", "s3-region", "s3-path-style", "s3-credentials-file", "s3-profile", "s3-concurrency", "s3-timeout"}},
		{Title: "Savepoints", Flags: []string{"savepoint-on-stop", "from-savepoint", "reprocess"}},
		{Title: "Restart strategy (Flink's; see docs/OPERATIONS.md)", Flags: []string{"restart-strategy", "restart-attempts", "restart-delay",
			"restart-initial-backoff", "restart-max-backoff", "restart-backoff-multiplier", "restart-reset-backoff-threshold",
			"restart-jitter", "restart-max-failures-per-interval", "restart-failure-rate-interval"}},
		{Title: "Status API, logs, config", Flags: []string{"http", "http-token", "log-level", "log-format", "config"}},
		{Title: "TESTING ONLY (fault injection; never in production)", Flags: []string{"fail-at-record", "fail-times", "crash-at-record"}},
	})
	if err := settings.Parse(fs, args, envPrefix, "config"); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.validate()
}

func (c *config) validate() error {
	var errs []error
	if err := c.conn.Validate(); err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]string{"--topic": c.topic, "--output-topic": c.outputTopic, "--dlq-topic": c.dlqTopic, "--progress-topic": c.progressTopic, "--group": c.group} {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty", name))
		}
	}
	if c.topic == c.outputTopic || c.topic == c.dlqTopic || c.topic == c.progressTopic {
		errs = append(errs, errors.New("--topic must differ from --output-topic, --dlq-topic and --progress-topic"))
	}
	if c.progressTopic == c.outputTopic || c.progressTopic == c.dlqTopic {
		errs = append(errs, errors.New("--progress-topic must differ from --output-topic and --dlq-topic"))
	}
	if c.httpAddr != "" {
		if _, port, err := net.SplitHostPort(c.httpAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--http %q: want host:port (e.g. 127.0.0.1:8081), or empty to disable", c.httpAddr))
		}
	}
	if n, err := parseBytes(c.memoryLimit); err != nil {
		errs = append(errs, fmt.Errorf("--memory-limit: %w", err))
	} else {
		c.memLimit = n
	}
	switch c.compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		errs = append(errs, fmt.Errorf("--output-compression %q: want none, gzip, snappy, lz4 or zstd", c.compression))
	}
	switch c.sink {
	case "kafka", "stdout":
	default:
		errs = append(errs, fmt.Errorf("--sink %q: want kafka or stdout", c.sink))
	}
	s, err := txcsv.ParseColumns(c.columns)
	if err != nil {
		errs = append(errs, fmt.Errorf("--columns: %w", err))
	}
	c.schema = s
	if c.mode, err = checkpoint.ParseMode(c.checkpointMode); err != nil {
		errs = append(errs, fmt.Errorf("--checkpoint-mode: %w", err))
	}
	positive := map[string]time.Duration{"--commit-interval": c.commitInterval, "--checkpoint-interval": c.checkpointInterval,
		"--dedup-window": c.dedupWindow, "--session-timeout": c.sessionTimeout, "--rebalance-timeout": c.rebalanceTimeout, "--transaction-timeout": c.txnTimeout}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if c.txnTimeout <= 2*c.commitInterval {
		errs = append(errs, fmt.Errorf("--transaction-timeout (%s) must be well above --commit-interval (%s)", c.txnTimeout, c.commitInterval))
	}
	if c.gcGrace < 0 {
		errs = append(errs, errors.New("--checkpoint-gc-grace must not be negative"))
	}
	if c.exitWhenIdle < 0 {
		errs = append(errs, errors.New("--exit-when-idle must not be negative"))
	}
	if c.clogBaseEvery < 1 {
		errs = append(errs, errors.New("--changelog-base-every must be at least 1"))
	}
	if !(c.clogMaxRatio >= 0) || math.IsInf(c.clogMaxRatio, 1) { // also NaN
		errs = append(errs, fmt.Errorf("--changelog-max-ratio %v: want a finite number >= 0", c.clogMaxRatio))
	}
	if c.checkpointRetain < 1 {
		errs = append(errs, errors.New("--checkpoint-retain must be at least 1"))
	}
	if c.maxEpochBytes < 1<<20 {
		errs = append(errs, errors.New("--max-epoch-bytes must be at least 1 MiB"))
	}
	if c.dedupIndex < 0 {
		errs = append(errs, errors.New("--dedup-index-entries must not be negative"))
	}
	if c.maxLineBytes < 16 {
		errs = append(errs, errors.New("--max-line-bytes must be at least 16"))
	}
	if c.tolerableFailures < 0 || c.failTimes < 0 || c.failAtRecord < 0 || c.crashAtRecord < 0 {
		errs = append(errs, errors.New("--tolerable-checkpoint-failures, --fail-times, --fail-at-record and --crash-at-record must not be negative"))
	}
	if err := c.restart.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.reprocess && c.fromSavepoint == "" {
		errs = append(errs, errors.New("--reprocess needs --from-savepoint"))
	}
	if c.checkpointDir == "" || c.dataDir == "" {
		errs = append(errs, errors.New("--checkpoint-dir and --data-dir must not be empty"))
	}
	if checkpoint.IsS3Location(c.checkpointDir) || checkpoint.IsS3Location(c.fromSavepoint) {
		for _, loc := range []string{c.checkpointDir, c.fromSavepoint} {
			if checkpoint.IsS3Location(loc) {
				if _, _, err := checkpoint.ParseS3URL(loc); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := c.s3.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *config) compressionOpt() kgo.Opt {
	codec := map[string]kgo.CompressionCodec{"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(),
		"snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}[c.compression]
	return kgo.ProducerBatchCompression(codec)
}

func (c *config) transactionalID() string {
	if c.txnID != "" {
		return c.txnID
	}
	id := c.instanceID
	if id == "" {
		id = "dynamic"
	}
	return "txstream-" + c.group + "-" + id
}

func (c *config) logger() (*zap.Logger, error) {
	return logging.NewFormat(c.logLevel, c.logFormat)
}

// jobSettings are the settings a snapshot must match to be restored: the
// operator's own (pipeline.StateSettings: for the aggregator, operator and
// dedup_window) and the input topic.
func (c *config) jobSettings(op pipeline.Operator) map[string]string {
	m := pipeline.StateSettings(op)
	m["topic"] = c.topic
	return m
}

// byteSize is an int flag given as a size (parseBytes), shown in MiB when
// it is a whole number of them.
type byteSize int

func (b *byteSize) String() string {
	if *b != 0 && *b%(1<<20) == 0 {
		return strconv.Itoa(int(*b)>>20) + "MiB"
	}
	return strconv.Itoa(int(*b))
}

func (b *byteSize) Set(v string) error {
	n, err := parseBytes(v)
	if err != nil {
		return err
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("%q is more than 2 GiB", v)
	}
	*b = byteSize(n)
	return nil
}

// parseBytes reads a size such as 400MiB, 1GiB, 512MB or a plain number of
// bytes.
func parseBytes(v string) (int64, error) {
	v = strings.TrimSpace(v)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 400MiB, 1GiB, 0)", v)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large a size", v)
	}
	return n * mult, nil
}
