package status

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Vectors from Apache Kafka's UtilsTest.testMurmur2 (the Java client).
func TestMurmur2KafkaVectors(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	} {
		if got := Murmur2([]byte(c.in)); got != c.want {
			t.Errorf("Murmur2(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// PartitionForKey must agree with franz-go's default partitioner for keyed
// records (the producer's), which is the Java client's.
func TestPartitionForKeyMatchesFranzGo(t *testing.T) {
	part := kgo.StickyKeyPartitioner(nil).ForTopic("transactions")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		key := make([]byte, rng.IntN(40))
		for j := range key {
			key[j] = byte(rng.IntN(256))
		}
		if i%2 == 0 {
			key = fmt.Appendf(nil, "ACC-%03d", i)
		}
		for _, n := range []int{1, 3, 4, 7, 12, 100} {
			want := part.Partition(&kgo.Record{Key: key}, n)
			if got := PartitionForKey(key, int32(n)); int(got) != want {
				t.Fatalf("PartitionForKey(%q, %d) = %d, franz-go says %d", key, n, got, want)
			}
		}
	}
	// toPositive clears the sign bit (not Math.abs): "21" hashes negative.
	if got, want := PartitionForKey([]byte("21"), 1000), int32((-973932308&0x7fffffff)%1000); got != want {
		t.Errorf("PartitionForKey(21, 1000) = %d, want %d", got, want)
	}
	if PartitionForKey([]byte("x"), 0) != -1 {
		t.Errorf("unknown partition count must give -1")
	}
}
