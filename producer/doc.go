// Package producer is the producer command (cmd/producer is a thin main
// over Run): it publishes CSV transactions from a file or stdin to a Kafka
// topic, one record per valid row, and has two helper subcommands, gen and
// expect, for test data.
//
// # Publishing: producer --file PATH|- [flags]
//
// The input starts with a header line naming its columns in any order
// (transaction_id and amount are required; account_id, timestamp and any
// other column are carried along). Each data row becomes one record: the
// value is the row's CSV text exactly as read, the key is --key-column
// (default account_id, or transaction_id when the row has no account), and
// the record header txstream-columns (txcsv.HeaderColumns) names the
// columns, so the consumer can parse a row without the file's header.
// Delivery is idempotent with acks=all: a retried batch is written once.
//
// A run goes through these parts, one file each:
//
//   - source.go: where bytes come from. A file, stdin (-), or with --follow
//     a file watched like tail -F: at its end the source polls every
//     --follow-poll, waits for a file that does not exist yet, rereads a
//     truncated file from its start (copytruncate) and switches to the new
//     file after a rotation once the old one is drained. Each new file's
//     first line is its header; a reopened file without one keeps the
//     previous columns.
//   - reader.go: bytes into CSV records with bounded memory. A quoted field
//     may span lines (RFC 4180); a record longer than --max-line-bytes is
//     reported and skipped without being held; empty lines are skipped and
//     counted; an incomplete last line waits for more data when following.
//   - publish.go: validation and producing. Every row is checked by package
//     txcsv, the same rules the consumer applies (field count, non-empty
//     transaction_id, decimal amount, timestamp formats, UTF-8, CSV syntax,
//     line length). A bad row is rejected with its line number and a stable
//     reason; a valid one is handed to the Kafka client, whose promise
//     counts it acknowledged or failed. The first delivery failure stops
//     reading. --strict makes the first bad row an error (the rows before
//     it are still delivered); --dry-run validates without connecting.
//   - rejects.go: with --rejects FILE, every rejected row is written to a
//     CSV report (line,reason,detail,raw) as well as logged (only the first
//     --log-rejects at warn level then; without a file all are logged).
//   - rate.go: --rate N spaces rows at N per second, without bursting
//     through a backlog after the followed file was idle.
//   - progress.go: --progress bar redraws one line on a terminal (rows,
//     rate, rejected, percentage and ETA when the size is known) and keeps
//     log lines from garbling it; --progress log writes a structured line
//     every --progress-interval instead (the default off a terminal).
//   - cli.go: flags, settings from the environment (TXSTREAM_*) and a YAML
//     --config file, the Kafka client, --create-topic-partitions, signal
//     handling, the stall watchdog and the summary.
//
// The run ends with a validation report, a summary line like
//
//	read 3000 rows: 2990 produced, 10 rejected (empty_transaction_id=4 field_count=3 invalid_amount=2 invalid_timestamp=1) in 1.2s (2500 rows/s)
//
// and an exit code: ExitOK only when every valid row read was
// acknowledged; ExitFailure on a delivery failure, a bad row under
// --strict, a bad header or an I/O error; ExitUsage on bad settings;
// ExitInterrupted when SIGINT/SIGTERM came before the end of the input. The
// first signal stops reading and delivers what was read (with --follow
// that is the normal way to stop, and exits 0); a second one aborts. When
// the brokers acknowledge nothing for longer than --delivery-timeout (plus
// a margin) the watchdog gives up instead of waiting forever.
//
// # producer gen
//
// Writes deterministic synthetic transactions as CSV (package synth does
// the work): Zipf-distributed accounts, two-decimal amounts, increasing
// timestamps, and on request a fraction of malformed rows (--bad-fraction)
// and of exact duplicates (--dup-fraction). The same flags always give the
// same bytes; a file is written under a temporary name and renamed when
// complete.
//
// # producer expect FILE|-
//
// Prints what a correct exactly-once consumer computes from a CSV file:
// counts of valid, duplicate, conflicting and bad rows (by reason), and per
// account the number of unique transactions and their exact decimal total,
// as Markdown tables or --json. It uses synth.Expected, which shares no
// parsing code with txcsv, so it can check both the producer and the
// consumer.
package producer
