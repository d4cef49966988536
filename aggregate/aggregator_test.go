package aggregate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/txcsv"
)

// memState is an in-memory State for operator tests.
type memState map[string][]byte

func (m memState) Get(k []byte) ([]byte, bool, error) { v, ok := m[string(k)]; return v, ok, nil }
func (m memState) Set(k, v []byte) error              { m[string(k)] = append([]byte(nil), v...); return nil }
func (m memState) Delete(k []byte) error              { delete(m, string(k)); return nil }

type captured struct {
	out  [][2]string // key, value
	dlq  []string    // reasons
	dups int
}

func (c *captured) Emit(k, v []byte)            { c.out = append(c.out, [2]string{string(k), string(v)}) }
func (c *captured) DeadLetter(reason, _ string) { c.dlq = append(c.dlq, reason) }
func (c *captured) Skipped(string)              { c.dups++ }

var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func rec(off int64, value string, headers ...kgo.RecordHeader) *pipeline.Record {
	return &pipeline.Record{Topic: "in", Partition: 0, Offset: off, Value: []byte(value), Headers: headers, Timestamp: t0}
}

func run(t *testing.T, a *Aggregator, st pipeline.State, values ...string) *captured {
	t.Helper()
	c := &captured{}
	for i, v := range values {
		if err := a.Process(rec(int64(i), v), st, c); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	return c
}

type outRow struct {
	TransactionID string `json:"transaction_id"`
	AccountID     string `json:"account_id"`
	Amount        string `json:"amount"`
	Timestamp     string `json:"timestamp"`
	Count         int64  `json:"account_count"`
	Total         string `json:"account_total"`
	Min           string `json:"account_min"`
	Max           string `json:"account_max"`
}

func decodeOut(t *testing.T, v string) outRow {
	t.Helper()
	var o outRow
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var raw map[string]any
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		t.Fatalf("output is not JSON: %v: %s", err, v)
	}
	if err := json.Unmarshal([]byte(v), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestAggregatorExactDecimals(t *testing.T) {
	a := New(Config{})
	c := run(t, a, memState{},
		"t1,A,0.10,2024-05-01T10:00:00Z",
		"t2,A,0.20,2024-05-01T10:00:01Z",
		"t3,A,-0.05,2024-05-01T10:00:02Z",
		"t4,B,1e3,2024-05-01T10:00:03Z", // not a plain decimal: DLQ
	)
	if len(c.out) != 3 || len(c.dlq) != 1 || c.dlq[0] != string(txcsv.ReasonInvalidAmount) {
		t.Fatalf("out=%d dlq=%v", len(c.out), c.dlq)
	}
	last := decodeOut(t, c.out[2][1])
	if last.Total != "0.25" || last.Count != 3 || last.Min != "-0.05" || last.Max != "0.20" {
		t.Fatalf("got %+v, want total 0.25 (exact, no float error), count 3, min -0.05, max 0.20", last)
	}
	if c.out[2][0] != "A" {
		t.Fatalf("output key %q, want the account", c.out[2][0])
	}
}

func TestAggregatorDedup(t *testing.T) {
	a := New(Config{DedupWindow: time.Hour})
	st := memState{}
	c := run(t, a, st,
		"t1,A,5.00,2024-05-01T10:00:00Z",
		"t1,A,5.00,2024-05-01T10:00:00Z", // exact repeat: skipped
		"t1,A,6.00,2024-05-01T10:00:00Z", // same id, other content: conflicting
		"t1,A,5.00,2024-05-01T12:00:00Z", // outside the record-time window: a new transaction
	)
	if c.dups != 1 {
		t.Fatalf("duplicates %d, want 1", c.dups)
	}
	if len(c.dlq) != 1 || c.dlq[0] != string(txcsv.ReasonConflictingDuplicate) {
		t.Fatalf("dlq %v, want one conflicting_duplicate", c.dlq)
	}
	if len(c.out) != 2 {
		t.Fatalf("outputs %d, want 2", len(c.out))
	}
	if got := decodeOut(t, c.out[1][1]); got.Count != 2 || got.Total != "10.00" {
		t.Fatalf("got %+v", got)
	}
}

func TestAggregatorColumnsHeaderAndDefaults(t *testing.T) {
	a := New(Config{})
	st := memState{}
	h := kgo.RecordHeader{Key: txcsv.HeaderColumns, Value: []byte("amount,timestamp,note,account_id,transaction_id")}
	c := &captured{}
	// Producer-style record with a header naming another column order.
	if err := a.Process(rec(0, "7.50,2024-05-01T10:00:00Z,hello,A,t1", h), st, c); err != nil {
		t.Fatal(err)
	}
	// kcat-style bare line in the default order.
	if err := a.Process(rec(1, "t2,A,2.50,2024-05-01T10:00:01Z"), st, c); err != nil {
		t.Fatal(err)
	}
	// Minimal shape: no account, key falls back to the transaction id.
	h2 := kgo.RecordHeader{Key: txcsv.HeaderColumns, Value: []byte("transaction_id,amount")}
	if err := a.Process(rec(2, "t3,1.00", h2), st, c); err != nil {
		t.Fatal(err)
	}
	// A header without the required columns goes to the DLQ.
	h3 := kgo.RecordHeader{Key: txcsv.HeaderColumns, Value: []byte("id,value")}
	if err := a.Process(rec(3, "x,1", h3), st, c); err != nil {
		t.Fatal(err)
	}
	if len(c.out) != 3 || len(c.dlq) != 1 || c.dlq[0] != string(txcsv.ReasonBadHeader) {
		t.Fatalf("out=%d dlq=%v", len(c.out), c.dlq)
	}
	if got := decodeOut(t, c.out[1][1]); got.Total != "10.00" || got.Count != 2 {
		t.Fatalf("got %+v", got)
	}
	if got := decodeOut(t, c.out[2][1]); got.AccountID != "t3" || got.Timestamp == "" {
		t.Fatalf("minimal shape: got %+v", got)
	}
}

// Each record is parsed with its own header's schema however headers
// alternate, after the bounded map of schemas was emptied, and when the
// header's bytes are reused for another header (the schemas are keyed by
// copies, never by a record's bytes).
func TestAggregatorSchemaPerRecordHeader(t *testing.T) {
	a := New(Config{})
	st := memState{}
	c := &captured{}
	good := []byte("transaction_id,amount,account_id")
	bad := []byte("transaction_id,account_id,amount") // same length; "ACC" becomes the amount
	buf := make([]byte, len(good))
	off, outs, dlqs := int64(0), 0, 0
	send := func(header []byte, wantOut bool) {
		t.Helper()
		copy(buf, header) // one backing array for every header, as a reused fetch buffer
		if err := a.Process(rec(off, fmt.Sprintf("t%d,5.00,ACC", off), kgo.RecordHeader{Key: txcsv.HeaderColumns, Value: buf}), st, c); err != nil {
			t.Fatal(err)
		}
		off++
		if wantOut {
			outs++
		} else {
			dlqs++
		}
		if len(c.out) != outs || len(c.dlq) != dlqs {
			t.Fatalf("record %d with header %q: outputs %d, dead letters %d; want %d, %d", off-1, header, len(c.out), len(c.dlq), outs, dlqs)
		}
	}
	send(good, true)
	send(good, true)
	send(bad, false)
	send(good, true)
	send(bad, false)
	send(bad, false)
	for i := range 70 { // more layouts than the map keeps
		h := fmt.Appendf(nil, "note%d,transaction_id,amount,account_id", i)
		if err := a.Process(rec(off, fmt.Sprintf("n,t%d,5.00,ACC", off), kgo.RecordHeader{Key: txcsv.HeaderColumns, Value: h}), st, c); err != nil {
			t.Fatal(err)
		}
		off++
		outs++
	}
	buf = make([]byte, len(good))
	send(bad, false)
	send(good, true)
	if got := decodeOut(t, c.out[len(c.out)-1][1]); got.AccountID != "ACC" || got.Count != int64(outs) {
		t.Fatalf("last output %+v, want account ACC with count %d", got, outs)
	}
}

func TestAggregatorBadRowsGoToDLQ(t *testing.T) {
	a := New(Config{MaxLineBytes: 64})
	c := run(t, a, memState{},
		",A,1.00,2024-05-01T10:00:00Z",
		"t1,A,,2024-05-01T10:00:00Z",
		"t2,A,abc,2024-05-01T10:00:00Z",
		"t3,A,1.00",
		"t4,A,1.00,yesterday",
		"t5,A,1.00,2024-05-01T10:00:00Z,"+string(bytes.Repeat([]byte("x"), 100)),
		"t6,A,\xff,2024-05-01T10:00:00Z",
	)
	want := []txcsv.Reason{txcsv.ReasonEmptyTransactionID, txcsv.ReasonMissingAmount, txcsv.ReasonInvalidAmount,
		txcsv.ReasonFieldCount, txcsv.ReasonInvalidTimestamp, txcsv.ReasonLineTooLong, txcsv.ReasonInvalidUTF8}
	if len(c.out) != 0 || len(c.dlq) != len(want) {
		t.Fatalf("out=%d dlq=%v", len(c.out), c.dlq)
	}
	for i := range want {
		if c.dlq[i] != string(want[i]) {
			t.Errorf("row %d: reason %s, want %s", i, c.dlq[i], want[i])
		}
	}
}

// Same records, same order: same outputs byte for byte and the same state,
// whether processed in one pass against memory or in Pebble epochs of
// different sizes with commits in between (replays depend on this).
func TestAggregatorDeterministic(t *testing.T) {
	var values []string
	for i := 0; i < 3000; i++ {
		if i >= 2500 { // exact repeats of the first 500 rows
			values = append(values, values[i-2500])
			continue
		}
		acc := fmt.Sprintf("ACC-%d", (i*7)%13)
		values = append(values, fmt.Sprintf("t%d,%s,%d.%02d,2024-05-01T10:%02d:%02dZ", i, acc, i%97, i%100, (i/60)%60, i%60))
	}
	ref := run(t, New(Config{}), memState{}, values...)

	for _, epoch := range []int{1, 7, 500, 3000} {
		st, err := pipeline.OpenStore(filepath.Join(t.TempDir(), "s"), pipeline.StoreOptions{Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ov := pipeline.NewOverlay(st)
		a := New(Config{})
		c := &captured{}
		for i, v := range values {
			if err := a.Process(rec(int64(i), v), ov, c); err != nil {
				t.Fatal(err)
			}
			if (i+1)%epoch == 0 {
				if err := ov.Apply(int64(i + 1)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := ov.Apply(int64(len(values))); err != nil {
			t.Fatal(err)
		}
		if len(c.out) != len(ref.out) || c.dups != ref.dups || len(c.dlq) != len(ref.dlq) {
			t.Fatalf("epoch %d: %d/%d/%d outputs/dups/dlq, reference %d/%d/%d", epoch, len(c.out), c.dups, len(c.dlq), len(ref.out), ref.dups, len(ref.dlq))
		}
		for i := range c.out {
			if c.out[i] != ref.out[i] {
				t.Fatalf("epoch %d: output %d differs:\n%s\n%s", epoch, i, c.out[i][1], ref.out[i][1])
			}
		}
		if off, _ := st.Offset(); off != int64(len(values)) {
			t.Fatalf("store offset %d", off)
		}
		_ = st.Close()
	}
	if ref.dups != 500 {
		t.Fatalf("reference run: %d duplicates, want 500 (ids t0..t499 repeat)", ref.dups)
	}
}

func TestAccountStateRoundTrip(t *testing.T) {
	a := New(Config{})
	st := memState{}
	run(t, a, st, "t1,A,12.345,2024-05-01T10:00:00Z", "t2,A,-3,2024-05-02T10:00:00Z")
	var s AccountState
	if err := s.Decode(st[string(AccountKey(nil, "A"))]); err != nil {
		t.Fatal(err)
	}
	if s.Count != 2 || s.Total.Text('f') != "9.345" || s.Min.Text('f') != "-3" || s.Max.Text('f') != "12.345" ||
		!s.First.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) || !s.Last.Equal(time.Date(2024, 5, 2, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("got %+v", s)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 2, 5, 'x'}} {
		if err := new(AccountState).Decode(bad); err == nil {
			t.Errorf("Decode(%v) accepted corrupt state", bad)
		}
	}
}

// Record times beyond what Unix nanoseconds hold are kept as the nearest
// end of that range, not wrapped into another century.
func TestAccountStateFarTimes(t *testing.T) {
	a := New(Config{})
	st := memState{}
	run(t, a, st, "t1,A,1,2300-01-01T00:00:00Z")
	var s AccountState
	if err := s.Decode(st[string(AccountKey(nil, "A"))]); err != nil {
		t.Fatal(err)
	}
	if !s.First.Equal(maxNanoTime) || !s.Last.Equal(maxNanoTime) {
		t.Fatalf("a 2300 record time stored as %v .. %v, want %v", s.First, s.Last, maxNanoTime.UTC())
	}
	s.First = time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)
	var back AccountState
	if err := back.Decode(s.Encode(nil)); err != nil || !back.First.Equal(minNanoTime) {
		t.Fatalf("a 1500 time decoded as %v (%v), want %v", back.First, err, minNanoTime.UTC())
	}
}

func TestAccountStateCodec(t *testing.T) {
	var s AccountState
	s.Count = 3
	for _, c := range []struct {
		d   *apd.Decimal
		lit string
	}{{&s.Total, "123456789012345678901234567.89"}, {&s.Min, "-0.001"}, {&s.Max, "42"}} {
		if _, _, err := c.d.SetString(c.lit); err != nil {
			t.Fatal(err)
		}
	}
	s.First, s.Last, s.LastOffset = t0, t0.Add(time.Hour), 99
	var got AccountState
	if err := got.Decode(s.Encode(nil)); err != nil {
		t.Fatal(err)
	}
	if got.Total.Text('f') != "123456789012345678901234567.89" || got.Min.Text('f') != "-0.001" || got.Max.Text('f') != "42" ||
		got.Count != 3 || !got.Last.Equal(s.Last) || got.LastOffset != 99 {
		t.Fatalf("round trip: %+v", got)
	}
	// Format 1 (decimals as text), written by earlier versions, still reads.
	v1 := []byte{1}
	v1 = binary.AppendVarint(v1, 2)
	for _, lit := range []string{"10.50", "0.50", "10.00"} {
		v1 = binary.AppendUvarint(v1, uint64(len(lit)))
		v1 = append(v1, lit...)
	}
	for _, ts := range []int64{t0.UnixNano(), t0.UnixNano(), 7} {
		v1 = binary.AppendVarint(v1, ts)
	}
	var old AccountState
	if err := old.Decode(v1); err != nil || old.Total.Text('f') != "10.50" || old.Count != 2 || old.LastOffset != 7 {
		t.Fatalf("format 1: %+v, %v", old, err)
	}
	enc := s.Encode(nil)
	for i := 1; i < len(enc); i++ { // every truncation is an error, never a panic
		if err := new(AccountState).Decode(enc[:i]); err == nil {
			t.Fatalf("truncated state (%d of %d bytes) decoded without error", i, len(enc))
		}
	}
}

// The compatibility settings are the keys and values the consumer has
// always recorded in snapshots (before the operator supplied them), so
// existing snapshots stay restorable.
func TestStateSettings(t *testing.T) {
	for _, c := range []struct {
		cfg    Config
		window string
	}{{Config{}, "168h0m0s"}, {Config{DedupWindow: 90 * time.Minute}, "1h30m0s"}} {
		a := New(c.cfg)
		want := map[string]string{"operator": "txstream.aggregator/v4", "dedup_window": c.window}
		if got := a.StateSettings(); !maps.Equal(got, want) {
			t.Errorf("StateSettings() = %v, want %v", got, want)
		}
		if got := pipeline.StateSettings(a); !maps.Equal(got, want) {
			t.Errorf("pipeline.StateSettings = %v, want %v", got, want)
		}
	}
	// v4 reads v3 state (all of its dedup entries are keys of their own),
	// nothing older.
	a := New(Config{})
	for name, want := range map[string]bool{"txstream.aggregator/v3": true, "txstream.aggregator/v2": false, "txstream.aggregator/v4": false, "other": false} {
		if got := a.ReadsState(name); got != want {
			t.Errorf("ReadsState(%q) = %v, want %v", name, got, want)
		}
	}
}

// appendJSONString's output decodes back to its input, whatever it holds.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "ACC-000001", `a"b`, `back\slash`, "tab\there", "nul\x00", "\x1f\"\\", "ünïcødé €", `"`, `\`, "end\n"} {
		b := appendJSONString([]byte("x"), s)
		var got string
		if err := json.Unmarshal(b[1:], &got); err != nil || got != s || b[0] != 'x' {
			t.Errorf("%q: %s decodes to %q (%v)", s, b, got, err)
		}
	}
}

// A lookup reads at most ten buckets: the span [t - window, t + window]
// covers at most 2*bucketsPerWindow+2 of them, whatever the window and t.
func TestDedupLookupBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, w := range []time.Duration{1, 2, 3, 5, 7, 13, time.Second + 1, time.Hour, 168 * time.Hour, 1<<40 + 3} {
		a := New(Config{DedupWindow: w})
		if a.bucketWidth*bucketsPerWindow < int64(w) {
			t.Fatalf("window %v: width %d covers less than the window in %d buckets", w, a.bucketWidth, bucketsPerWindow)
		}
		for i := 0; i < 1000; i++ {
			ts := r.Int64() - r.Int64()
			lo, hi := addSat(ts, -w), addSat(ts, w)
			if n := a.bucketOf(hi) - a.bucketOf(lo) + 1; n > 2*bucketsPerWindow+2 {
				t.Fatalf("window %v, t %d: %d buckets", w, ts, n)
			}
		}
	}
}

// The content hash is stored in dedup entries, so it must stay 64-bit
// FNV-1a over "column 0x00 trimmed-field 0x00" in column-name order, as
// hash/fnv computes it.
func TestContentHashIsFNV1a(t *testing.T) {
	s := txcsv.MustSchema("transaction_id", "account_id", "amount", "timestamp", "note")
	a := New(Config{Columns: s})
	for _, line := range []string{
		"t1,ACC-1,10.00,2024-01-01T00:00:00Z,",
		"t2, ACC-2 , -3.5 ,2024-01-01T00:00:01Z,caf\u00e9 au lait",
		"t3,ACC-3,0.01,2024-01-01T00:00:02Z,\x01\xff",
	} {
		row := txcsv.Row{Fields: strings.Split(line, ",")}
		f := fnv.New64a()
		for _, col := range []string{"account_id", "amount", "note", "timestamp"} {
			i := slices.Index(s.Columns(), col)
			f.Write([]byte(col))
			f.Write([]byte{0})
			f.Write([]byte(strings.TrimSpace(row.Fields[i])))
			f.Write([]byte{0})
		}
		if got, want := contentHash(a.order(s), s, &row), f.Sum64(); got != want {
			t.Errorf("%q: contentHash = %#x, hash/fnv gives %#x", line, got, want)
		}
	}
}
