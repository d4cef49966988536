// Package synth is txstream's independent oracle: it generates
// deterministic transaction CSV, computes what a correct exactly-once
// consumer must output for any such CSV, and checks what a consumer wrote
// against that. It imports none of the consumer's packages, and it
// re-implements the documented row rules instead of calling the consumer's
// parser, so that a bug in the consumer's code cannot hide itself in both
// the system under test and its oracle. Tests, benchmarks, cmd/demo and
// `producer gen` / `producer expect` use it.
//
// # Generating
//
// Generate writes rows with the columns transaction_id,account_id,amount,
// timestamp (Header). Accounts follow a Zipf distribution (a few hot
// accounts, a long tail), amounts have two decimals, timestamps increase
// from a fixed epoch. A fraction of rows is malformed on purpose (empty id,
// bad amount, wrong field count, bad timestamp) and a fraction repeats an
// earlier valid row exactly. Start from DefaultConfig.
//
// The output depends only on Config: the random source is a PCG seeded
// from Config.Seed and every draw is derived from its raw 64-bit outputs,
// so the bytes do not change with Go's math/rand helpers.
//
// # Expecting
//
// Expected (ExpectedFile, ExpectedWith) reads any CSV of transactions, not
// only generated ones, and returns a Result: the counts of valid,
// duplicate, conflicting and bad rows (by reason), every account's final
// count and exact decimal total, and, in Result.Running, the aggregate each
// transaction's output record must carry in a failure-free pass.
//
// # Checking
//
// An OutputChecker collects what a consumer wrote (the values of the
// output topic's records and the sources of its dead letters; reading the
// topics is the caller's business) and compares it with a Result:
//
//	c := synth.NewOutputChecker()
//	for each record of the output topic:     c.AddOutput(r.Value)
//	for each record of the dead-letter topic: c.AddDeadLetter(source)
//	rep := c.Check(expected, synth.CheckOptions{})
//	if !rep.OK() { for _, p := range rep.Problems { t.Error(p) } }
//
// The Report says whether every valid transaction is there exactly once,
// with the running aggregate of a failure-free pass, whether every bad row
// and conflicting duplicate became one dead letter, and every account's
// final aggregate; Report.Problems words each discrepancy.
package synth
