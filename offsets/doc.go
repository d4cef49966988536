// Package offsets owns the input side: where a record enters txstream, the
// positions of the input partitions, the committed offsets recovery starts
// from, and the reads that rebuild state after a restore.
//
// # The source
//
// A Source is one member of the consumer group (cooperative-sticky
// assignment, optional static membership). The processing loop calls
// Source.Poll; every record it processes comes from there
// (read_committed). Ownership changes arrive on Source.Events (Assigned,
// Revoked, Lost). A non-empty poll holds the group's rebalances back until
// the loop calls Source.AllowRebalance between epochs, so a partition never
// changes hands in the middle of an epoch; Source.RebalanceWaiting tells the
// loop that one is waiting.
//
// The positions belong to the engine, not to the Kafka client: the client
// never resets an offset by itself (a position whose records are gone is an
// error), and after a restore or an aborted epoch the engine puts the client
// back with Source.Seek. With a transactional id, Source.Session is the
// franz-go GroupTransactSession whose producer the exactly-once sink uses,
// so the input offsets are committed in the same Kafka transaction as the
// output; without one, Source.CommitSync commits them afterwards
// (at-least-once).
//
// # What recovery reads
//
//   - Source.Committed: the group's committed offset C of a partition, with
//     require-stable semantics (it waits out a transaction still holding
//     offsets for the partition).
//   - ReadProgress: the partition's progress record (Progress), written in
//     every epoch's transaction to a compacted topic; it survives the
//     expiry or deletion of the group's offsets.
//   - Source.Bounds: the log start and last stable offsets.
//   - Source.Identity: the topic id and cluster id, which snapshots must
//     match.
//   - Replay: a bounded, read_committed read of one partition with a
//     client of its own, outside the group, that feeds the records between
//     a snapshot's offset and C back to the operator without output.
//
// The decision made from these inputs is pipeline.PlanRecovery's.
package offsets
