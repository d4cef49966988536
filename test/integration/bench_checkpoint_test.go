package integration

// BenchmarkCheckpoint: full vs incremental snapshots of a partition store as
// the state grows. See docs/BENCHMARKS.md, "Checkpoints: full vs
// incremental", for what is measured and the recorded numbers.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
)

const (
	// ckbRounds is the number of update rounds after the first snapshot:
	// each changes 10% of the accounts and takes one snapshot, so a run
	// publishes 1+ckbRounds snapshots per mode (retention 3).
	ckbRounds = 5
	// ckbUpdateFrac is the share of accounts that receive one transaction
	// between two snapshots (BENCH_CHECKPOINT_UPDATE=<percent> changes it).
	ckbUpdateFrac = 0.10
	// ckbEpoch is the number of transactions applied per Pebble batch (the
	// engine applies one batch per epoch).
	ckbEpoch = 10_000
	// ckbRetain is the retention of every checkpoint store in the run.
	ckbRetain = 3
	// ckbOffsetKey is pipeline's offset record, written in every epoch's
	// batch as the engine does.
	ckbOffsetKey = "\xff\xfftxstream/offset"
	ckbTopic     = "bench"
)

// ckbSize is one state size.
type ckbSize struct {
	label    string
	accounts int
}

// ckbSizes: 10k, 100k, 1M and 5M accounts by default;
// BENCH_CHECKPOINT_BIG=1 adds a run past 1 GiB of live state
// (BENCH_CHECKPOINT_BIG_ACCOUNTS, default 12M accounts: ~1.2 GB);
// BENCH_CHECKPOINT_SIZES=10k,1M,... replaces the list.
func ckbSizes(b *testing.B) []ckbSize {
	list := "10k,100k,1M,5M"
	if v := os.Getenv("BENCH_CHECKPOINT_SIZES"); v != "" {
		list = v
	} else if os.Getenv("BENCH_CHECKPOINT_BIG") == "1" {
		big := "12M"
		if v := os.Getenv("BENCH_CHECKPOINT_BIG_ACCOUNTS"); v != "" {
			big = v
		}
		list += "," + big
	}
	var out []ckbSize
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		n, err := ckbParseCount(s)
		if err != nil || n < ckbEpoch/10 {
			b.Fatalf("bad state size %q in the size list (want e.g. 10k, 5M; at least %d)", s, ckbEpoch/10)
		}
		out = append(out, ckbSize{label: s, accounts: n})
	}
	return out
}

func ckbParseCount(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1_000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1_000_000, strings.TrimSuffix(s, "M")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("bad count %q", s)
	}
	return int(f * float64(mult)), nil
}

// ckbVariant is one way of running the live store: the production options
// (pipeline.OpenStore) or a tuning candidate on top of them.
type ckbVariant struct {
	Name string `json:"name"`
	Desc string `json:"description"`
	// tune adjusts the production Pebble options (nil: production).
	tune func(*pebble.Options)
	// flushFirst flushes the memtable before the checkpoint (the flush is
	// part of the pause), so the snapshot's WAL holds (almost) nothing.
	flushFirst bool
	// walCopy skips the engine's pre-checkpoint flush
	// (Store.PrepareCheckpoint): the checkpoint copies the whole live WAL.
	walCopy bool
}

// ckbVariants are the tuning candidates. The default run measures
// "production" only; BENCH_CHECKPOINT_TUNING=all (or a comma-separated list
// of names) adds the others as sub-benchmarks of every size, in the same
// run.
var ckbVariants = []ckbVariant{
	{Name: "production", Desc: "pipeline.OpenStore as the consumer opens it (16 MiB memtable, bloom filters, 64 MiB shared cache); like the engine, Store.PrepareCheckpoint flushes a WAL over 1 MiB in the background before the checkpoint (not part of the pause: processing goes on), then the checkpoint copies the short WAL"},
	{Name: "wal-copy", Desc: "production options without the pre-checkpoint flush: every checkpoint copies the whole live WAL (up to the 16 MiB memtable)",
		walCopy: true},
	{Name: "flush-first", Desc: "production options; db.Flush() before the checkpoint, counted in the pause, instead of the background pre-flush",
		flushFirst: true, walCopy: true},
	{Name: "l0-16", Desc: "L0 compaction threshold 16 sublevels / 64 files (default 4 / 500), stop writes at 32: flushes pile up in L0 and are merged into Lbase less often",
		tune: func(o *pebble.Options) {
			o.L0CompactionThreshold, o.L0CompactionFileThreshold, o.L0StopWritesThreshold = 16, 64, 32
		}},
	{Name: "files-512k", Desc: "target file size 512 KiB at L0, doubling per level (default 2 MiB): compactions rewrite smaller files",
		tune: func(o *pebble.Options) { o.TargetFileSizes[0] = 512 << 10 }},
	{Name: "files-16m", Desc: "target file size 16 MiB at L0, doubling per level (default 2 MiB)",
		tune: func(o *pebble.Options) { o.TargetFileSizes[0] = 16 << 20 }},
	{Name: "l0-8", Desc: "L0 compaction threshold 8 sublevels (default 4), stop writes at 24",
		tune: func(o *pebble.Options) { o.L0CompactionThreshold, o.L0StopWritesThreshold = 8, 24 }},
	{Name: "lbase-16m", Desc: "LBaseMaxBytes 16 MiB (default 64 MiB): a smaller base level, one more level",
		tune: func(o *pebble.Options) { o.LBaseMaxBytes = 16 << 20 }},
	{Name: "lbase-256m", Desc: "LBaseMaxBytes 256 MiB (default 64 MiB): the base level absorbs more before it is merged into the bottom level",
		tune: func(o *pebble.Options) { o.LBaseMaxBytes = 256 << 20 }},
	{Name: "l0-16+lbase-256m", Desc: "l0-16 and lbase-256m together",
		tune: func(o *pebble.Options) {
			o.L0CompactionThreshold, o.L0CompactionFileThreshold, o.L0StopWritesThreshold = 16, 64, 32
			o.LBaseMaxBytes = 256 << 20
		}},
	{Name: "mult-4", Desc: "level size multiplier 4 (default 10)",
		tune: func(o *pebble.Options) { o.Experimental.LevelMultiplier = 4 }},
	{Name: "mult-4+lbase-16m", Desc: "level size multiplier 4 and LBaseMaxBytes 16 MiB",
		tune: func(o *pebble.Options) { o.Experimental.LevelMultiplier, o.LBaseMaxBytes = 4, 16<<20 }},
	{Name: "mult-4+lbase-32m", Desc: "level size multiplier 4 and LBaseMaxBytes 32 MiB",
		tune: func(o *pebble.Options) { o.Experimental.LevelMultiplier, o.LBaseMaxBytes = 4, 32<<20 }},
	{Name: "mult-2", Desc: "level size multiplier 2 (default 10)",
		tune: func(o *pebble.Options) { o.Experimental.LevelMultiplier = 2 }},
	{Name: "l0-16+mult-4", Desc: "l0-16 and level size multiplier 4",
		tune: func(o *pebble.Options) {
			o.L0CompactionThreshold, o.L0CompactionFileThreshold, o.L0StopWritesThreshold = 16, 64, 32
			o.Experimental.LevelMultiplier = 4
		}},
	{Name: "format-newest", Desc: "Pebble's newest format (columnar blocks), no value separation",
		tune: func(o *pebble.Options) {
			o.FormatMajorVersion = pebble.FormatNewest
			o.Experimental.EnableColumnarBlocks = func() bool { return true }
		}},
	{Name: "blob-32", Desc: "newest format with value separation: values of 32+ bytes (the account aggregates) in blob files that compactions reference instead of rewriting",
		tune: func(o *pebble.Options) { ckbValueSeparation(o, 32) }},
	{Name: "blob-16", Desc: "as blob-32 with values of 16+ bytes (aggregates and dedup records) separated",
		tune: func(o *pebble.Options) { ckbValueSeparation(o, 16) }},
	{Name: "mult-3", Desc: "level size multiplier 3 (default 10)",
		tune: func(o *pebble.Options) { o.Experimental.LevelMultiplier = 3 }},
	{Name: "compact-2", Desc: "compaction concurrency 2 (default 1..1)",
		tune: func(o *pebble.Options) { o.CompactionConcurrencyRange = func() (int, int) { return 2, 2 } }},
}

func ckbValueSeparation(o *pebble.Options, minSize int) {
	o.FormatMajorVersion = pebble.FormatNewest
	o.Experimental.EnableColumnarBlocks = func() bool { return true }
	o.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{Enabled: true, MinimumSize: minSize, MaxBlobReferenceDepth: 10,
			RewriteMinimumAge: time.Hour, TargetGarbageRatio: 0.5}
	}
}

func ckbSelectedVariants(b *testing.B) []ckbVariant {
	v := os.Getenv("BENCH_CHECKPOINT_TUNING")
	if v == "" {
		return ckbVariants[:1]
	}
	if v == "all" {
		return ckbVariants
	}
	var out []ckbVariant
	for _, name := range strings.Split(v, ",") {
		i := slices.IndexFunc(ckbVariants, func(c ckbVariant) bool { return c.Name == strings.TrimSpace(name) })
		if i < 0 {
			b.Fatalf("BENCH_CHECKPOINT_TUNING: unknown variant %q", name)
		}
		out = append(out, ckbVariants[i])
	}
	return out
}

// ckbMode is what one checkpoint mode measured in one run.
type ckbMode struct {
	PublishMs    []float64 `json:"publish_ms"`    // per update round: Store.Publish
	DurableMs    []float64 `json:"durable_ms"`    // per update round: pause + publish
	BytesWritten []int64   `json:"bytes_written"` // per update round: PublishStats.BytesWritten
	SSTWritten   []int64   `json:"sst_written"`   // per update round: the part that is SSTs
	FirstMs      float64   `json:"first_ms"`      // first snapshot (copies everything in both modes)
	FirstBytes   int64     `json:"first_bytes"`
	SnapBytes    int64     `json:"snapshot_bytes"` // Meta.Bytes of the last snapshot
	DirBytes     int64     `json:"dir_bytes"`      // checkpoint dir after every snapshot, retention 3, no GC grace
	RestoreMs    float64   `json:"restore_ms"`     // Store.Restore of the last snapshot into a new dir
	OpenMs       float64   `json:"open_ms"`        // opening the restored store (WAL replay)
	CpMs         float64   `json:"cp_ms"`          // cp -r of the same files, same run
	CpSyncMs     float64   `json:"cp_sync_ms"`     // cp -r then sync of the copies
	RestoreBytes int64     `json:"restore_bytes"`
	// Page-cache residency of the snapshot's files right before the cp
	// and right before the restore (fincore; -1 unknown).
	CachedBeforeCp      float64 `json:"cached_before_cp"`
	CachedBeforeRestore float64 `json:"cached_before_restore"`
}

// ckbRunResult is one run (one -count iteration) of one size and variant.
type ckbRunResult struct {
	Accounts      int       `json:"accounts"`
	Variant       string    `json:"variant"`
	UpdatePct     float64   `json:"updated_pct"`       // accounts updated per round, percent
	Run           int       `json:"run"`               // 0, 1, ...: seeds the run's updates
	BuildSec      float64   `json:"build_s,omitempty"` // initial load, first run only
	Updated       int       `json:"accounts_updated_per_round"`
	LiveStart     int64     `json:"live_bytes_start"`     // live store dir at the first snapshot
	LiveEnd       int64     `json:"live_bytes_end"`       // after the last round
	PauseMs       []float64 `json:"pause_ms"`             // per snapshot (first included)
	PreFlushMs    []float64 `json:"pre_flush_ms"`         // per snapshot: the background flush before it (not in the pause)
	WALBytes      []int64   `json:"wal_bytes"`            // per snapshot: *.log in the checkpoint
	WALCopyMs     []float64 `json:"wal_copy_ms"`          // per snapshot: copying and fsyncing those *.log files alone
	PebbleWritten []int64   `json:"pebble_sst_written"`   // per round: bytes Pebble flushed + compacted
	UpdateMs      []float64 `json:"update_ms"`            // per round: applying the round's transactions
	GraceDirBytes int64     `json:"incr_dir_bytes_grace"` // incremental dir with the default 10 min GC grace
	// NewSSTByLevel is, per round, the bytes of SSTs in the checkpoint
	// that the previous one did not have, by the level they are in
	// (index 7: already compacted away when looked up).
	NewSSTByLevel [][8]int64 `json:"new_sst_bytes_by_level"`
	Full          ckbMode    `json:"full"`
	Incr          ckbMode    `json:"incremental"`
}

// ckbSummary is the median over the runs of one size and variant.
type ckbSummary struct {
	Accounts      int     `json:"accounts"`
	Variant       string  `json:"variant"`
	UpdatePct     float64 `json:"updated_pct"`
	Runs          int     `json:"runs"`
	LiveMB        float64 `json:"live_mb"`
	PauseMedMs    float64 `json:"pause_median_ms"`
	PauseMaxMs    float64 `json:"pause_max_ms"`
	PreFlushMs    float64 `json:"pre_flush_median_ms"`
	WALMB         float64 `json:"wal_mb_per_snapshot"`
	WALCopyMs     float64 `json:"wal_copy_ms"`
	IncrMaxMB     float64 `json:"incr_max_mb_per_snapshot"`
	UpdateMs      float64 `json:"update_ms_per_round"`
	PebbleMB      float64 `json:"pebble_sst_mb_written_per_round"`
	FullDurableMs float64 `json:"full_durable_ms"`
	IncrDurableMs float64 `json:"incr_durable_ms"`
	FullMB        float64 `json:"full_mb_per_snapshot"`
	IncrMB        float64 `json:"incr_mb_per_snapshot"`
	IncrSSTMB     float64 `json:"incr_sst_mb_per_snapshot"`
	IncrOverFull  float64 `json:"incr_over_full_bytes"`
	FullFirstMs   float64 `json:"full_first_ms"`
	IncrFirstMs   float64 `json:"incr_first_ms"`
	FullDirMB     float64 `json:"full_dir_mb"`
	IncrDirMB     float64 `json:"incr_dir_mb"`
	IncrDirGrace  float64 `json:"incr_dir_mb_grace_10m"`
	FullDirXLive  float64 `json:"full_dir_over_live"`
	IncrDirXLive  float64 `json:"incr_dir_over_live"`
	FullRestoreMs float64 `json:"full_restore_ms"`
	IncrRestoreMs float64 `json:"incr_restore_ms"`
	FullCpMs      float64 `json:"full_cp_ms"`
	IncrCpMs      float64 `json:"incr_cp_ms"`
	FullCpSyncMs  float64 `json:"full_cp_sync_ms"`
	IncrCpSyncMs  float64 `json:"incr_cp_sync_ms"`
	FullRestoreX  float64 `json:"full_restore_over_cp"`
	IncrRestoreX  float64 `json:"incr_restore_over_cp"`
	FullOpenMs    float64 `json:"full_open_ms"`
	IncrOpenMs    float64 `json:"incr_open_ms"`
	RestoreMB     float64 `json:"restore_mb"`
	CachedMin     float64 `json:"min_cached_before_cp_or_restore"` // lowest page-cache residency seen before a cp or restore
}

// ckbBase is the built store of one size and variant, shared by the runs
// (-count) of that size: every run starts from a hard-linked clone of it.
type ckbBase struct {
	dir      string
	buildSec float64
	reported bool  // buildSec went into a run's result
	runs     int   // runs started from this base (seeds each run's updates)
	next     int64 // next input offset
	txid     int64 // next transaction number
}

var ckbBases sync.Map // "<accounts>/<variant>" -> *ckbBase

// BenchmarkCheckpoint measures the processing pause, time until durable,
// bytes written, checkpoint directory size and restore time of full and
// incremental snapshots for growing state, driving the real code paths in
// process: pipeline.OpenStore (the consumer's Pebble options), epoch batches
// with the offset record, pipeline.Store.Checkpoint (the pause) and
// checkpoint.Store.Publish / Restore.
//
// Each run of a size clones the same store of N accounts (one aggregate from
// aggregate.AccountState.Encode and one 16-byte dedup record per account,
// loaded in random order), takes a first snapshot and then ckbRounds
// rounds of: 10% of the accounts (random, seeded by run and round) receive one transaction
// each (read the aggregate and the dedup key, write the new aggregate and
// a new dedup record, one batch per 10k transactions), checkpoint, publish
// in both modes from the same checkpoint. Both modes see identical input,
// so their ratios are measured in the same run. The full and incremental
// checkpoint stores keep 3 snapshots with no GC grace; a third,
// incremental store with the default 10 minute grace shows what the pool
// holds within the grace period. Then both latest snapshots are restored
// and compared with cp -r of the same files (page cache warm for both).
//
//	go test -run '^$' -bench Checkpoint -benchtime 1x -count 3 -timeout 60m ./test/integration/
//
// Environment: BENCH_CHECKPOINT_SIZES=10k,1M (state sizes),
// BENCH_CHECKPOINT_BIG=1 (add 12M accounts, past 1 GiB of live state),
// BENCH_CHECKPOINT_UPDATE=<percent> (accounts updated per round, default 10),
// BENCH_CHECKPOINT_TUNING=all|name,... (Pebble tuning candidates next to
// production), BENCH_CHECKPOINT_DIR (scratch directory, default the system
// temp dir), BENCH_CHECKPOINT_OUT (where checkpoint-bench.{json,csv,svg}
// go, default docs/ of the repository; "-" for nowhere),
// BENCH_CHECKPOINT_NAME (base name of those files, default
// checkpoint-bench; the chart is drawn for the default name only),
// BENCH_CHECKPOINT_RENDER=1 (only redraw the CSV and chart from the JSON).
func BenchmarkCheckpoint(b *testing.B) {
	if os.Getenv("BENCH_CHECKPOINT_RENDER") == "1" {
		// Redraw the CSV and the chart from the JSON, measure nothing.
		if err := ckbWriteResults(ckbOutDir(), nil, nil, nil); err != nil {
			b.Fatal(err)
		}
		return
	}
	sizes := ckbSizes(b)
	variants := ckbSelectedVariants(b)
	frac, suffix := ckbUpdateFrac, ""
	if v := os.Getenv("BENCH_CHECKPOINT_UPDATE"); v != "" {
		pct, err := strconv.ParseFloat(v, 64)
		if err != nil || pct <= 0 || pct > 100 {
			b.Fatalf("BENCH_CHECKPOINT_UPDATE=%q: want a percentage of the accounts", v)
		}
		if frac = pct / 100; frac != ckbUpdateFrac {
			suffix = fmt.Sprintf("@%g%%", pct)
		}
	}
	scratch := os.Getenv("BENCH_CHECKPOINT_DIR")
	if scratch == "" {
		scratch = os.TempDir()
	}
	root, err := os.MkdirTemp(scratch, "txstream-ckbench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(root)
	cache := pipeline.NewCache(64 << 20) // the consumer's default --cache
	defer cache.Unref()

	results := map[string][]ckbRunResult{}
	var order []string
	for _, size := range sizes {
		for _, v := range variants {
			name := "accounts=" + size.label
			if len(variants) > 1 {
				name += "/pebble=" + v.Name
			}
			if suffix != "" {
				name += "/updated=" + strings.TrimPrefix(suffix, "@")
			}
			key := fmt.Sprintf("%d/%s%s", size.accounts, v.Name, suffix)
			b.Run(name, func(b *testing.B) {
				r := ckbRun(b, root, cache, size.accounts, v, frac, suffix)
				if !b.Failed() {
					if _, ok := results[key]; !ok {
						order = append(order, key)
					}
					results[key] = append(results[key], r)
				}
			})
		}
		// The next size builds its own base: drop this size's.
		for _, v := range variants {
			if x, ok := ckbBases.LoadAndDelete(fmt.Sprintf("%d/%s", size.accounts, v.Name)); ok {
				os.RemoveAll(x.(*ckbBase).dir)
			}
		}
	}
	if len(order) == 0 {
		return
	}
	var sums []ckbSummary
	for _, k := range order {
		sums = append(sums, ckbSummarise(results[k]))
	}
	ckbPrintTable(os.Stdout, sums)
	if out := ckbOutDir(); out != "" {
		if err := ckbWriteResults(out, sums, results, order); err != nil {
			b.Errorf("writing results: %v", err)
		} else {
			fmt.Printf("results: %s.{json,csv,svg}\n", filepath.Join(out, ckbOutName()))
		}
	}
}

func ckbOutName() string {
	if v := os.Getenv("BENCH_CHECKPOINT_NAME"); v != "" {
		return v
	}
	return "checkpoint-bench"
}

func ckbOutDir() string {
	v := os.Getenv("BENCH_CHECKPOINT_OUT")
	if v == "-" {
		return ""
	}
	if v != "" {
		return v
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs")
}

// ckbState generates the accounts' values.
type ckbState struct {
	accounts int
	width    int
	next     int64 // input offset
	txid     int64
	keyBuf   []byte
	valBuf   []byte
	dkBuf    []byte
	now      time.Time
}

var ckbDec = apd.BaseContext.WithPrecision(60)

func (g *ckbState) account(i int) string { return fmt.Sprintf("ACC-%0*d", g.width, i+1) }

func (g *ckbState) dedupKey(account string) []byte {
	g.txid++
	g.dkBuf = append(g.dkBuf[:0], 'd', '/')
	g.dkBuf = append(g.dkBuf, account...)
	g.dkBuf = append(g.dkBuf, 0)
	g.dkBuf = fmt.Appendf(g.dkBuf, "TX-%012d", g.txid)
	return g.dkBuf
}

func (g *ckbState) dedupVal(r *rand.Rand, t time.Time) []byte {
	var v [16]byte
	binary.BigEndian.PutUint64(v[:8], uint64(t.UnixNano()))
	binary.BigEndian.PutUint64(v[8:], r.Uint64())
	return v[:]
}

// initial is a plausible aggregate after a few hundred transactions.
func (g *ckbState) initial(r *rand.Rand) aggregate.AccountState {
	var s aggregate.AccountState
	s.Count = 1 + r.Int64N(500)
	lo := 1 + r.Int64N(5_000)
	hi := lo + r.Int64N(500_000)
	s.Min.SetFinite(lo, -2)
	s.Max.SetFinite(hi, -2)
	s.Total.SetFinite(s.Count*(lo+hi)/2, -2)
	s.First = g.now.Add(-time.Duration(r.Int64N(int64(7 * 24 * time.Hour))))
	s.Last = s.First.Add(time.Duration(r.Int64N(int64(g.now.Sub(s.First)) + 1)))
	s.LastOffset = r.Int64N(g.next + 1)
	return s
}

// apply adds one transaction to s.
func (g *ckbState) apply(r *rand.Rand, s *aggregate.AccountState, t time.Time) error {
	var amt apd.Decimal
	amt.SetFinite(1+r.Int64N(100_000), -2)
	if s.Count == 0 {
		s.Min.Set(&amt)
		s.Max.Set(&amt)
		s.First = t
	}
	if amt.Cmp(&s.Min) < 0 {
		s.Min.Set(&amt)
	}
	if amt.Cmp(&s.Max) > 0 {
		s.Max.Set(&amt)
	}
	var total apd.Decimal
	if _, err := ckbDec.Add(&total, &s.Total, &amt); err != nil {
		return err
	}
	s.Total.Set(&total)
	s.Count++
	s.Last = t
	s.LastOffset = g.next
	return nil
}

// ckbBatch is one epoch's batch.
type ckbBatch struct {
	db *pebble.DB
	b  *pebble.Batch
	n  int
}

func (e *ckbBatch) set(k, v []byte) error { return e.b.Set(k, v, nil) }

// commit writes the offset record and applies the batch as the engine does
// (pebble.NoSync).
func (e *ckbBatch) commit(next int64) error {
	var off [8]byte
	binary.BigEndian.PutUint64(off[:], uint64(next))
	if err := e.b.Set([]byte(ckbOffsetKey), off[:], nil); err != nil {
		return err
	}
	err := e.db.Apply(e.b, pebble.NoSync)
	e.b.Close()
	e.b = e.db.NewBatch()
	e.n = 0
	return err
}

// ckbBuild loads accounts in random order (no reads: every key is new),
// flushes and waits for compactions to settle, then checkpoints the result
// into dir (the base every run clones).
func ckbBuild(b *testing.B, root string, cache *pebble.Cache, accounts int, v ckbVariant) *ckbBase {
	key := fmt.Sprintf("%d/%s", accounts, v.Name)
	if x, ok := ckbBases.Load(key); ok {
		return x.(*ckbBase)
	}
	t0 := time.Now()
	build := filepath.Join(root, "build-"+strings.ReplaceAll(key, "/", "-"))
	st, err := pipeline.OpenStore(build, pipeline.StoreOptions{Cache: cache, Tune: v.tune})
	if err != nil {
		b.Fatal(err)
	}
	g := &ckbState{accounts: accounts, width: len(strconv.Itoa(accounts)), now: time.Unix(1_790_000_000, 0).UTC()}
	g.next = int64(accounts) * 3 // as if each account had seen a few records
	r := rand.New(rand.NewPCG(uint64(accounts), 1))
	db := st.DB()
	e := &ckbBatch{db: db, b: db.NewBatch()}
	for _, i := range r.Perm(accounts) {
		acct := g.account(i)
		s := g.initial(r)
		g.keyBuf = aggregate.AccountKey(g.keyBuf, acct)
		g.valBuf = s.Encode(g.valBuf[:0])
		if err := e.set(g.keyBuf, g.valBuf); err != nil {
			b.Fatal(err)
		}
		if err := e.set(g.dedupKey(acct), g.dedupVal(r, s.Last)); err != nil {
			b.Fatal(err)
		}
		g.next++
		if e.n++; e.n == ckbEpoch {
			if err := e.commit(g.next); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := e.commit(g.next); err != nil {
		b.Fatal(err)
	}
	e.b.Close()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	ckbQuiesce(b, db)
	base := &ckbBase{dir: filepath.Join(root, "base-"+strings.ReplaceAll(key, "/", "-")), next: g.next, txid: g.txid}
	if err := st.Checkpoint(base.dir); err != nil {
		b.Fatal(err)
	}
	if err := st.Remove(); err != nil {
		b.Fatal(err)
	}
	base.buildSec = time.Since(t0).Seconds()
	ckbBases.Store(key, base)
	return base
}

// ckbQuiesce waits until no flush or compaction has run for a second.
func ckbQuiesce(b *testing.B, db *pebble.DB) {
	deadline := time.Now().Add(15 * time.Minute)
	calm := 0
	for calm < 5 {
		if time.Now().After(deadline) {
			b.Fatal("compactions did not settle in 15 minutes")
		}
		m := db.Metrics()
		// (EstimatedDebt can stay above zero with nothing to pick: a
		// small L0 below the compaction threshold.)
		if m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			calm++
		} else {
			calm = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ckbClone hard-links the immutable files of a closed store and copies the
// others.
func ckbClone(src, dst string) error {
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if strings.HasSuffix(e.Name(), ".sst") || strings.HasSuffix(e.Name(), ".blob") {
			if err := os.Link(s, d); err != nil {
				return err
			}
			continue
		}
		data, err := os.ReadFile(s)
		if err != nil {
			return err
		}
		if err := os.WriteFile(d, data, 0o640); err != nil {
			return err
		}
	}
	return nil
}

// ckbDirBytes is the apparent size of the regular files under dir, each
// inode counted once.
func ckbDirBytes(dir string) int64 {
	var n int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		n += info.Size()
		return nil
	})
	return n
}

func ckbWALBytes(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
	}
	return n
}

func ckbPebbleWritten(db *pebble.DB) int64 {
	t := db.Metrics().Total()
	return int64(t.TableBytesFlushed + t.TableBytesCompacted)
}

func ckbMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ckbRun is one run of one size and variant.
func ckbRun(b *testing.B, root string, cache *pebble.Cache, accounts int, v ckbVariant, frac float64, suffix string) ckbRunResult {
	b.StopTimer()
	base := ckbBuild(b, root, cache, accounts, v)
	b.StartTimer()
	res := ckbRunResult{Accounts: accounts, Variant: v.Name + suffix, UpdatePct: frac * 100, Run: base.runs}
	base.runs++
	if !base.reported {
		res.BuildSec = base.buildSec
		base.reported = true
	}
	run, err := os.MkdirTemp(root, "run-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(run)
	live := filepath.Join(run, "live")
	if err := ckbClone(base.dir, live); err != nil {
		b.Fatal(err)
	}
	st, err := pipeline.OpenStore(live, pipeline.StoreOptions{Cache: cache, Tune: v.tune})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	db := st.DB()
	ctx := context.Background()
	nop := zap.NewNop()
	open := func(name string, mode checkpoint.Mode, grace time.Duration) *checkpoint.Store {
		s, err := checkpoint.Open(filepath.Join(run, name), checkpoint.Options{Mode: mode, Retain: ckbRetain, Grace: grace, Logger: nop})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	full := open("ck-full", checkpoint.ModeFull, -1)
	incr := open("ck-incr", checkpoint.ModeIncremental, -1)
	grace := open("ck-incr-grace", checkpoint.ModeIncremental, 0)

	g := &ckbState{accounts: accounts, width: len(strconv.Itoa(accounts)), next: base.next, txid: base.txid,
		now: time.Unix(1_790_000_000, 0).UTC()}
	var lastFull, lastIncr checkpoint.Meta
	seq := 0
	var prevSST map[string]bool
	// snapshot takes one checkpoint (the pause) and publishes it in both
	// modes, alternating which goes first.
	snapshot := func(round int) {
		seq++
		staging := filepath.Join(run, "staging", strconv.Itoa(seq))
		if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
			b.Fatal(err)
		}
		if !v.walCopy {
			// The engine flushes while processing goes on and checkpoints
			// at its next committed boundary; here nothing else runs, so
			// the flush is timed on its own, outside the pause.
			tf := time.Now()
			ch, err := st.PrepareCheckpoint(pipeline.CheckpointFlushMin)
			if err != nil {
				b.Fatal(err)
			}
			if ch != nil {
				<-ch
			}
			res.PreFlushMs = append(res.PreFlushMs, ckbMs(time.Since(tf)))
		}
		t0 := time.Now()
		if v.flushFirst {
			if err := db.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		if err := st.Checkpoint(staging); err != nil {
			b.Fatal(err)
		}
		pause := time.Since(t0)
		res.PauseMs = append(res.PauseMs, ckbMs(pause))
		if round > 0 {
			res.NewSSTByLevel = append(res.NewSSTByLevel, ckbNewByLevel(b, db, staging, prevSST))
		}
		prevSST = ckbSSTNames(staging)
		res.WALBytes = append(res.WALBytes, ckbWALBytes(staging))
		var mutable int64
		ents, _ := os.ReadDir(staging)
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".sst") && !strings.HasSuffix(e.Name(), ".blob") {
				if info, err := e.Info(); err == nil {
					mutable += info.Size()
				}
			}
		}
		pub := func(s *checkpoint.Store, m *ckbMode, last *checkpoint.Meta) {
			meta, ps, err := s.Publish(ctx, ckbTopic, 0, g.next, staging, map[string]string{"operator": aggregate.Name})
			if err != nil {
				b.Fatal(err)
			}
			*last = meta
			if round == 0 {
				m.FirstMs = ckbMs(pause + ps.Duration)
				m.FirstBytes = ps.BytesWritten
				return
			}
			m.PublishMs = append(m.PublishMs, ckbMs(ps.Duration))
			m.DurableMs = append(m.DurableMs, ckbMs(pause+ps.Duration))
			m.BytesWritten = append(m.BytesWritten, ps.BytesWritten)
			// Everything but the SSTs is copied in both modes; the
			// metadata file (a few KB) counts as mutable here.
			sst := ps.BytesWritten - mutable
			if s.Mode() == checkpoint.ModeFull {
				sst = ps.TotalBytes - mutable
			}
			m.SSTWritten = append(m.SSTWritten, max(sst, 0))
			m.SnapBytes = ps.TotalBytes
		}
		if round%2 == 0 {
			pub(full, &res.Full, &lastFull)
			pub(incr, &res.Incr, &lastIncr)
		} else {
			pub(incr, &res.Incr, &lastIncr)
			pub(full, &res.Full, &lastFull)
		}
		var dummy ckbMode
		var dm checkpoint.Meta
		pub(grace, &dummy, &dm) // not timed: directory size only
		res.WALCopyMs = append(res.WALCopyMs, ckbWALCopy(b, staging, filepath.Join(run, "walcopy")))
		if err := os.RemoveAll(staging); err != nil {
			b.Fatal(err)
		}
	}

	res.LiveStart = ckbDirBytes(live)
	snapshot(0)
	perRound := int(math.Round(float64(accounts) * frac))
	res.Updated = perRound
	for round := 1; round <= ckbRounds; round++ {
		// Every run of a size starts from the same store but updates other
		// accounts: which rounds catch a big compaction varies, and the
		// median of the runs is over different sequences.
		r := rand.New(rand.NewPCG(uint64(accounts), uint64(res.Run)<<16|uint64(round)))
		w0 := ckbPebbleWritten(db)
		t0 := time.Now()
		e := &ckbBatch{db: db, b: db.NewBatch()}
		tx := g.now.Add(time.Duration(round) * 5 * time.Second)
		for _, i := range r.Perm(accounts)[:perRound] {
			acct := g.account(i)
			g.keyBuf = aggregate.AccountKey(g.keyBuf, acct)
			var s aggregate.AccountState
			val, ok, err := st.Get(g.keyBuf)
			if err != nil || !ok {
				b.Fatalf("account %s: found=%v err=%v", acct, ok, err)
			}
			if err := s.Decode(val); err != nil {
				b.Fatal(err)
			}
			dk := g.dedupKey(acct)
			if _, seen, err := st.Get(dk); err != nil || seen {
				b.Fatalf("dedup key of %s: seen=%v err=%v", acct, seen, err)
			}
			if err := g.apply(r, &s, tx); err != nil {
				b.Fatal(err)
			}
			g.valBuf = s.Encode(g.valBuf[:0])
			if err := e.set(g.keyBuf, g.valBuf); err != nil {
				b.Fatal(err)
			}
			if err := e.set(dk, g.dedupVal(r, tx)); err != nil {
				b.Fatal(err)
			}
			g.next++
			if e.n++; e.n == ckbEpoch {
				if err := e.commit(g.next); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := e.commit(g.next); err != nil {
			b.Fatal(err)
		}
		e.b.Close()
		res.UpdateMs = append(res.UpdateMs, ckbMs(time.Since(t0)))
		snapshot(round)
		res.PebbleWritten = append(res.PebbleWritten, ckbPebbleWritten(db)-w0)
		if os.Getenv("BENCH_CHECKPOINT_DEBUG") != "" {
			fmt.Printf("round %d, %s, %d accounts: LSM after the snapshot\n%s\n", round, v.Name, accounts, db.Metrics())
		}
	}
	res.LiveEnd = ckbDirBytes(live)
	res.Full.DirBytes = ckbDirBytes(full.Dir())
	res.Incr.DirBytes = ckbDirBytes(incr.Dir())
	res.GraceDirBytes = ckbDirBytes(grace.Dir())
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	st = nil

	for _, x := range []struct {
		s    *checkpoint.Store
		m    *ckbMode
		last checkpoint.Meta
	}{{full, &res.Full, lastFull}, {incr, &res.Incr, lastIncr}} {
		ckbRestore(b, run, x.s, x.last, x.m, g.next, v)
	}

	b.ReportMetric(ckbMedian(res.PauseMs), "pause-ms")
	b.ReportMetric(slices.Max(res.PauseMs), "pause-max-ms")
	b.ReportMetric(ckbMedian(res.Full.DurableMs), "full-durable-ms")
	b.ReportMetric(ckbMedian(res.Incr.DurableMs), "incr-durable-ms")
	b.ReportMetric(ckbMeanI(res.Full.BytesWritten)/1e6, "full-MB/snap")
	b.ReportMetric(ckbMeanI(res.Incr.BytesWritten)/1e6, "incr-MB/snap")
	b.ReportMetric(ckbSumI(res.Incr.BytesWritten)/ckbSumI(res.Full.BytesWritten), "incr/full-bytes")
	b.ReportMetric(float64(res.LiveEnd)/1e6, "live-MB")
	b.ReportMetric(float64(res.Incr.DirBytes)/float64(res.LiveEnd), "incr-dir/live")
	b.ReportMetric(float64(res.Full.DirBytes)/float64(res.LiveEnd), "full-dir/live")
	b.ReportMetric(res.Full.RestoreMs, "full-restore-ms")
	b.ReportMetric(res.Incr.RestoreMs, "incr-restore-ms")
	b.ReportMetric(res.Full.RestoreMs/res.Full.CpMs, "full-restore/cp")
	b.ReportMetric(res.Incr.RestoreMs/res.Incr.CpMs, "incr-restore/cp")
	b.Logf("%d accounts (%s): live %.1f MB; pause median %.2f ms max %.2f ms; per snapshot full %.0f ms / %.1f MB, incremental %.0f ms / %.1f MB (WAL %.1f MB, Pebble wrote %.1f MB of SSTs per round); dir after %d snapshots full %.1f MB, incremental %.1f MB (%.1f MB with 10m grace); restore full %.0f ms (cp -r %.0f ms), incremental %.0f ms (cp -r %.0f ms)",
		accounts, v.Name, float64(res.LiveEnd)/1e6, ckbMedian(res.PauseMs), slices.Max(res.PauseMs),
		ckbMedian(res.Full.DurableMs), ckbMeanI(res.Full.BytesWritten)/1e6,
		ckbMedian(res.Incr.DurableMs), ckbMeanI(res.Incr.BytesWritten)/1e6,
		ckbMedianI(res.WALBytes)/1e6, ckbMeanI(res.PebbleWritten)/1e6,
		1+ckbRounds, float64(res.Full.DirBytes)/1e6, float64(res.Incr.DirBytes)/1e6, float64(res.GraceDirBytes)/1e6,
		res.Full.RestoreMs, res.Full.CpMs, res.Incr.RestoreMs, res.Incr.CpMs)
	return res
}

// ckbRestore times cp -r of the files of snapshot m (then sync of the
// copies), Store.Restore of m into a new directory, and opening the
// restored store. The snapshot was just written, so its files are in the
// page cache for both.
func ckbRestore(b *testing.B, run string, s *checkpoint.Store, m checkpoint.Meta, mr *ckbMode, wantOffset int64, v ckbVariant) {
	var files []string
	for _, f := range m.Files {
		if f.Pool != "" {
			files = append(files, filepath.Join(s.Dir(), filepath.FromSlash(f.Pool)))
		} else {
			files = append(files, filepath.Join(m.Dir, f.Name))
		}
	}
	files = append(files, filepath.Join(m.Dir, "_snapshot.json"))
	cpDst := filepath.Join(run, "cp-"+string(s.Mode()))
	if err := os.Mkdir(cpDst, 0o750); err != nil {
		b.Fatal(err)
	}
	// Nothing is deleted between the copies and restores of a run (on this
	// disk, mounted with discard, freeing a gigabyte slows the next writes).
	mr.CachedBeforeCp = ckbCached(files)
	t0 := time.Now()
	if out, err := exec.Command("cp", append(append([]string{"-r"}, files...), cpDst)...).CombinedOutput(); err != nil {
		b.Fatalf("cp -r: %v: %s", err, out)
	}
	mr.CpMs = ckbMs(time.Since(t0))
	var copies []string
	ents, _ := os.ReadDir(cpDst)
	for _, e := range ents {
		copies = append(copies, filepath.Join(cpDst, e.Name()))
	}
	if out, err := exec.Command("sync", append(copies, cpDst)...).CombinedOutput(); err != nil {
		b.Fatalf("sync: %v: %s", err, out)
	}
	mr.CpSyncMs = ckbMs(time.Since(t0))

	dst := filepath.Join(run, "restore-"+string(s.Mode()))
	mr.CachedBeforeRestore = ckbCached(files)
	t0 = time.Now()
	got, err := s.Restore(context.Background(), ckbTopic, 0, math.MaxInt64, dst)
	if err != nil {
		b.Fatal(err)
	}
	mr.RestoreMs = ckbMs(time.Since(t0))
	mr.RestoreBytes = got.Bytes()
	if got.ID != m.ID {
		b.Fatalf("restored snapshot %s, want the latest %s", got.ID, m.ID)
	}
	t0 = time.Now()
	rs, err := pipeline.OpenStore(dst, pipeline.StoreOptions{Tune: v.tune})
	if err != nil {
		b.Fatal(err)
	}
	off, err := rs.Offset()
	mr.OpenMs = ckbMs(time.Since(t0))
	if err != nil || off != wantOffset {
		b.Fatalf("restored store offset %d (%v), want %d", off, err, wantOffset)
	}
	if err := rs.Close(); err != nil {
		b.Fatal(err)
	}
}

// ckbCached is the share of the files' bytes in the page cache (fincore),
// or -1 if that cannot be told.
func ckbCached(files []string) float64 {
	out, err := exec.Command("fincore", append([]string{"--bytes", "--noheadings", "--output", "RES,SIZE"}, files...)...).Output()
	if err != nil {
		return -1
	}
	var res, size float64
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			return -1
		}
		r, err1 := strconv.ParseFloat(f[0], 64)
		z, err2 := strconv.ParseFloat(f[1], 64)
		if err1 != nil || err2 != nil {
			return -1
		}
		res, size = res+r, size+z
	}
	if size == 0 {
		return -1
	}
	return res / size
}

func ckbMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ckbMedianI(xs []int64) float64 {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return ckbMedian(f)
}

func ckbMeanI(xs []int64) float64 { return ckbSumI(xs) / float64(len(xs)) }

func ckbSumI(xs []int64) float64 {
	var s float64
	for _, x := range xs {
		s += float64(x)
	}
	return s
}

// ckbSummarise takes, for every figure, the median over the runs of the
// per-run value (itself the median over the run's update rounds; the
// pause maximum is the maximum over all runs).
func ckbSummarise(rs []ckbRunResult) ckbSummary {
	med := func(f func(r ckbRunResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return ckbMedian(xs)
	}
	const mb = 1e6
	s := ckbSummary{Accounts: rs[0].Accounts, Variant: rs[0].Variant, UpdatePct: rs[0].UpdatePct, Runs: len(rs)}
	s.LiveMB = med(func(r ckbRunResult) float64 { return float64(r.LiveEnd) / mb })
	s.PauseMedMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.PauseMs) })
	if s.PreFlushMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.PreFlushMs) }); math.IsNaN(s.PreFlushMs) {
		s.PreFlushMs = 0 // variants without the pre-flush; JSON has no NaN
	}
	for _, r := range rs {
		s.PauseMaxMs = max(s.PauseMaxMs, slices.Max(r.PauseMs))
	}
	s.WALMB = med(func(r ckbRunResult) float64 { return ckbMedianI(r.WALBytes) / mb })
	s.PebbleMB = med(func(r ckbRunResult) float64 { return ckbMeanI(r.PebbleWritten) / mb })
	s.FullDurableMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.Full.DurableMs) })
	s.IncrDurableMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.Incr.DurableMs) })
	// Bytes per snapshot: the mean over the rounds (compactions make the
	// incremental figure bursty; the mean is what the disk sees).
	s.FullMB = med(func(r ckbRunResult) float64 { return ckbMeanI(r.Full.BytesWritten) / mb })
	s.IncrMB = med(func(r ckbRunResult) float64 { return ckbMeanI(r.Incr.BytesWritten) / mb })
	s.IncrSSTMB = med(func(r ckbRunResult) float64 { return ckbMeanI(r.Incr.SSTWritten) / mb })
	s.IncrMaxMB = med(func(r ckbRunResult) float64 { return float64(slices.Max(r.Incr.BytesWritten)) / mb })
	s.WALCopyMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.WALCopyMs) })
	s.UpdateMs = med(func(r ckbRunResult) float64 { return ckbMedian(r.UpdateMs) })
	s.IncrOverFull = med(func(r ckbRunResult) float64 {
		return ckbSumI(r.Incr.BytesWritten) / ckbSumI(r.Full.BytesWritten)
	})
	s.FullFirstMs = med(func(r ckbRunResult) float64 { return r.Full.FirstMs })
	s.IncrFirstMs = med(func(r ckbRunResult) float64 { return r.Incr.FirstMs })
	s.FullDirMB = med(func(r ckbRunResult) float64 { return float64(r.Full.DirBytes) / mb })
	s.IncrDirMB = med(func(r ckbRunResult) float64 { return float64(r.Incr.DirBytes) / mb })
	s.IncrDirGrace = med(func(r ckbRunResult) float64 { return float64(r.GraceDirBytes) / mb })
	s.FullDirXLive = med(func(r ckbRunResult) float64 { return float64(r.Full.DirBytes) / float64(r.LiveEnd) })
	s.IncrDirXLive = med(func(r ckbRunResult) float64 { return float64(r.Incr.DirBytes) / float64(r.LiveEnd) })
	s.FullRestoreMs = med(func(r ckbRunResult) float64 { return r.Full.RestoreMs })
	s.IncrRestoreMs = med(func(r ckbRunResult) float64 { return r.Incr.RestoreMs })
	s.FullCpMs = med(func(r ckbRunResult) float64 { return r.Full.CpMs })
	s.IncrCpMs = med(func(r ckbRunResult) float64 { return r.Incr.CpMs })
	s.FullCpSyncMs = med(func(r ckbRunResult) float64 { return r.Full.CpSyncMs })
	s.IncrCpSyncMs = med(func(r ckbRunResult) float64 { return r.Incr.CpSyncMs })
	s.FullRestoreX = med(func(r ckbRunResult) float64 { return r.Full.RestoreMs / r.Full.CpMs })
	s.IncrRestoreX = med(func(r ckbRunResult) float64 { return r.Incr.RestoreMs / r.Incr.CpMs })
	s.FullOpenMs = med(func(r ckbRunResult) float64 { return r.Full.OpenMs })
	s.IncrOpenMs = med(func(r ckbRunResult) float64 { return r.Incr.OpenMs })
	s.RestoreMB = med(func(r ckbRunResult) float64 { return float64(r.Full.RestoreBytes) / mb })
	s.CachedMin = 1
	for _, r := range rs {
		for _, c := range []float64{r.Full.CachedBeforeCp, r.Full.CachedBeforeRestore, r.Incr.CachedBeforeCp, r.Incr.CachedBeforeRestore} {
			s.CachedMin = min(s.CachedMin, c)
		}
	}
	return s
}

func ckbCount(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1_000 && n%100 == 0:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.Itoa(n)
}

// ckbDur formats milliseconds the way the Flink tutorial prints durations.
func ckbDur(ms float64) string {
	switch {
	case ms >= 10_000:
		return fmt.Sprintf("%.1f s", ms/1000)
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 10:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

func ckbMB(mb float64) string {
	switch {
	case mb >= 1000:
		return fmt.Sprintf("%.2f GB", mb/1000)
	case mb >= 10:
		return fmt.Sprintf("%.0f MB", mb)
	}
	return fmt.Sprintf("%.1f MB", mb)
}

// ckbPrintTable prints the summary in the spirit of the Flink tutorial's
// "Checkpoint duration … / size …" lines.
func ckbPrintTable(w *os.File, sums []ckbSummary) {
	fmt.Fprintf(w, "\nCheckpoints: full vs incremental (median of runs; %g%% of accounts updated between snapshots unless the variant says @; %d snapshots, retention %d)\n",
		ckbUpdateFrac*100, 1+ckbRounds, ckbRetain)
	fmt.Fprintf(w, "%-9s %-18s %-9s %-12s %-17s %-26s %-9s %-17s %-23s %s\n",
		"accounts", "pebble", "live", "mode", "pause med/max", "checkpoint duration / size", "incr/full", "dir (x live)", "restore (cp -r, +sync)", "first snapshot")
	for _, s := range sums {
		for _, mode := range []string{"full", "incremental"} {
			dur, size, dir, x, rest, cp, cps, first := s.FullDurableMs, s.FullMB, s.FullDirMB, s.FullDirXLive, s.FullRestoreMs, s.FullCpMs, s.FullCpSyncMs, s.FullFirstMs
			ratio := ""
			if mode == "incremental" {
				dur, size, dir, x, rest, cp, cps, first = s.IncrDurableMs, s.IncrMB, s.IncrDirMB, s.IncrDirXLive, s.IncrRestoreMs, s.IncrCpMs, s.IncrCpSyncMs, s.IncrFirstMs
				ratio = fmt.Sprintf("%.1f%%", 100*s.IncrOverFull)
			}
			fmt.Fprintf(w, "%-9s %-18s %-9s %-12s %-17s %-26s %-9s %-17s %-23s %s\n",
				ckbCount(s.Accounts), s.Variant, ckbMB(s.LiveMB), mode,
				ckbDur(s.PauseMedMs)+" / "+ckbDur(s.PauseMaxMs),
				ckbDur(dur)+" / "+ckbMB(size), ratio,
				fmt.Sprintf("%s (%.2fx)", ckbMB(dir), x),
				fmt.Sprintf("%s (%s, %s)", ckbDur(rest), ckbDur(cp), ckbDur(cps)),
				ckbDur(first))
		}
	}
	fmt.Fprintln(w)
}

// ckbFile is docs/checkpoint-bench.json. A run replaces the entries of the
// sizes and variants it measured and keeps the others (so the opt-in big
// run adds its row to the default ones).
type ckbFile struct {
	Description string                  `json:"description"`
	Entries     map[string]ckbFileEntry `json:"entries"` // "<accounts>/<variant>"
	Variants    map[string]string       `json:"variants"`
}

type ckbFileEntry struct {
	Command string         `json:"command"` // as run
	Machine ckbMachine     `json:"machine"`
	Summary ckbSummary     `json:"summary"`
	Runs    []ckbRunResult `json:"runs"`
}

type ckbMachine struct {
	Date     string `json:"date"`
	Go       string `json:"go"`
	CPUs     int    `json:"cpus"`
	CPU      string `json:"cpu,omitempty"`
	LoadAvg  string `json:"loadavg,omitempty"`
	MemTotal string `json:"memtotal,omitempty"`
}

func ckbMachineInfo() ckbMachine {
	m := ckbMachine{Date: time.Now().UTC().Format(time.RFC3339), Go: runtime.Version(), CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m.MemTotal = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return m
}

func ckbWriteResults(dir string, sums []ckbSummary, runs map[string][]ckbRunResult, order []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := ckbOutName()
	path := filepath.Join(dir, name+".json")
	var f ckbFile
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &f)
	}
	if f.Entries == nil {
		f.Entries = map[string]ckbFileEntry{}
	}
	f.Description = "BenchmarkCheckpoint (test/integration/bench_checkpoint_test.go): full vs incremental snapshots; see docs/BENCHMARKS.md. Sizes in bytes unless the name says MB (1e6 bytes); times in ms."
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BENCH_CHECKPOINT_") && !strings.HasPrefix(kv, "BENCH_CHECKPOINT_DIR=") && !strings.HasPrefix(kv, "BENCH_CHECKPOINT_OUT=") {
			env = append(env, kv)
		}
	}
	sort.Strings(env)
	count := "1"
	if f := flag.Lookup("test.count"); f != nil {
		count = f.Value.String()
	}
	cmd := strings.TrimSpace(strings.Join(env, " ") + " go test -run '^$' -bench Checkpoint -benchtime 1x -count " + count + " -timeout 60m ./test/integration/")
	f.Variants = map[string]string{}
	for _, v := range ckbVariants {
		f.Variants[v.Name] = v.Desc
	}
	mach := ckbMachineInfo()
	for i, k := range order {
		f.Entries[k] = ckbFileEntry{Command: cmd, Machine: mach, Summary: sums[i], Runs: runs[k]}
	}
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	all := make([]ckbSummary, 0, len(f.Entries))
	for _, e := range f.Entries {
		all = append(all, e.Summary)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Variant != all[j].Variant {
			return ckbVariantIndex(all[i].Variant) < ckbVariantIndex(all[j].Variant)
		}
		return all[i].Accounts < all[j].Accounts
	})
	if err := os.WriteFile(filepath.Join(dir, name+".csv"), ckbCSV(all), 0o644); err != nil {
		return err
	}
	var prod []ckbSummary
	for _, s := range all {
		if s.Variant == "production" {
			prod = append(prod, s)
		}
	}
	if len(prod) == 0 || name != "checkpoint-bench" {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "checkpoint-bench.svg"), ckbSVG(prod), 0o644)
}

func ckbVariantIndex(name string) int {
	i := slices.IndexFunc(ckbVariants, func(v ckbVariant) bool { return v.Name == name })
	if i < 0 {
		return len(ckbVariants)
	}
	return i
}

func ckbCSV(sums []ckbSummary) []byte {
	var sb strings.Builder
	sb.WriteString("accounts,variant,mode,runs,live_mb,pause_median_ms,pause_max_ms,durable_ms,mb_written_per_snapshot,incr_over_full,dir_mb,dir_over_live,restore_ms,cp_ms,cp_sync_ms,restore_over_cp,open_ms,first_snapshot_ms,wal_mb_per_snapshot,pebble_sst_mb_per_round\n")
	for _, s := range sums {
		fmt.Fprintf(&sb, "%d,%s,full,%d,%.3f,%.3f,%.3f,%.1f,%.3f,,%.3f,%.3f,%.1f,%.1f,%.1f,%.3f,%.1f,%.1f,%.3f,%.3f\n",
			s.Accounts, s.Variant, s.Runs, s.LiveMB, s.PauseMedMs, s.PauseMaxMs, s.FullDurableMs, s.FullMB,
			s.FullDirMB, s.FullDirXLive, s.FullRestoreMs, s.FullCpMs, s.FullCpSyncMs, s.FullRestoreX, s.FullOpenMs, s.FullFirstMs, s.WALMB, s.PebbleMB)
		fmt.Fprintf(&sb, "%d,%s,incremental,%d,%.3f,%.3f,%.3f,%.1f,%.3f,%.4f,%.3f,%.3f,%.1f,%.1f,%.1f,%.3f,%.1f,%.1f,%.3f,%.3f\n",
			s.Accounts, s.Variant, s.Runs, s.LiveMB, s.PauseMedMs, s.PauseMaxMs, s.IncrDurableMs, s.IncrMB, s.IncrOverFull,
			s.IncrDirMB, s.IncrDirXLive, s.IncrRestoreMs, s.IncrCpMs, s.IncrCpSyncMs, s.IncrRestoreX, s.IncrOpenMs, s.IncrFirstMs, s.WALMB, s.PebbleMB)
	}
	return []byte(sb.String())
}

// ckbSVG draws two log-log panels: time per snapshot (durable, pause) and
// bytes per snapshot (written, live store) against the number of accounts.
func ckbSVG(sums []ckbSummary) []byte {
	type series struct {
		name, color, dash string
		y                 func(s ckbSummary) float64
	}
	type panel struct {
		title, unit string
		series      []series
	}
	panels := []panel{
		{"Time per snapshot", "ms", []series{
			{"full: until durable", "#d62728", "", func(s ckbSummary) float64 { return s.FullDurableMs }},
			{"incremental: until durable", "#1f77b4", "", func(s ckbSummary) float64 { return s.IncrDurableMs }},
			{"processing pause (max)", "#2ca02c", "6,4", func(s ckbSummary) float64 { return s.PauseMaxMs }},
			{"restore, full", "#ff7f0e", "2,3", func(s ckbSummary) float64 { return s.FullRestoreMs }},
		}},
		{"Bytes written per snapshot", "MB", []series{
			{"full", "#d62728", "", func(s ckbSummary) float64 { return s.FullMB }},
			{"incremental", "#1f77b4", "", func(s ckbSummary) float64 { return s.IncrMB }},
			{"live store", "#7f7f7f", "6,4", func(s ckbSummary) float64 { return s.LiveMB }},
			{"incremental dir, retain 3", "#9467bd", "2,3", func(s ckbSummary) float64 { return s.IncrDirMB }},
			{"20% of full (target for incremental)", "#1f77b4", "1,4", func(s ckbSummary) float64 { return s.FullMB / 5 }},
		}},
	}
	const (
		pw, ph           = 430.0, 300.0 // plot area
		ml, mr, mt, mbot = 70.0, 20.0, 50.0, 150.0
		W                = 2*(ml+pw+mr) + 10
		H                = mt + ph + mbot
	)
	xs := make([]float64, len(sums))
	for i, s := range sums {
		xs[i] = math.Log10(float64(s.Accounts))
	}
	x0, x1 := math.Floor(slices.Min(xs)), math.Ceil(slices.Max(xs))
	if x1 == x0 {
		x1++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="%.0f" y="20" font-size="15" text-anchor="middle">Checkpoints: full vs incremental, %.0f%% of accounts updated between snapshots (BenchmarkCheckpoint, medians)</text>`+"\n", W/2, ckbUpdateFrac*100)
	for pi, p := range panels {
		ox := float64(pi)*(ml+pw+mr+10) + ml
		var ys []float64
		for _, se := range p.series {
			for _, s := range sums {
				if v := se.y(s); v > 0 {
					ys = append(ys, math.Log10(v))
				}
			}
		}
		y0, y1 := math.Floor(slices.Min(ys)), math.Ceil(slices.Max(ys))
		if y1 == y0 {
			y1++
		}
		px := func(x float64) float64 { return ox + (x-x0)/(x1-x0)*pw }
		py := func(y float64) float64 { return mt + ph - (y-y0)/(y1-y0)*ph }
		fmt.Fprintf(&sb, `<text x="%.1f" y="40" font-size="13" text-anchor="middle" font-weight="bold">%s (%s, log scale)</text>`+"\n", ox+pw/2, p.title, p.unit)
		fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", ox, mt, pw, ph)
		for e := x0; e <= x1; e++ {
			x := px(e)
			fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, mt, x, mt+ph)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, mt+ph+16, ckbCount(int(math.Round(math.Pow(10, e)))))
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="middle">accounts in the partition's state</text>`+"\n", ox+pw/2, mt+ph+34)
		for e := y0; e <= y1; e++ {
			y := py(e)
			fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", ox, y, ox+pw, y)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", ox-6, y+4, strconv.FormatFloat(math.Pow(10, e), 'g', -1, 64))
		}
		if p.unit == "ms" && y0 <= math.Log10(50) && math.Log10(50) <= y1 {
			y := py(math.Log10(50))
			fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#2ca02c" stroke-opacity="0.5"/>`+"\n", ox, y, ox+pw, y)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f" fill="#2ca02c" text-anchor="end">pause target 50 ms</text>`+"\n", ox+pw-4, y-4)
		}
		for si, se := range p.series {
			var pts []string
			for i, s := range sums {
				if v := se.y(s); v > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[i]), py(math.Log10(v))))
				}
			}
			dash := ""
			if se.dash != "" {
				dash = fmt.Sprintf(` stroke-dasharray="%s"`, se.dash)
			}
			fmt.Fprintf(&sb, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), se.color, dash)
			for _, pt := range pts {
				x, y, _ := strings.Cut(pt, ",")
				fmt.Fprintf(&sb, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, se.color)
			}
			ly := mt + ph + 58 + float64(si)*18
			fmt.Fprintf(&sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", ox, ly-4, ox+30, ly-4, se.color, dash)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%.1f">%s</text>`+"\n", ox+38, ly, se.name)
		}
	}
	sb.WriteString("</svg>\n")
	return []byte(sb.String())
}

func ckbSSTNames(dir string) map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			m[e.Name()] = true
		}
	}
	return m
}

// ckbNewByLevel sums the sizes of the SSTs of checkpoint dir that prev
// lacks, by their current level in db.
func ckbNewByLevel(b *testing.B, db *pebble.DB, dir string, prev map[string]bool) [8]int64 {
	levels, err := db.SSTables()
	if err != nil {
		b.Fatal(err)
	}
	level := map[string]int{}
	for l, ts := range levels {
		for _, t := range ts {
			level[fmt.Sprintf("%06d.sst", uint64(t.FileNum))] = l
		}
	}
	var out [8]int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sst") || prev[e.Name()] {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		l, ok := level[e.Name()]
		if !ok {
			l = 7
		}
		out[l] += info.Size()
	}
	return out
}

// ckbWALCopy copies the checkpoint's WAL files to dir with an fsync each,
// as both publish modes do, and returns how long that took: what copying
// the WAL costs every snapshot.
func ckbWALCopy(b *testing.B, staging, dir string) float64 {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ents, _ := os.ReadDir(staging)
	t0 := time.Now()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(staging, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	return ckbMs(time.Since(t0))
}
