package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any)           {}
func (quietPebbleLogger) Errorf(string, ...any)          {}
func (quietPebbleLogger) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

func pebbleOpts() *pebble.Options {
	return &pebble.Options{
		// Deterministic file layout: one SST per flush, no compaction
		// rewriting files between two snapshots.
		DisableAutomaticCompactions: true,
		Logger:                      quietPebbleLogger{},
	}
}

func openDB(t testing.TB, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, pebbleOpts())
	if err != nil {
		t.Fatalf("pebble open %s: %v", dir, err)
	}
	return db
}

func key(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }

// value is deterministic in (gen, i) and incompressible enough that SST
// sizes track the amount of data.
func value(gen string, i, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), uint64(len(gen))*7919+uint64(gen[0])))
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(r.UintN(256))
	}
	return append([]byte(gen+":"), b...)
}

// put writes keys [from, to) with generation gen and flushes them to an SST.
func put(t testing.TB, db *pebble.DB, from, to int, gen string, size int) {
	t.Helper()
	putNoFlush(t, db, from, to, gen, size)
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
}

// putNoFlush writes keys that stay in the memtable/WAL only.
func putNoFlush(t testing.TB, db *pebble.DB, from, to int, gen string, size int) {
	t.Helper()
	b := db.NewBatch()
	for i := from; i < to; i++ {
		if err := b.Set(key(i), value(gen, i, size), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// stage takes a pebble checkpoint of db into a fresh staging dir, as the
// consumer does before Publish.
func stage(t testing.TB, db *pebble.DB, parent string) string {
	t.Helper()
	dir := filepath.Join(parent, fmt.Sprintf("stage-%d", time.Now().UnixNano()))
	if err := db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		t.Fatalf("pebble checkpoint: %v", err)
	}
	return dir
}

// expect describes the key ranges a restored store must hold.
type expect struct {
	from, to int
	gen      string
	size     int
}

// checkDB opens the store in dir and checks every expected key and that
// key(absent) is missing.
func checkDB(t testing.TB, dir string, absent int, exps ...expect) {
	t.Helper()
	db := openDB(t, dir)
	defer db.Close()
	for _, e := range exps {
		for i := e.from; i < e.to; i++ {
			v, c, err := db.Get(key(i))
			if err != nil {
				t.Fatalf("restored %s: get %s: %v", dir, key(i), err)
			}
			if !bytes.Equal(v, value(e.gen, i, e.size)) {
				c.Close()
				t.Fatalf("restored %s: key %s has the wrong value (want generation %s)", dir, key(i), e.gen)
			}
			c.Close()
		}
	}
	if absent >= 0 {
		if _, _, err := db.Get(key(absent)); err != pebble.ErrNotFound {
			t.Fatalf("restored %s: key %s should be absent, got err=%v", dir, key(absent), err)
		}
	}
}

func newStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

func publish(t testing.TB, s *Store, tp TopicPartition, offset int64, src string) (Meta, PublishStats) {
	t.Helper()
	m, st, err := s.Publish(context.Background(), tp.Topic, tp.Partition, offset, src, map[string]string{"operator": "test/v1"})
	if err != nil {
		t.Fatalf("Publish offset %d: %v", offset, err)
	}
	return m, st
}

// warnings returns the warn-level messages with their string fields.
func warnings(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		var sb strings.Builder
		sb.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			fmt.Fprintf(&sb, " %s=%v", k, v)
		}
		out = append(out, sb.String())
	}
	return out
}

func backdate(t testing.TB, path string, age time.Duration) {
	t.Helper()
	old := time.Now().Add(-age)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func poolFiles(t testing.TB, s *Store, tp TopicPartition) []string {
	t.Helper()
	ents, err := readVisible(s.poolDir(tp))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// fileOnlyIn returns an SST of newer that older does not have.
func fileOnlyIn(t testing.TB, newer, older Meta) FileInfo {
	t.Helper()
	have := map[string]bool{}
	for _, f := range older.Files {
		have[f.Name+f.Pool] = true
	}
	for _, f := range newer.Files {
		if strings.HasSuffix(f.Name, ".sst") && !have[f.Name+f.Pool] {
			return f
		}
	}
	t.Fatalf("snapshot %s has no SST that %s lacks", newer.ID, older.ID)
	return FileInfo{}
}
