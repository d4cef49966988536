// Package job runs the txstream consumer as a job with a lifecycle and a
// restart strategy, the way Apache Flink runs a streaming job.
//
// # Lifecycle
//
// A [Runner] drives a job through the states CREATED, RUNNING, RESTARTING,
// FAILED, FINISHED and CANCELED. Each attempt of the job is a call of the
// attempt function given to [Runner.Run]; an attempt builds its Kafka client
// and stores, recovers (sink's committed offsets, newest usable snapshot,
// suppressed replay) and calls markRunning once it processes live input. When
// an attempt fails, the [Strategy] decides whether the job restarts (in the
// same process, after a delay) or becomes FAILED. A FAILED job makes the
// process exit with [ExitFailed] so that a supervisor (systemd, Kubernetes)
// can take over.
//
//	CREATED ──markRunning──▶ RUNNING ──failure, strategy restarts──▶ RESTARTING
//	                            ▲                                        │
//	                            └──────────────markRunning───────────────┘
//	RUNNING ──nil / ErrFinished──────────────▶ FINISHED
//	RUNNING ──ctx canceled───────────────────▶ CANCELED
//	RUNNING ──strategy gives up / Permanent──▶ FAILED
//
// CREATED and RESTARTING (an attempt still recovering) leave by the same
// edges as RUNNING; a canceled restart delay goes RESTARTING → CANCELED.
// A failure before markRunning (during recovery) goes from CREATED or
// RESTARTING straight to RESTARTING (a RESTARTING→RESTARTING transition is
// recorded so that every restart is visible).
//
// # Restart strategies
//
// The strategies and their defaults follow Flink's "Task Failure Recovery"
// documentation
// (https://nightlies.apache.org/flink/flink-docs-stable/docs/ops/state/task_failure_recovery/)
// and its RestartStrategyOptions / *RestartBackoffTimeStrategy classes.
// [Config] fields map to Flink's configuration keys as follows.
//
// fixed-delay (restart-strategy.type: fixed-delay):
//
//	restart-strategy.fixed-delay.attempts  → Config.Attempts  (txstream default 3; Flink default 1)
//	restart-strategy.fixed-delay.delay     → Config.Delay     (txstream default 5s; Flink default 1 s)
//
// Flink documents attempts as "the number of times that Flink retries the
// execution before the job is declared as failed": Attempts is the number of
// restarts allowed over the whole life of the job (the counter is never
// reset). With Attempts=3 the job runs at most 4 times; the 4th failure makes
// it FAILED. Because the counter never resets, a long-running daemon with
// rare, unrelated failures eventually exhausts it; prefer failure-rate or
// exponential-delay for jobs meant to run for months.
//
// exponential-delay (restart-strategy.type: exponential-delay):
//
//	restart-strategy.exponential-delay.initial-backoff                → Config.InitialBackoff        (default 1 s)
//	restart-strategy.exponential-delay.max-backoff                    → Config.MaxBackoff            (default 1 min)
//	restart-strategy.exponential-delay.backoff-multiplier             → Config.BackoffMultiplier     (default 1.5)
//	restart-strategy.exponential-delay.reset-backoff-threshold        → Config.ResetBackoffThreshold (default 1 h)
//	restart-strategy.exponential-delay.jitter-factor                  → Config.JitterFactor          (default 0.1)
//	restart-strategy.exponential-delay.attempts-before-reset-backoff  → Config.Attempts              (default unlimited)
//
// The n-th restart since the last reset (n = 0, 1, ...) waits
// min(initial × multiplier^n, max), plus a uniformly random jitter of ± that
// value × jitter-factor, and the result is clamped to [initial, max] as
// Flink does ("max-backoff: the highest possible duration between
// restarts"). Once the job has been RUNNING without failure for
// reset-backoff-threshold, the next failure starts again from the initial
// backoff and the attempt counter is reset (Flink: "the number will be reset
// once the backoff is reset to its initial value"). Attempts (Flink 1.19+
// attempts-before-reset-backoff) is the number of restarts allowed between
// two resets; 0 means unlimited, Flink's default.
//
// failure-rate (restart-strategy.type: failure-rate):
//
//	restart-strategy.failure-rate.max-failures-per-interval  → Config.MaxFailuresPerInterval (default 1)
//	restart-strategy.failure-rate.failure-rate-interval      → Config.FailureRateInterval    (default 1 min)
//	restart-strategy.failure-rate.delay                      → Config.Delay                  (txstream default 5s; Flink default 1 s)
//
// The job is restarted after Delay unless more than MaxFailuresPerInterval
// failures (counting the current one) happened within the sliding window of
// FailureRateInterval ending now; then it is FAILED. As in Flink's
// FailureRateRestartBackoffTimeStrategy, two failures exactly
// FailureRateInterval apart are within the same window.
//
// none (restart-strategy.type: none, also "off", "disable"): the first
// failure makes the job FAILED.
//
// Flink's aliases fixeddelay, exponentialdelay and failurerate are accepted
// too. Unlike Flink ≥ 1.19, whose default with checkpointing enabled is
// exponential-delay, txstream's default strategy is fixed-delay.
//
// # Errors
//
// An attempt reports how it ended through its error: nil or [ErrFinished]
// means the job finished normally (bounded input, idle exit); an error
// wrapped with [Permanent] (a configuration error) makes the job FAILED
// without consulting the strategy; any other error is a failure handed to
// the strategy. Errors and panics carrying a [*RecordError] keep the
// topic/partition/offset of the record that caused them in [Failure].
//
// # Exit codes
//
// [ExitCode] maps the final state to the process exit code: [ExitOK] for
// FINISHED and CANCELED, [ExitFailed] for FAILED. [ExitConfig] is for the
// command's own flag and configuration errors, before a job exists.
package job
