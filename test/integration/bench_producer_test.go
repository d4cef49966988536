package integration

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/txstream/txstream/synth"
)

// benchRows is the size of the data set BenchmarkProducerThroughput sends.
const benchRows = 200_000

// BenchmarkProducerThroughput measures the producer binary end to end:
// reading and validating a 200k-row synthetic CSV, producing it with
// idempotence and acks=all to a devbroker process on the same machine, and
// waiting for every acknowledgement. Each iteration is one producer run to
// a fresh 3-partition topic; rows/s is rows acknowledged per second of wall
// time, process start included. Sub-benchmarks: a broker in memory, and one
// persisting to a data directory (no fsync).
//
//	go test -run '^$' -bench ProducerThroughput -benchtime 1x -count 5 ./test/integration/
func BenchmarkProducerThroughput(b *testing.B) {
	bins := buildBinaries(b)
	producer := bins.Path("producer")
	input := filepath.Join(b.TempDir(), "bench.csv")
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = benchRows, 1000, 1
	writeSynth(b, cfg, input)

	for _, mode := range []string{"memory", "disk"} {
		b.Run("broker="+mode, func(b *testing.B) {
			dataDir := ""
			if mode == "disk" {
				dataDir = filepath.Join(b.TempDir(), "broker")
			}
			broker := startBroker(b, dataDir)
			var ownRate float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				topic := fmt.Sprintf("bench-%d", i)
				r := runBinary(b, 10*time.Minute, producer, "--brokers", broker.Addr, "--file", input, "--topic", topic,
					"--create-topic-partitions", "3", "--progress", "off", "--log-format", "json", "--log-level", "info")
				if r.Code != 0 {
					b.Fatalf("producer exit %d:\n%s", r.Code, tail(r.Stderr, 3000))
				}
				sum := summaryOf(b, r.Stderr)
				if sum["produced"] != float64(benchRows) {
					b.Fatalf("produced %v of %d rows", sum["produced"], benchRows)
				}
				ownRate += sum["rows_per_sec"].(float64)
			}
			b.StopTimer()
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			// The producer's own figure: from its start to the last
			// acknowledgement, without process start and connection set-up.
			b.ReportMetric(ownRate/float64(b.N), "reported_rows/s")
		})
	}
}
