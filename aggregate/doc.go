// Package aggregate is txstream's built-in operator (a pipeline.Operator):
// per-account running aggregates of CSV transactions, with exact-duplicate
// removal in a record-time window.
//
// # What it computes
//
// Each input record is one CSV row (txcsv): the columns come from the
// record's columns header (txcsv.HeaderColumns), else from Config.Columns.
// A valid row is a transaction of an account (account_id, else the
// transaction id). For each accepted transaction the Aggregator updates
// the account's count, exact decimal total (apd, never float; an inexact
// sum is dead-lettered as "amount_overflow"), min, max, first and last
// record time and last input offset (AccountState), and emits one JSON
// record keyed by the account with the transaction and the account's
// running aggregate, written by hand in a fixed field order so that
// outputs are byte-for-byte deterministic. Record time is the row's
// timestamp column, else the Kafka timestamp; never the wall clock, so a
// replay computes the same results.
//
// # Dedup and the record-time watermark
//
// Each input partition's state has a watermark W: the largest value of
// min(record time, Kafka timestamp) over the partition's parsed records so
// far, W included the current record (stored under m/watermark, so it is
// part of the deterministic state and of snapshots). The Kafka timestamp
// (producer or broker clock) caps it so that one row with a far-future time
// (a typo, Unix seconds read as year 5000) cannot push W ahead and expire
// every live entry at once; in the usual case the record time is behind
// the Kafka timestamp and W is simply the newest record time.
//
// A dedup entry (transaction id, record time seen, content hash over every
// column but transaction_id, in column-name order) is live while
// seen >= W - window (Config.DedupWindow, 168 h by default). A record
// whose transaction id has a live entry with |t - seen| <= window is a
// duplicate (same content: skipped, Emitter.Skipped("duplicate")) or a
// conflicting duplicate (dead letter); any other entry for the id is
// ignored (the id is reused by a new transaction) and overwritten. Using W
// before or after the current record gives the same decisions: a record
// that raises W to W' has t >= W', and |t - seen| <= window already implies
// seen >= W' - window.
//
// W never decreases, so an entry that is not live never becomes live again:
// removing it (Aggregator.Expire, a pipeline.Expirer the engine calls
// between epochs, at any cadence and with any budget) changes no decision
// and no output.
//
// An id has one entry per time bucket at most. Two live entries of one id
// within the window of a record are possible only when a row dated ahead of
// the watermark reused the id; then the entry with the later time seen
// decides.
//
// # Late records
//
// A record whose own time t is below W - window ("late") would get an entry
// that is expired on arrival: it is dead-lettered with ReasonLateRecord
// instead of counted, because its repeats could not be detected (a
// producer that republishes a file older than the window would otherwise
// be counted twice). The dedup window is therefore also the allowed
// lateness.
//
// # Dead-letter reasons
//
// Bad input never fails the job; the record goes to the dead-letter topic
// with a stable reason: the txcsv reasons for rows that do not parse
// (txcsv.ReasonBadHeader for an unusable columns header, the field, amount,
// timestamp, UTF-8 and line-length reasons, txcsv.ReasonCSVSyntax
// otherwise), txcsv.ReasonConflictingDuplicate, ReasonLateRecord, and
// "amount_overflow".
//
// # State layout
//
// One Pebble store per input partition (pipeline.Store), with these keys:
//
//	a/<account>                  the account's AccountState (AccountKey; AccountState.Encode)
//	d/<bucket><account> 0x00 <txid>  dedup entry: time seen (Unix ns, big-endian int64), content hash (big-endian uint64)
//	d/<bucket> 0xff 0xfe <seq>   packed dedup entries of the bucket (below)
//	m/watermark                  the watermark W (Unix ns, big-endian int64); absent before the first parsed record
//
// A dedup entry lives in the time bucket of its time seen: buckets are a
// quarter of the window wide, aligned to the Unix epoch, numbered
// floor(seen / width) and written as 8 bytes that sort in time order.
// So an accepted record writes two keys (its account and its dedup
// entry), the keys of a period sit together (compactions rewrite the
// recent buckets, not all of them), and Expire deletes whole buckets
// before the one holding W - window by a range scan, without reading a
// value: the state holds up to 1.25 windows of entries. A lookup asks the
// key filter once for the id (pipeline.ProbeKeyer: the key without its
// bucket) and, when the filter does not rule it out, reads the buckets
// from t + window down to max(W - window, t - window), at most ten.
//
// The dedup keys are packed (pipeline.Packer, groups of d/<bucket>): the
// store writes an epoch's new entries of a bucket many to a Pebble value,
// d/<bucket> 0xff 0xfe <8-byte sequence>, and finds them through an
// in-memory index of their fingerprints, up to --dedup-index-entries per
// partition; beyond it, and for an entry whose id the key filter does not
// rule out (an id seen before, in this or another bucket, or a false
// positive), the entry is its own Pebble key as above. The key and value of an
// entry, and what a lookup returns, are the same either way; Expire
// deletes a bucket's packed values with its keys (they sort inside the
// bucket's range).
//
// A change of this layout or of the decisions above is a new Name (the
// state version), which makes older snapshots incompatible
// (StateSettings), unless the new version reads the old state
// (ReadsState): v4 restores v3 snapshots, whose entries are all keys of
// their own.
package aggregate
