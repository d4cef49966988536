package offsets

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"
)

// Progress records land in the progress partition of their input partition
// and ReadProgress finds the newest one; other topics keep the default
// partitioner.
func TestProgressRoundTrip(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "progress"), kfake.SeedTopics(4, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seeds := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	cl, err := kgo.NewClient(append(seeds, kgo.RecordPartitioner(ProgressPartitioner("progress")))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for p := int32(0); p < 4; p++ {
		for next := int64(1); next <= 3; next++ {
			pr := Progress{Group: "g", Topic: "in", TopicID: "T", Partition: p, Next: next * 100 * int64(p+1), Start: 7}
			rec := pr.Record("progress")
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if rec.Partition != p {
				t.Fatalf("progress of input partition %d went to progress partition %d", p, rec.Partition)
			}
		}
	}
	log := zaptest.NewLogger(t)
	for p := int32(0); p < 4; p++ {
		pr, ok, err := ReadProgress(ctx, seeds, "progress", "g", "in", p, log)
		if err != nil || !ok || pr.Next != 300*int64(p+1) || pr.Start != 7 || pr.TopicID != "T" {
			t.Fatalf("partition %d: got %+v ok=%v err=%v, want next %d", p, pr, ok, err, 300*(p+1))
		}
	}
	if _, ok, err := ReadProgress(ctx, seeds, "progress", "other-group", "in", 1, log); err != nil || ok {
		t.Fatalf("another group's progress: ok=%v err=%v, want none", ok, err)
	}
}
