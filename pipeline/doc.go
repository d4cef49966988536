// Package pipeline is the generic engine: the operator interface
// (Operator, with the optional Expirer and Compatibility), the
// per-partition Pebble stores with their epoch overlays, the sinks that own
// the commit point, and the loop that ties source, operator, sink and
// snapshots together, with its epochs, recovery (planner and executor),
// snapshots and savepoints. It knows nothing about what an operator
// computes; txstream's built-in operator, the transaction aggregator, is
// package aggregate.
//
// # The path of one record
//
//  1. Enters: the group member (offsets.Source, franz-go's client) polls it
//     read_committed. A non-empty poll holds group rebalances back until
//     the loop allows them again, between epochs (Engine.Run, engine.go).
//  2. Is processed: processFetches (process.go) runs the partition's
//     Operator over it with the partition's overlay as State and the open
//     epoch's emitter; the partition's position moves one past it.
//  3. Is committed: when the epoch is due, commitEpoch (epoch.go) asks the
//     Sink to commit the epoch's output, dead letters and the engine's
//     positions atomically. KafkaSink does it in one Kafka transaction with
//     the group's offsets (TxnOffsetCommit) and a progress record per
//     advanced partition. This is the commit point C.
//  4. Becomes state: only after the commit does each partition's overlay
//     go into its Pebble store, in one batch with the new offset.
//  5. Is snapshotted: at a committed boundary the snapshot scheduler
//     (snapshot.go) checkpoints changed stores and a publisher goroutine
//     copies them into package checkpoint's storage.
//  6. Is recovered: when a partition is assigned, PlanRecovery
//     (recovery.go) decides from C, the progress record, the log bounds, the
//     topic and cluster id, the snapshots and a savepoint what to restore
//     and which range to replay without output; recover.go carries it out.
//
// The contract these steps meet is docs/DESIGN.md in the repository.
package pipeline
