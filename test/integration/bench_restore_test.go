package integration

// BenchmarkCheckpointRestore: restoring one large snapshot from the local
// directory and from object storage. See docs/BENCHMARKS.md, "Checkpoints
// on object storage".

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/test/s3test"
)

// BenchmarkCheckpointRestore builds a store of BENCH_RESTORE_ACCOUNTS
// accounts (default 14M: about 1.1 GB of Pebble files, the same build as
// BenchmarkCheckpoint), publishes one full snapshot of it to a local
// directory and to a versitygw on loopback (POSIX back end on the same
// disk), then restores it from each, alternating, BENCH_RESTORE_RUNS
// times (default 3): every file is read back, its size and CRC32C
// checked, and written into a new directory, which is then opened as a
// store. Reported: the median restore of each and their ratio.
//
//	go test -run '^$' -bench CheckpointRestore -benchtime 1x -timeout 60m ./test/integration/
func BenchmarkCheckpointRestore(b *testing.B) {
	accounts := 14_000_000
	if v := os.Getenv("BENCH_RESTORE_ACCOUNTS"); v != "" {
		n, err := ckbParseCount(v)
		if err != nil || n < ckbEpoch {
			b.Fatalf("BENCH_RESTORE_ACCOUNTS=%q: want a count such as 14M, at least %d", v, ckbEpoch)
		}
		accounts = n
	}
	runs := 3
	if v := os.Getenv("BENCH_RESTORE_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_RESTORE_RUNS=%q: want a positive count", v)
		}
		runs = n
	}
	root := os.Getenv("BENCH_CHECKPOINT_DIR")
	if root == "" {
		root = b.TempDir()
	} else {
		var err error
		if root, err = os.MkdirTemp(root, "ckr-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(root)
	}
	srv := s3test.Start(b)
	base := ckbBuild(b, root, nil, accounts, ckbVariant{Name: "production"})
	b.Logf("%d accounts: store of %.0f MB built in %.0f s", accounts, float64(ckbDirBytes(base.dir))/1e6, base.buildSec)
	ctx := context.Background()
	opts := checkpoint.Options{Mode: checkpoint.ModeFull, Retain: ckbRetain, Grace: -1, Logger: zap.NewNop()}
	dir, err := checkpoint.Open(filepath.Join(root, "ck"), opts)
	if err != nil {
		b.Fatal(err)
	}
	s3, err := checkpoint.OpenStorage(ctx, srv.Location("restore"), opts,
		checkpoint.S3Config{Endpoint: "http://" + srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	stores := []checkpoint.Storage{dir, s3}
	names := []string{"dir", "s3"}
	job := map[string]string{"operator": aggregate.Name}
	var bytes int64
	for i, s := range stores {
		t0 := time.Now()
		_, ps, err := s.PublishFrom(ctx, checkpoint.Source{Topic: ckbTopic}, base.next, base.dir, job)
		if err != nil {
			b.Fatal(err)
		}
		bytes = ps.TotalBytes
		b.Logf("%s: published %d files, %.0f MB, in %v", names[i], ps.Files, float64(ps.TotalBytes)/1e6, time.Since(t0).Round(time.Millisecond))
	}
	b.ResetTimer()
	ms := make([][]float64, len(stores))
	for r := 0; r < runs; r++ {
		for i, s := range stores {
			dst := filepath.Join(root, "restore-"+names[i])
			t0 := time.Now()
			m, err := s.RestoreFrom(ctx, checkpoint.Want{Topic: ckbTopic, MaxOffset: math.MaxInt64}, dst)
			if err != nil {
				b.Fatal(err)
			}
			st, err := pipeline.OpenStore(dst, pipeline.StoreOptions{})
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			if off, err := st.Offset(); err != nil || off != m.Offset || off != base.next {
				b.Fatalf("%s: restored store at %d (%v), snapshot at %d, want %d", names[i], off, err, m.Offset, base.next)
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			if err := os.RemoveAll(dst); err != nil {
				b.Fatal(err)
			}
			ms[i] = append(ms[i], ckbMs(d))
		}
	}
	b.StopTimer()
	dm, sm := ckbMedian(ms[0]), ckbMedian(ms[1])
	b.ReportMetric(float64(bytes)/1e6, "snapshot-MB")
	b.ReportMetric(dm, "dir-restore-ms")
	b.ReportMetric(sm, "s3-restore-ms")
	b.ReportMetric(sm/dm, "s3/dir")
	b.Logf("restore of %.0f MB: dir %v ms (median %.0f, %.0f MB/s), s3 %v ms (median %.0f, %.0f MB/s), s3/dir %.2f",
		float64(bytes)/1e6, ms[0], dm, float64(bytes)/1e3/dm, ms[1], sm, float64(bytes)/1e3/sm, sm/dm)
}
