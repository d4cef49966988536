package offsets

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"
)

// A log with transaction markers and an aborted transaction:
//
//	0 1 2   data (committed txn)     3  commit marker
//	4 5     data (aborted txn)       6  abort marker
//	7 8     data (committed txn)     9  commit marker
//
// Replay must return exactly the committed data records below `to`, and
// must stop even when `to` is a marker or follows aborted records.
func TestReplayStopsExactlyAtTheCommitPoint(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	prod, err := kgo.NewClient(append(conn, kgo.TransactionalID("t"), kgo.DefaultProduceTopic("in"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx := context.Background()
	txn := func(commit bool, vals ...string) {
		if err := prod.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := prod.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	txn(true, "a", "b", "c")
	txn(false, "x", "y")
	txn(true, "d", "e")

	log := zaptest.NewLogger(t)
	for _, tc := range []struct {
		from, to int64
		want     string
	}{
		{0, 10, "abcde"}, // up to the end of the log, last offset a marker
		{0, 9, "abcde"},
		{0, 7, "abc"}, // `to` right after an abort marker
		{0, 6, "abc"}, // `to` is the abort marker: the aborted records are never seen
		{0, 4, "abc"}, // `to` right after a commit marker
		{0, 3, "abc"}, // `to` is the commit marker
		{1, 3, "bc"},  // from the middle
		{4, 8, "d"},   // starting inside the aborted transaction
		{7, 7, ""},    // empty range
		{5, 5, ""},    // empty range
	} {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var got string
		err := Replay(rctx, conn, "in", 0, tc.from, tc.to, log, func(r *kgo.Record) error {
			got += string(r.Value)
			return nil
		})
		cancel()
		if err != nil {
			t.Errorf("Replay[%d,%d): %v", tc.from, tc.to, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Replay[%d,%d) = %q, want %q", tc.from, tc.to, got, tc.want)
		}
	}

	// A callback error stops the replay and is returned.
	boom := fmt.Errorf("boom")
	if err := Replay(ctx, conn, "in", 0, 0, 10, log, func(*kgo.Record) error { return boom }); err != boom {
		t.Errorf("callback error: got %v", err)
	}
}
