package integration

// BenchmarkCheckpointChangelog: full vs incremental vs changelog
// snapshots of one partition store over a whole base cycle. See
// docs/BENCHMARKS.md, "Checkpoints: changelog mode, on a directory and on S3".

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/test/s3test"
)

// ckcBaseEveryFor is the changelog mode's base cadence in this benchmark:
// the consumer's default (--changelog-base-every), or
// BENCH_CHANGELOG_BASE_EVERY. Rounds 1..N-1 write segments, round N a
// base, so a run covers one whole base cycle.
// ckcRestores is how many times each mode's recovery point is restored.
const ckcRestores = 5

func ckcBaseEveryFor(b *testing.B) int {
	v := os.Getenv("BENCH_CHANGELOG_BASE_EVERY")
	if v == "" {
		return pipeline.DefaultChangelogBaseEvery
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		b.Fatalf("BENCH_CHANGELOG_BASE_EVERY=%q: want a count of at least 2", v)
	}
	return n
}

// BenchmarkCheckpointChangelog drives the three modes side by side on
// identical input, like BenchmarkCheckpoint: a store of N accounts (the
// same build), a first snapshot, then ckcBaseEvery rounds in which 10% of
// the accounts receive one transaction each (epoch batches of 10k, as the
// engine applies them) followed by a snapshot in every mode from the same
// Pebble checkpoint. Changelog mode records each epoch's puts (the
// aggregate and the dedup entry of each transaction) as the engine does
// and appends them as one segment per round; its base is written at
// round 0 and at round ckcBaseEvery, or earlier if the log since the base
// passes pipeline.DefaultChangelogMaxRatio of the store (the engine's
// rule). Retention is 3 everywhere (bases in changelog mode), no GC grace.
//
// Reported per mode: bytes written per snapshot over rounds
// 1..ckcBaseEvery (the base included: the amortised cost), time until
// durable, directory size at the end, and the restore of the newest
// recovery point just before the closing base (changelog: the base plus
// ckcBaseEvery-1 segments, the longest chain; the others: the latest
// snapshot), including opening the store.
//
//	BENCH_CHECKPOINT_SIZES=1M go test -run '^$' -bench CheckpointChangelog -benchtime 1x ./test/integration/
func BenchmarkCheckpointChangelog(b *testing.B) {
	root := os.Getenv("BENCH_CHECKPOINT_DIR")
	if root == "" {
		root = b.TempDir()
	} else {
		var err error
		if root, err = os.MkdirTemp(root, "ckc-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(root)
	}
	frac := ckbUpdateFrac
	if v := os.Getenv("BENCH_CHECKPOINT_UPDATE"); v != "" {
		p, err := strconv.ParseFloat(v, 64)
		if err != nil || p <= 0 || p > 100 {
			b.Fatalf("BENCH_CHECKPOINT_UPDATE=%q: want a percentage", v)
		}
		frac = p / 100
	}
	storages := ckcStorages(b)
	ckcBaseEvery := ckcBaseEveryFor(b)
	for _, size := range ckbSizes(b) {
		b.Run(size.label, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				ckcRun(b, root, size.accounts, frac, storages, ckcBaseEvery)
			}
		})
	}
}

// ckcStorages is the checkpoint storages BENCH_CHECKPOINT_STORAGE asks for
// (dir, s3 or both, comma-separated; dir when unset). s3 is a versitygw
// on loopback with its POSIX back end on the same disk (test/s3test).
func ckcStorages(b *testing.B) []string {
	env := os.Getenv("BENCH_CHECKPOINT_STORAGE")
	if env == "" {
		return []string{"dir"}
	}
	var out []string
	for _, k := range strings.Split(env, ",") {
		switch k = strings.TrimSpace(k); k {
		case "dir", "s3":
			out = append(out, k)
		default:
			b.Fatalf("BENCH_CHECKPOINT_STORAGE=%q: want dir, s3 or both, comma-separated", env)
		}
	}
	return out
}

// ckcOpen opens one mode's checkpoint storage of a run and returns it
// with the local directory whose size is the storage's size.
func ckcOpen(b *testing.B, run, storage, name string, mode checkpoint.Mode, srv *s3test.Server) (checkpoint.Storage, string) {
	opts := checkpoint.Options{Mode: mode, Retain: ckbRetain, Grace: -1, Logger: zap.NewNop()}
	if storage == "dir" {
		s, err := checkpoint.Open(filepath.Join(run, name), opts)
		if err != nil {
			b.Fatal(err)
		}
		return s, s.Dir()
	}
	prefix := filepath.Base(run) + "/" + name
	s, err := checkpoint.OpenStorage(context.Background(), srv.Location(prefix), opts,
		checkpoint.S3Config{Endpoint: "http://" + srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	// The POSIX back end keeps each object as a file under root/<bucket>/.
	return s, filepath.Join(srv.Dir, "root", srv.Bucket, filepath.FromSlash(prefix))
}

type ckcMode struct {
	name      string
	storage   string
	pauseMs   []float64
	bytes     []int64 // per round 1..N
	durableMs []float64
	dir       int64
	dirs      []int64   // after each round
	restoreMs float64   // median of restores
	restores  []float64 // each restore, ms
	parts     []string  // each restore: files+open+segments, ms
	segments  int       // changelog: segments the restore applied
	last      checkpoint.Meta
}

func ckcRun(b *testing.B, root string, accounts int, frac float64, storages []string, ckcBaseEvery int) {
	b.StopTimer()
	v := ckbVariant{Name: "production"}
	base := ckbBuild(b, root, nil, accounts, v)
	b.StartTimer()
	run, err := os.MkdirTemp(root, "run-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(run)
	live := filepath.Join(run, "live")
	if err := ckbClone(base.dir, live); err != nil {
		b.Fatal(err)
	}
	st, err := pipeline.OpenStore(live, pipeline.StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { st.Close() }()
	db := st.DB()
	ctx := context.Background()
	var srv *s3test.Server
	var (
		stores []checkpoint.Storage
		dirs   []string
		modes  []*ckcMode
	)
	for _, storage := range storages {
		if storage == "s3" && srv == nil {
			srv = s3test.Start(b)
		}
		for _, m := range []checkpoint.Mode{checkpoint.ModeFull, checkpoint.ModeIncremental, checkpoint.ModeChangelog} {
			s, d := ckcOpen(b, run, storage, "ck-"+string(m), m, srv)
			stores, dirs = append(stores, s), append(dirs, d)
			modes = append(modes, &ckcMode{name: string(m), storage: storage})
		}
	}
	g := &ckbState{accounts: accounts, width: len(strconv.Itoa(accounts)), next: base.next, txid: base.txid,
		now: time.Unix(1_790_000_000, 0).UTC()}
	job := map[string]string{"operator": aggregate.Name}

	// The changelog mode's chain on each storage, as the engine keeps it.
	type chain struct {
		base      checkpoint.Meta
		seq       int64
		chainLast int64
		logBytes  int64
	}
	chains := make([]chain, len(storages))
	var cur checkpoint.ChangeBuffer
	seqN := 0
	checkpointNow := func() (string, time.Duration) {
		seqN++
		staging := filepath.Join(run, "staging", strconv.Itoa(seqN))
		if err := os.MkdirAll(filepath.Dir(staging), 0o750); err != nil {
			b.Fatal(err)
		}
		if ch, err := st.PrepareCheckpoint(pipeline.CheckpointFlushMin); err != nil {
			b.Fatal(err)
		} else if ch != nil {
			<-ch
		}
		t0 := time.Now()
		if err := st.Checkpoint(staging); err != nil {
			b.Fatal(err)
		}
		return staging, time.Since(t0)
	}
	// snapshot publishes round's recovery point in every mode on every
	// storage. The pause is the Pebble checkpoint into local staging, as
	// in the engine; everything after it runs off the processing path.
	snapshot := func(round int) {
		// Every storage's chain has the same segments, so one decision.
		c0 := chains[0]
		needBase := round == 0 || c0.seq+1 >= int64(ckcBaseEvery) ||
			float64(c0.logBytes+int64(cur.Len())) > pipeline.DefaultChangelogMaxRatio*float64(st.Size())
		staging, pause := checkpointNow()
		for k := range storages {
			for j := 0; j < 2; j++ {
				i := 3*k + j
				m, ps, err := stores[i].PublishFrom(ctx, checkpoint.Source{Topic: ckbTopic}, g.next, staging, job)
				if err != nil {
					b.Fatal(err)
				}
				modes[i].last = m
				if round > 0 {
					modes[i].bytes = append(modes[i].bytes, ps.BytesWritten)
					modes[i].pauseMs = append(modes[i].pauseMs, ckbMs(pause))
					modes[i].durableMs = append(modes[i].durableMs, ckbMs(pause+ps.Duration))
				}
			}
			i := 3*k + 2
			cm, c := modes[i], &chains[k]
			t0 := time.Now()
			var written int64
			if needBase {
				m, ps, err := stores[i].PublishFrom(ctx, checkpoint.Source{Topic: ckbTopic}, g.next, staging, job)
				if err != nil {
					b.Fatal(err)
				}
				c.base, c.seq, c.chainLast, c.logBytes = m, 0, m.Offset, 0
				written = ps.BytesWritten
				cm.last = m
			} else {
				// No Pebble checkpoint and no pause in this mode: the
				// publisher builds the segment's table and writes it.
				data, gs, err := pipeline.EncodeSegment(st, checkpoint.Segment{Topic: ckbTopic, Partition: 0, Base: c.base.ID, Seq: c.seq + 1, First: c.chainLast}, &cur)
				if err != nil {
					b.Fatal(err)
				}
				gs, err = stores[i].AppendSegment(ctx, data)
				if err != nil {
					b.Fatal(err)
				}
				c.seq, c.chainLast = gs.Seq, gs.Last
				c.logBytes += gs.BodyBytes
				written = gs.Size
			}
			if round > 0 {
				cm.bytes = append(cm.bytes, written)
				d := time.Since(t0)
				if needBase {
					d += pause
					cm.pauseMs = append(cm.pauseMs, ckbMs(pause))
				} else {
					cm.pauseMs = append(cm.pauseMs, 0)
				}
				cm.durableMs = append(cm.durableMs, ckbMs(d))
			}
		}
		cur.Reset()
		if err := os.RemoveAll(staging); err != nil {
			b.Fatal(err)
		}
	}
	var finishRestore func(i int, rs *pipeline.Store, reached int64, dst string)
	restore := func(i int, s checkpoint.Storage) {
		dst := filepath.Join(run, "restore-"+modes[i].storage+"-"+modes[i].name)
		want := checkpoint.Want{Topic: ckbTopic, MaxOffset: math.MaxInt64}
		t0 := time.Now()
		if s.Mode() == checkpoint.ModeChangelog {
			// As the engine restores: the segments are fetched while the
			// base is, so the time has no parts.
			rs, _, n, reached, err := pipeline.Restore(ctx, s, want, dst, pipeline.StoreOptions{}, math.MaxInt64)
			if err != nil {
				b.Fatal(err)
			}
			modes[i].segments = n
			took := ckbMs(time.Since(t0))
			modes[i].restores = append(modes[i].restores, took)
			modes[i].parts = append(modes[i].parts, fmt.Sprintf("%.0f", took))
			finishRestore(i, rs, reached, dst)
			return
		}
		m, err := s.RestoreFrom(ctx, want, dst)
		if err != nil {
			b.Fatal(err)
		}
		tr := time.Since(t0)
		rs, err := pipeline.OpenStore(dst, pipeline.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		took := ckbMs(time.Since(t0))
		modes[i].restores = append(modes[i].restores, took)
		modes[i].parts = append(modes[i].parts, fmt.Sprintf("%.0f+%.0f", ckbMs(tr), took-ckbMs(tr)))
		finishRestore(i, rs, m.Offset, dst)
	}
	finishRestore = func(i int, rs *pipeline.Store, reached int64, dst string) {
		if off, err := rs.Offset(); err != nil || off != g.next || reached != g.next {
			b.Fatalf("%s %s restore reached %d (store says %d, %v), want %d", modes[i].storage, modes[i].name, reached, off, err, g.next)
		}
		if err := rs.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
	}

	snapshot(0)
	perRound := int(math.Round(float64(accounts) * frac))
	for round := 1; round <= ckcBaseEvery; round++ {
		r := rand.New(rand.NewPCG(uint64(accounts), uint64(round)))
		e := &ckbBatch{db: db, b: db.NewBatch()}
		tx := g.now.Add(time.Duration(round) * 5 * time.Second)
		commit := func() {
			if err := e.commit(g.next); err != nil {
				b.Fatal(err)
			}
			cur.EndEpoch(g.next)
		}
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
			if err := g.apply(r, &s, tx); err != nil {
				b.Fatal(err)
			}
			g.valBuf = s.Encode(g.valBuf[:0])
			dv := g.dedupVal(r, tx)
			if err := e.set(g.keyBuf, g.valBuf); err != nil {
				b.Fatal(err)
			}
			if err := e.set(dk, dv); err != nil {
				b.Fatal(err)
			}
			cur.Set(g.keyBuf, g.valBuf)
			cur.Set(dk, dv)
			g.next++
			if e.n++; e.n == ckbEpoch {
				commit()
			}
		}
		commit()
		e.b.Close()
		if round == ckcBaseEvery {
			// The longest chain (base + ckcBaseEvery-1 segments) and the
			// others' latest snapshots, restored before the closing base.
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			next := g.next
			g.next = modes[0].last.Offset
			// Each mode's restore ckcRestores times, the modes
			// interleaved, so that a burst of load on the shared machine
			// hits them alike; the median is reported.
			for r := 0; r < ckcRestores; r++ {
				for i, s := range stores {
					restore(i, s)
				}
			}
			for _, m := range modes {
				m.restoreMs = ckbMedian(m.restores)
			}
			g.next = next
			if st, err = pipeline.OpenStore(live, pipeline.StoreOptions{}); err != nil {
				b.Fatal(err)
			}
			db = st.DB()
		}
		snapshot(round)
		for i := range modes {
			modes[i].dirs = append(modes[i].dirs, ckbDirBytes(dirs[i]))
		}
	}
	for i := range stores {
		modes[i].dir = ckbDirBytes(dirs[i])
	}
	liveMB := float64(ckbDirBytes(live)) / 1e6
	fullMB := ckbMeanI(modes[0].bytes) / 1e6
	for _, m := range modes {
		mb := ckbMeanI(m.bytes) / 1e6
		name := m.storage + "-" + m.name
		b.ReportMetric(mb, name+"-MB/snap")
		b.ReportMetric(float64(m.dir)/1e6, name+"-dir-MB")
		b.ReportMetric(m.restoreMs, name+"-restore-ms")
		b.ReportMetric(ckbMedian(m.pauseMs), name+"-pause-ms")
		b.ReportMetric(ckbMeanI(m.dirs)/1e6, name+"-dir-mean-MB")
		b.Logf("%d accounts, live %.1f MB, %s %s: %.2f MB written per snapshot (%.1f%% of full; per round %s MB), pause median %.1f ms max %.1f ms, durable median %.0f ms, dir %.1f MB at the end, mean %.1f MB max %.1f MB over the rounds (%.0f%% / %.0f%% of full's; retention %d; per round %s MB), restore median %.0f ms (%d segments applied; each restore ms, files+open where not overlapped: %s)",
			accounts, liveMB, m.storage, m.name, mb, 100*mb/fullMB, fmtMB(m.bytes), ckbMedian(m.pauseMs), slices.Max(m.pauseMs), ckbMedian(m.durableMs),
			float64(m.dir)/1e6, ckbMeanI(m.dirs)/1e6, float64(slices.Max(m.dirs))/1e6, 100*ckbMeanI(m.dirs)/ckbMeanI(modes[0].dirs), 100*float64(slices.Max(m.dirs))/float64(slices.Max(modes[0].dirs)),
			ckbRetain, fmtMB(m.dirs), m.restoreMs, m.segments, strings.Join(m.parts, " "))
	}
}

func fmtMB(xs []int64) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.1f", float64(x)/1e6)
	}
	return s
}
