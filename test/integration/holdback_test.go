package integration

// How long a member that dies for good holds read_committed readers back,
// measured on Apache Kafka: the consumer runs with --transaction-timeout
// 10s under steady input and is killed (SIGKILL) while its epoch's
// transaction holds output records, and never restarted. Nobody fences
// that transaction; the broker's transaction coordinator aborts it once
// it is older than the timeout, on its periodic check
// (transaction.abort.timed.out.transaction.cleanup.interval.ms; Kafka's
// default, 10 s, here as on a production broker). Until then the output
// topic's last stable offset stays at the transaction's first record.
//
// Measured: the time from the transaction's start (as the broker's
// coordinator describes it), and from the kill, until every output partition's last stable offset reaches its high
// watermark. It must be at least the transaction timeout (the broker does
// not abort earlier) and at most the timeout plus the check interval plus
// a few seconds.

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/txstream/txstream/synth"
	"github.com/txstream/txstream/test/kafkatest"
)

func TestDeadMemberHoldBack(t *testing.T) {
	const (
		txnTimeout    = 10 * time.Second
		abortInterval = 10 * time.Second // Kafka's default transaction.abort.timed.out.transaction.cleanup.interval.ms
		slack         = 4 * time.Second
	)
	bins := buildBinaries(t)
	consumer, producer := bins.Path("consumer"), bins.Path("producer")
	k := kafkatest.Start(t, kafkatest.Options{Partitions: 3, Props: map[string]string{
		"transaction.abort.timed.out.transaction.cleanup.interval.ms": "10000",
	}})
	dir := t.TempDir()
	csv, _ := depGenerate(t, dir, synth.Config{Rows: 60000, Accounts: 100, ZipfS: 1.1, Seed: 71,
		Epoch: synth.DefaultEpoch, Interval: time.Second})
	const in, out, dlq, group = "hb-in", "hb-out", "hb-dlq", "hb"
	depCreateTopics(t, k.Addr, 3, in, out, dlq)
	// Steady input for the whole test (stopped at the kill).
	prod := depStart(t, "producer", producer, depEnv(), "--brokers", k.Addr, "--topic", in, "--file", csv, "--rate", "2000")

	adm := newKadm(t, k.Addr)
	args := depConsumerArgs(k.Addr, t.TempDir(), in, out, dlq, group)
	args = setFlag(args, "--commit-interval", "1s")
	args = setFlag(args, "--transaction-timeout", txnTimeout.String())

	// Kill the consumer while its transaction holds output records. If it
	// committed in the instant before the kill, start it again (it fences
	// nothing then) and try once more.
	var (
		killed time.Time
		lso    map[int32]int64
	)
	for attempt := 1; ; attempt++ {
		p := depStart(t, "consumer", consumer, depEnv(), args...)
		waitOpenTxn(t, adm, out, p, 90*time.Second)
		p.Signal(syscall.SIGKILL)
		killed = time.Now()
		p.Wait(10 * time.Second)
		var hw map[int32]int64
		hw, lso = txnOffsets(t, adm, out)
		if openIn(hw, lso) > 0 {
			break
		}
		if attempt == 3 {
			t.Fatalf("three kills in a row landed between two transactions")
		}
		t.Logf("the kill landed between two transactions; again")
	}
	prod.Signal(syscall.SIGTERM)
	txn := ongoingTxn(t, adm, out)
	started := time.UnixMilli(txn.StartTimestamp)
	if got := time.Duration(txn.TimeoutMillis) * time.Millisecond; got != txnTimeout {
		t.Fatalf("the open transaction %s has timeout %v on the broker, want --transaction-timeout %v", txn.TxnID, got, txnTimeout)
	}
	t.Logf("consumer killed for good with transaction %s open on %d partitions of %s, started %v before the kill",
		txn.TxnID, openIn(txnOffsets(t, adm, out)), out, killed.Sub(started).Round(time.Millisecond))

	// Wait until read_committed readers see the end of every partition.
	deadline := killed.Add(txnTimeout + abortInterval + 30*time.Second)
	for {
		h, l := txnOffsets(t, adm, out)
		if openIn(h, l) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead member's transaction still holds %s back %v after the kill (high watermarks %v, last stable offsets %v)",
				out, time.Since(killed).Round(time.Second), h, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
	released := time.Now()
	sinceStart, sinceKill := released.Sub(started), released.Sub(killed)
	t.Logf("read_committed readers of %s held back %v after the transaction started, %v after the kill "+
		"(--transaction-timeout %v, broker checks for timed-out transactions every %v)",
		out, sinceStart.Round(10*time.Millisecond), sinceKill.Round(10*time.Millisecond), txnTimeout, abortInterval)
	if sinceStart < txnTimeout {
		t.Errorf("released %v after the transaction started, before the transaction timeout %v: something else ended it", sinceStart, txnTimeout)
	}
	if limit := txnTimeout + abortInterval + slack; sinceStart > limit {
		t.Errorf("held back %v after the transaction started, more than timeout + check interval + %v = %v", sinceStart, slack, limit)
	}

	// The aborted records stay invisible: what read_committed readers see
	// now ends where the kill left the committed output.
	h, l := txnOffsets(t, adm, out)
	for p := range lso {
		if l[p] < lso[p] || h[p] != l[p] {
			t.Errorf("%s/%d after the abort: high watermark %d, last stable offset %d (at the kill: last stable %d)", out, p, h[p], l[p], lso[p])
		}
	}
}

// txnOffsets returns topic's high watermarks and last stable offsets.
func txnOffsets(t testing.TB, adm *kadm.Client, topic string) (hw, lso map[int32]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = h.Error()
	}
	if err != nil {
		t.Fatalf("high watermarks of %s: %v", topic, err)
	}
	l, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		t.Fatalf("last stable offsets of %s: %v", topic, err)
	}
	hw, lso = map[int32]int64{}, map[int32]int64{}
	h.Each(func(o kadm.ListedOffset) { hw[o.Partition] = o.Offset })
	l.Each(func(o kadm.ListedOffset) { lso[o.Partition] = o.Offset })
	return hw, lso
}

// openIn counts the partitions whose high watermark is past their last
// stable offset.
func openIn(hw, lso map[int32]int64) int {
	n := 0
	for p, h := range hw {
		if h > lso[p] {
			n++
		}
	}
	return n
}

// ongoingTxn describes the one ongoing transaction that holds records of
// topic (the broker's view: its start time and timeout).
func ongoingTxn(t testing.TB, adm *kadm.Client, topic string) kadm.DescribedTransaction {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	txns, err := adm.DescribeTransactions(ctx)
	if err != nil {
		t.Fatalf("describing transactions: %v", err)
	}
	var found []kadm.DescribedTransaction
	for _, d := range txns.Sorted() {
		if d.Err == nil && d.State == "Ongoing" && len(d.Topics[topic]) > 0 {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ongoing transactions write to %s, want 1: %+v", len(found), topic, found)
	}
	return found[0]
}
