package checkpoint

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkPublish measures Publish in both modes on a store of
// CHECKPOINT_BENCH_MB megabytes (default 256) of incompressible values.
// Each iteration changes ~0.5% of the data (an epoch's worth of writes,
// automatic compactions enabled), takes a pebble checkpoint and publishes
// it; only Publish is timed. Run with:
//
//	go test ./checkpoint/ -run '^$' -bench Publish -benchtime 10x
func BenchmarkPublish(b *testing.B) {
	mb := 256
	if v := os.Getenv("CHECKPOINT_BENCH_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("CHECKPOINT_BENCH_MB=%q", v)
		}
		mb = n
	}
	const valSize = 1024
	keys := mb << 20 / valSize
	tmp := b.TempDir()
	r := rand.NewChaCha8([32]byte{1})
	val := make([]byte, valSize)
	write := func(db *pebble.DB, from, to int) {
		batch := db.NewBatch()
		for i := from; i < to; i++ {
			r.Read(val)
			if err := batch.Set(fmt.Appendf(nil, "key-%010d", i%keys), val, nil); err != nil {
				b.Fatal(err)
			}
			if batch.Len() > 32<<20 {
				if err := batch.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				batch = db.NewBatch()
			}
		}
		if err := batch.Commit(pebble.Sync); err != nil {
			b.Fatal(err)
		}
	}

	for _, mode := range []Mode{ModeFull, ModeIncremental} {
		b.Run(string(mode), func(b *testing.B) {
			live := filepath.Join(tmp, string(mode), "live")
			db, err := pebble.Open(live, &pebble.Options{Logger: quietPebbleLogger{}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			write(db, 0, keys)
			if err := db.Flush(); err != nil {
				b.Fatal(err)
			}
			s, err := Open(filepath.Join(tmp, string(mode), "ckpt"), Options{Mode: mode})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			next := keys
			// First snapshot outside the measurement: it copies everything
			// in both modes.
			src := stage(b, db, filepath.Join(tmp, string(mode)))
			if _, _, err := s.Publish(ctx, "bench", 0, int64(next), src, nil); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(src)

			var written, total int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				change := keys / 200
				write(db, next, next+change)
				next += change
				src := stage(b, db, filepath.Join(tmp, string(mode)))
				b.StartTimer()
				_, st, err := s.Publish(ctx, "bench", 0, int64(next), src, nil)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(src)
				written += st.BytesWritten
				total += st.TotalBytes
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(written)/float64(b.N)/(1<<20), "MB_written/op")
			b.ReportMetric(float64(total)/float64(b.N)/(1<<20), "MB_store/op")
			b.SetBytes(total / int64(b.N))
		})
	}
}
