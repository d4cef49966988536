package kafkatest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBrokerLifecycle starts a real broker, writes transactionally, kills
// and restarts it, and checks the committed records are still there and
// the port did not change.
func TestBrokerLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a JVM: skipped with -short")
	}
	b := Start(t, Options{Dir: filepath.Join(t.TempDir(), "kafka"), Topics: []string{"lc"}, Partitions: 2})
	addr := b.Addr
	if _, err := os.Stat(filepath.Join(b.Dir, "server.properties")); err != nil {
		t.Fatal(err)
	}
	produceTxn(t, addr, "lc", 100)
	if got := count(t, addr, "lc", 100); got != 100 {
		t.Fatalf("read %d committed records, want 100", got)
	}
	b.Kill()
	if b.Running() {
		t.Fatal("running after Kill")
	}
	b.Restart()
	if b.Addr != addr {
		t.Fatalf("address changed across restart: %s -> %s", addr, b.Addr)
	}
	produceTxn(t, addr, "lc", 50)
	if got := count(t, addr, "lc", 150); got != 150 {
		t.Fatalf("read %d committed records after the restart, want 150", got)
	}
	b.Stop()
	if b.Running() {
		t.Fatal("running after Stop")
	}
}

func produceTxn(t *testing.T, addr, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("kafkatest-"+topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Value: []byte{byte(i)}}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Error(err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
}

// count reads the topic read_committed until it has seen want records (a
// restarted broker may take a while to write the markers of transactions
// that were committing when it died: real Kafka writes them
// asynchronously), then one more quiet poll to catch extra records, or
// until 45 s have passed.
func count(t *testing.T, addr, topic string, want int) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	deadline := time.Now().Add(45 * time.Second)
	for quiet := 0; quiet < 1 && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		got := 0
		fs.EachRecord(func(*kgo.Record) { got++ })
		n += got
		if got == 0 && n >= want {
			quiet++
		}
	}
	return n
}
