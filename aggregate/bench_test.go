package aggregate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/synth"
)

// The per-record path of the consumer, without Kafka: the aggregator over
// generated rows against a real Pebble store (the consumer's options)
// through an epoch overlay, applied every benchEpoch records as the engine
// applies a committed epoch.
//
//	go test -run '^$' -bench Process -benchmem ./aggregate/
//	go test -run '^$' -bench 'Process/live' -benchtime 500000x -cpuprofile cpu.prof ./aggregate/

const (
	benchAccounts = 100_000
	benchWarm     = 200_000 // rows processed before the timer starts
	benchEpoch    = 25_000  // records per applied epoch (about one commit interval of one partition)
)

var (
	benchMu    sync.Mutex
	benchLines [][]byte
)

// benchRows returns at least n rows of synth data (100k accounts, Zipf 1.1,
// 0.1% bad rows, 0.5% exact duplicates: BenchmarkConsumerEndToEnd's mix).
func benchRows(tb testing.TB, n int) [][]byte {
	benchMu.Lock()
	defer benchMu.Unlock()
	if len(benchLines) >= n {
		return benchLines[:n]
	}
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = max(n, 1_000_000), benchAccounts, 99
	cfg.BadFraction, cfg.DupFraction = 0.001, 0.005
	var buf bytes.Buffer
	if _, err := synth.Generate(cfg, &buf); err != nil {
		tb.Fatal(err)
	}
	benchLines = bytes.Split(bytes.TrimRight(buf.Bytes(), "\n"), []byte("\n"))[1:]
	return benchLines[:n]
}

// benchTune: BENCH_TUNE picks Pebble settings to compare with the
// consumer's (pipeline.OpenStore's): l0-4 (Pebble's default L0 compaction
// threshold, the consumer's before the L0 setting of aa0288f), l0-16, nocomp-l0 (no block
// compression in L0 to L2), mem32 (a 32 MiB memtable), sync (Pebble's own
// file system, which syncs, instead of the live store's that does not).
func benchTune() func(*pebble.Options) {
	switch os.Getenv("BENCH_TUNE") {
	case "l0-4":
		return func(o *pebble.Options) { o.L0CompactionThreshold, o.L0StopWritesThreshold = 4, 12 }
	case "l0-16":
		return func(o *pebble.Options) {
			o.L0CompactionThreshold, o.L0CompactionFileThreshold, o.L0StopWritesThreshold = 16, 64, 32
		}
	case "nocomp-l0":
		return func(o *pebble.Options) {
			for i := range 3 {
				o.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
			}
		}
	case "mem32":
		return func(o *pebble.Options) { o.MemTableSize = 32 << 20 }
	case "sync":
		return func(o *pebble.Options) { o.FS = vfs.Default }
	}
	return nil
}

// processCPU is the user+sys CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sinkEmitter keeps what a sink keeps of an output (its bytes) and counts.
type sinkEmitter struct {
	out, dlq, dup, bytes int
}

func (s *sinkEmitter) Emit(k, v []byte)          { s.out++; s.bytes += len(k) + len(v) }
func (s *sinkEmitter) DeadLetter(string, string) { s.dlq++ }
func (s *sinkEmitter) Skipped(string)            { s.dup++ }

// replaySinkEmitter is a sinkEmitter that says it discards output, as the
// engine's replay emitter does.
type replaySinkEmitter struct{ sinkEmitter }

func (replaySinkEmitter) Discards() bool { return true }

// benchT0 is the Kafka timestamp of the records: after the rows' own times
// (synth starts at 2024-01-01), as when a file is produced later.
var benchT0 = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

func BenchmarkProcess(b *testing.B) {
	for _, mode := range []string{"live", "replay"} {
		b.Run(mode, func(b *testing.B) {
			filtered := true
			lines := benchRows(b, benchWarm+b.N)
			// The engine's default block cache (Config.CacheBytes), which
			// its partitions share.
			cache := pipeline.NewCache(64 << 20)
			defer cache.Unref()
			st, err := pipeline.OpenStore(filepath.Join(b.TempDir(), "s"), pipeline.StoreOptions{Cache: cache, Tune: benchTune()})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			a := New(Config{})
			if filtered {
				// As the engine does for a Prober.
				if err := st.EnableFilter(a); err != nil {
					b.Fatal(err)
				}
			}
			ov := pipeline.NewOverlay(st)
			var em pipeline.Emitter = &sinkEmitter{}
			if mode == "replay" {
				em = &replaySinkEmitter{}
			}
			r := pipeline.Record{Topic: "transactions"}
			var ahead [pipeline.PrefetchBatch]pipeline.Record
			process := func(i int) {
				if i%pipeline.PrefetchBatch == 0 { // as the engine does
					n := min(pipeline.PrefetchBatch, len(lines)-i)
					for j := range n {
						ahead[j] = pipeline.Record{Topic: "transactions", Offset: int64(i + j), Value: lines[i+j], Timestamp: benchT0}
					}
					a.Prefetch(ahead[:n], ov)
				}
				r.Offset, r.Value, r.Timestamp = int64(i), lines[i], benchT0
				if err := a.Process(&r, ov, em); err != nil {
					b.Fatal(err)
				}
				if (i+1)%benchEpoch == 0 {
					if err := ov.Apply(int64(i + 1)); err != nil {
						b.Fatal(err)
					}
					if _, err := a.Expire(st, 2*benchEpoch); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := 0; i < benchWarm; i++ {
				process(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for i := benchWarm; i < benchWarm+b.N; i++ {
				process(i)
			}
			b.StopTimer()
			// CPU time of the whole process (Pebble's background work and
			// the GC included) per record: steadier than ns/op on a
			// shared machine.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestOutputDigest pins the aggregator's outputs, dead letters and state
// byte for byte on 60k generated rows (with bad rows, duplicates, a
// conflicting duplicate and a late record mixed in) processed against a
// Pebble store in epochs: optimisations of the hot path must not change a
// byte. The output digest was taken before the hot-path optimisations
// (filter, overlay slice, fewer allocations) and before the v3 state
// layout, which changed the state digest and not one output.
func TestOutputDigest(t *testing.T) {
	const wantOut = "406e968e96613ccef2555d35d4066e914a6cdb8201e7fae339624601d6db5a8a"
	const wantState = "ac4c5e77a836026559a099d9dbad746462fd00d374223c7e4d71a4af65503f2d"
	for _, filter := range []bool{false, true} {
		for _, prefetch := range []bool{false, true} {
			out, state := digestRun(t, false, filter, prefetch)
			if out != wantOut || state != wantState {
				t.Fatalf("filter %v, prefetch %v: digests changed:\noutput %s, want %s\nstate  %s, want %s", filter, prefetch, out, wantOut, state, wantState)
			}
		}
	}
	// A replay (output discarded) leaves the same state.
	if _, state := digestRun(t, true, true, false); state != wantState {
		t.Fatalf("replay: state digest %s, want %s", state, wantState)
	}
}

func digestRun(t *testing.T, replay, filter, prefetch bool) (out, state string) {
	lines := benchRows(t, 60_000)
	extra := [][]byte{
		[]byte("TX-00000001,ACC-000001,9.99,2024-01-01T00:00:00Z"), // conflicting duplicate of row 1 (if valid)
		[]byte("late-1,ACC-000002,1.00,2023-01-01T00:00:00Z"),      // far behind the watermark
		[]byte("q-1,\"ACC-0000,03\",1.5,2024-01-01T00:30:00Z"),     // quoted field
		[]byte("big-1,ACC-000005,123456789012345678901234567890.123456,2024-01-01T00:40:00Z"),
	}
	dir := filepath.Join(t.TempDir(), "s")
	st, err := pipeline.OpenStore(dir, pipeline.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	a := New(Config{})
	if filter {
		if err := st.EnableFilter(a); err != nil {
			t.Fatal(err)
		}
	}
	ov := pipeline.NewOverlay(st)
	h := sha256.New()
	em := &digestEmitter{h: h}
	var e pipeline.Emitter = em
	if replay {
		e = replayDigestEmitter{em}
	}
	var vals [][]byte
	for i, l := range lines {
		vals = append(vals, l)
		if i%10_000 == 5_000 {
			vals = append(vals, extra...)
		}
	}
	// A row without a time takes the record's, which moves the watermark
	// past every row above: the rows after it are late.
	vals = append(vals, []byte("e-1,ACC-000004,1.5,"))
	vals = append(vals, lines[:100]...)
	rec := func(i int) pipeline.Record {
		return pipeline.Record{Topic: "transactions", Partition: 2, Offset: int64(i), Value: vals[i],
			Timestamp: benchT0.Add(time.Duration(i) * time.Millisecond)}
	}
	var ahead []pipeline.Record
	n := 0
	process := func() {
		if prefetch && n%pipeline.PrefetchBatch == 0 {
			// As the engine does, but every 13th batch is handed the
			// wrong records (each offset with its successor's value or
			// time): Process must parse those again, not take them.
			ahead = ahead[:0]
			for i := n; i < min(n+pipeline.PrefetchBatch, len(vals)); i++ {
				r := rec(i)
				if n/pipeline.PrefetchBatch%13 == 0 && i+1 < len(vals) {
					if n%2 == 0 {
						r.Value = vals[i+1]
					} else {
						r.Timestamp = rec(i + 1).Timestamp
					}
				}
				ahead = append(ahead, r)
			}
			a.Prefetch(ahead, ov)
		}
		r := rec(n)
		if err := a.Process(&r, ov, e); err != nil {
			t.Fatal(err)
		}
		n++
		if n%7_001 == 0 {
			if err := ov.Apply(int64(n)); err != nil {
				t.Fatal(err)
			}
			if filter && n/7_001%3 == 0 {
				// Reopened, as a restore would: the filter and the index
				// of packed entries are rebuilt from the store.
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
				if st, err = pipeline.OpenStore(dir, pipeline.StoreOptions{}); err != nil {
					t.Fatal(err)
				}
				if err := st.EnableFilter(a); err != nil {
					t.Fatal(err)
				}
				ov = pipeline.NewOverlay(st)
			}
		}
	}
	for n < len(vals) {
		process()
	}
	if err := ov.Apply(int64(n)); err != nil {
		t.Fatal(err)
	}
	out = hex.EncodeToString(h.Sum(nil))
	// The state as the operator reads it (Store.Scan), whether its dedup
	// entries were packed (filter on) or not.
	sh := sha256.New()
	keys := 0
	err = st.Scan(nil, []byte{0xff}, func(k, v []byte) error {
		sh.Write(k)
		sh.Write([]byte{0})
		sh.Write(v)
		sh.Write([]byte{0})
		keys++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	state = hex.EncodeToString(sh.Sum(nil))
	ruledOut, passed := st.FilterStats()
	packed, _, _ := st.PackStats()
	t.Logf("filter %v (ruled out %d, passed %d, packed %d since the last reopen), replay %v: records %d, outputs %d, dead letters %d, duplicates %d, state keys %d", filter, ruledOut, passed, packed, replay, n, em.out, em.dlq, em.dup, keys)
	return out, state
}

type replayDigestEmitter struct{ *digestEmitter }

func (replayDigestEmitter) Discards() bool { return true }

type digestEmitter struct {
	h             interface{ Write([]byte) (int, error) }
	out, dlq, dup int
}

func (d *digestEmitter) Emit(k, v []byte) {
	d.out++
	fmt.Fprintf(d.h, "E %q %q\n", k, v)
}

func (d *digestEmitter) DeadLetter(reason, detail string) {
	d.dlq++
	fmt.Fprintf(d.h, "D %s %q\n", reason, detail)
}

func (d *digestEmitter) Skipped(reason string) {
	d.dup++
	d.h.Write([]byte("S " + reason + " " + strconv.Itoa(d.dup) + "\n"))
}
