package aggregate

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/txcsv"
)

// trace records everything an operator emits, in order, for comparisons.
type trace struct {
	off    int64
	events []string
}

func (c *trace) Emit(k, v []byte) {
	c.events = append(c.events, fmt.Sprintf("%d emit %s %s", c.off, k, v))
}
func (c *trace) DeadLetter(reason, detail string) {
	c.events = append(c.events, fmt.Sprintf("%d dlq %s %s", c.off, reason, detail))
}
func (c *trace) Skipped(reason string) {
	c.events = append(c.events, fmt.Sprintf("%d skip %s", c.off, reason))
}

// timedRec is an input row with its Kafka timestamp.
type timedRec struct {
	value string
	kafka time.Time
}

func timedRecord(off int64, r timedRec) *pipeline.Record {
	return &pipeline.Record{Topic: "in", Partition: 0, Offset: off, Value: []byte(r.value), Timestamp: r.kafka}
}

func row(id, acct string, cents int, at time.Time) string {
	return fmt.Sprintf("%s,%s,%d.%02d,%s", id, acct, cents/100, cents%100, at.UTC().Format(time.RFC3339Nano))
}

func openTestStore(t testing.TB) *pipeline.Store {
	t.Helper()
	st, err := pipeline.OpenStore(filepath.Join(t.TempDir(), "s"), pipeline.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// expireAll runs Expire until nothing is due.
func expireAll(t testing.TB, a *Aggregator, st *pipeline.Store) int {
	t.Helper()
	total := 0
	for {
		n, err := a.Expire(st, 1000)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n < 1000 {
			return total
		}
	}
}

// dump is the store's whole content.
func dump(t testing.TB, st *pipeline.Store) map[string]string {
	t.Helper()
	it, err := st.NewIter(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	m := make(map[string]string)
	for it.First(); it.Valid(); it.Next() {
		m[string(it.Key())] = string(it.Value())
	}
	return m
}

func countPrefix(t testing.TB, st *pipeline.Store, prefix string) int {
	t.Helper()
	upper := []byte(prefix)
	upper[len(upper)-1]++
	it, err := st.NewIter([]byte(prefix), upper)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// expiryWorkload is a stream over 10 windows of one hour with everything
// dedup expiry can interact with: exact repeats (recent and older than the
// window), conflicting repeats, ids reused after the window and then
// repeated, records late within the window and later than it, and a row with
// a far-future time.
func expiryWorkload() []timedRec {
	r := rand.New(rand.NewPCG(7, 11))
	base := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	var recs []timedRec
	type sent struct {
		id, acct string
		cents    int
		at       time.Time
	}
	var hist []sent
	var due []struct {
		at    int
		value string
	}
	now := base
	for i := 0; len(recs) < 6000; i++ {
		now = now.Add(time.Duration(3000+r.IntN(6000)) * time.Millisecond) // ~6 s apart: 600 per window
		acct := fmt.Sprintf("ACC-%d", r.IntN(17))
		switch k := r.IntN(100); {
		case k < 8 && len(hist) > 0: // exact repeat of a recent row (within the window)
			s := hist[len(hist)-1-r.IntN(min(len(hist), 500))]
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now})
		case k < 11 && len(hist) > 1200: // exact repeat of a row 2-3 windows old: late
			s := hist[len(hist)-1200-r.IntN(min(len(hist)-1200, 600))]
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now})
		case k < 14 && len(hist) > 0: // same id and time, other amount: conflicting
			s := hist[len(hist)-1-r.IntN(min(len(hist), 300))]
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents+1, s.at), now})
		case len(due) > 0 && due[0].at <= i: // a scheduled repeat
			recs = append(recs, timedRec{due[0].value, now})
			due = due[1:]
		case k < 17 && len(hist) > 700: // id reused by a new transaction after the window
			old := hist[len(hist)-700-r.IntN(min(len(hist)-700, 400))]
			s := sent{old.id, old.acct, r.IntN(100000), now}
			hist = append(hist, s)
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now})
		case k < 20 && len(hist) > 700: // id reused just after its entry expired, then repeated
			j := len(hist) - 1
			for j > 0 && !hist[j].at.Before(now.Add(-time.Hour-time.Duration(r.IntN(300))*time.Second)) {
				j--
			}
			s := sent{hist[j].id, hist[j].acct, r.IntN(100000), now}
			hist = append(hist, s)
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now})
			due = append(due, struct {
				at    int
				value string
			}{i + 5 + r.IntN(60), row(s.id, s.acct, s.cents, s.at)})
		case k < 26: // out of order, late by up to 50 min (within the window)
			at := now.Add(-time.Duration(r.IntN(3000)) * time.Second)
			s := sent{fmt.Sprintf("o%d", i), acct, r.IntN(100000), at}
			hist = append(hist, s)
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now})
		case k < 28: // late by 1-3 windows: dead-lettered
			at := now.Add(-time.Hour - time.Duration(r.IntN(7200))*time.Second)
			recs = append(recs, timedRec{row(fmt.Sprintf("L%d", i), acct, r.IntN(100000), at), now})
		case k < 29: // far-future row time (a typo): must not move the watermark
			recs = append(recs, timedRec{row(fmt.Sprintf("F%d", i), acct, r.IntN(100000), now.AddDate(75, 0, 0)), now})
		default:
			s := sent{fmt.Sprintf("t%d", i), acct, r.IntN(100000), now}
			hist = append(hist, s)
			recs = append(recs, timedRec{row(s.id, s.acct, s.cents, s.at), now.Add(time.Duration(r.IntN(2000)) * time.Millisecond)})
		}
	}
	return recs
}

// TestExpireInvisibleAcrossEpochCuts: the same records give the same
// outputs (emitted values, dead letters, skips) whether epochs hold 1, 7,
// 500 or all records and whether Expire runs at every boundary (with an
// ample or a tiny budget, the latter building a backlog) or never, and
// across restarts (a reopened store, a new operator); after a final full
// expiry the stores are identical and hold exactly the entries of the
// buckets that are not wholly expired, each in the bucket of its time.
func TestExpireInvisibleAcrossEpochCuts(t *testing.T) {
	recs := expiryWorkload()
	const window = time.Hour

	ref := &trace{}
	ra := New(Config{DedupWindow: window})
	mem := memState{}
	for i, r := range recs {
		ref.off = int64(i)
		if err := ra.Process(timedRecord(int64(i), r), mem, ref); err != nil {
			t.Fatal(err)
		}
	}
	kinds := map[string]int{}
	for _, e := range ref.events {
		f := bytes.Fields([]byte(e))
		k := string(f[1])
		if k != "emit" {
			k += " " + string(f[2])
		}
		kinds[k]++
	}
	t.Logf("%d records: %v", len(recs), kinds)
	for _, k := range []string{"emit", "skip duplicate", "dlq " + string(txcsv.ReasonConflictingDuplicate), "dlq " + ReasonLateRecord} {
		if kinds[k] < 50 {
			t.Fatalf("workload has %d %q outcomes; it must exercise every case", kinds[k], k)
		}
	}

	var refState map[string]string
	for _, epoch := range []int{1, 7, 500, len(recs)} {
		for _, budget := range []int{0, 3, 1 << 30} { // never, backlog, everything due
			name := fmt.Sprintf("epoch=%d/budget=%d", epoch, budget)
			dir := filepath.Join(t.TempDir(), "s")
			st, err := pipeline.OpenStore(dir, pipeline.StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			a := New(Config{DedupWindow: window})
			ov := pipeline.NewOverlay(st)
			got := &trace{}
			removed := 0
			for i, r := range recs {
				got.off = int64(i)
				if err := a.Process(timedRecord(int64(i), r), ov, got); err != nil {
					t.Fatal(err)
				}
				if (i+1)%epoch == 0 || i == len(recs)-1 {
					if err := ov.Apply(int64(i + 1)); err != nil {
						t.Fatal(err)
					}
					n, err := a.Expire(st, budget)
					if err != nil {
						t.Fatal(err)
					}
					removed += n
					if off, _ := st.Offset(); off != int64(i+1) {
						t.Fatalf("%s: Expire changed the offset to %d", name, off)
					}
					if epoch == 500 && (i+1)%1000 == 0 {
						// A restart: a new Store (no hot cache, no expiry
						// cursor) and a new operator on the same state.
						if err := st.Close(); err != nil {
							t.Fatal(err)
						}
						if st, err = pipeline.OpenStore(dir, pipeline.StoreOptions{}); err != nil {
							t.Fatal(err)
						}
						a, ov = New(Config{DedupWindow: window}), pipeline.NewOverlay(st)
					}
				}
			}
			if budget > 0 && removed == 0 {
				t.Fatalf("%s: nothing expired during the run", name)
			}
			if !slices.Equal(got.events, ref.events) {
				for i := range min(len(got.events), len(ref.events)) {
					if got.events[i] != ref.events[i] {
						t.Fatalf("%s: event %d differs from the in-memory run without expiry:\n got %s\nwant %s", name, i, got.events[i], ref.events[i])
					}
				}
				t.Fatalf("%s: %d events, want %d", name, len(got.events), len(ref.events))
			}
			checkBuckets(t, name, a, st)
			expireAll(t, a, st)
			checkBuckets(t, name+" after a full expiry", a, st)
			state := dump(t, st)
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if refState == nil {
				refState = state
				continue
			}
			if len(state) != len(refState) {
				t.Fatalf("%s: %d keys after a full expiry, reference %d", name, len(state), len(refState))
			}
			for k, v := range refState {
				if state[k] != v {
					t.Fatalf("%s: key %q = %x after a full expiry, reference %x", name, k, state[k], v)
				}
			}
		}
	}

	// A full expiry leaves exactly the in-memory run's entries of the
	// buckets from the one holding W - window on, and every live one.
	w, _ := watermark(mem)
	live := liveFrom(w, window)
	keep := orderedNanos(ra.bucketOf(live))
	want := map[string]bool{}
	liveN := 0
	for k, v := range mem {
		if !strings.HasPrefix(k, dedupPrefix) {
			continue
		}
		if be64([]byte(k[len(dedupPrefix):])) >= keep {
			want[k] = true
		}
		if int64(be64(v)) >= live {
			liveN++
			if !want[k] {
				t.Fatalf("live dedup entry %q is in an expired bucket", k)
			}
		}
	}
	got := 0
	for k := range refState {
		if strings.HasPrefix(k, dedupPrefix) {
			got++
			if !want[k] {
				t.Fatalf("after a full expiry %q is left, in an expired bucket", k)
			}
		}
	}
	if got != len(want) {
		t.Fatalf("after a full expiry: %d dedup entries, want %d (%d live, %d ever written)", got, len(want), liveN, countMemPrefix(mem, 'd'))
	}
	t.Logf("after a full expiry: %d dedup entries (%d live) of %d written", got, liveN, countMemPrefix(mem, 'd'))
}

// checkBuckets checks that every dedup entry is in the bucket of its time
// seen (Expire relies on it).
func checkBuckets(t *testing.T, name string, a *Aggregator, st *pipeline.Store) {
	t.Helper()
	for k, v := range dump(t, st) {
		if !strings.HasPrefix(k, dedupPrefix) {
			continue
		}
		if b, want := be64([]byte(k[len(dedupPrefix):])), orderedNanos(a.bucketOf(int64(be64([]byte(v))))); b != want {
			t.Fatalf("%s: dedup entry %q is in bucket %x, its time's is %x", name, k, b, want)
		}
	}
}

func be64(v []byte) uint64 { return binary.BigEndian.Uint64(v) }

func countMemPrefix(m memState, c byte) int {
	n := 0
	for k := range m {
		if k[0] == c {
			n++
		}
	}
	return n
}

// TestExpireDedupSemantics walks through the rules with expiry after every
// record: a repeat within the window is still skipped and a conflicting one
// dead-lettered after expiry ran; an id reused after the window is a new
// transaction (and its own repeat is skipped); a record later than the
// window is dead-lettered; a far-future row time does not move the
// watermark.
func TestExpireDedupSemantics(t *testing.T) {
	st := openTestStore(t)
	a := New(Config{DedupWindow: time.Hour})
	ov := pipeline.NewOverlay(st)
	at := func(hm string) time.Time {
		ts, err := time.Parse("15:04", hm)
		if err != nil {
			t.Fatal(err)
		}
		return time.Date(2024, 5, 1, ts.Hour(), ts.Minute(), 0, 0, time.UTC)
	}
	var off int64
	step := func(value string, kafka time.Time) string {
		t.Helper()
		c := &trace{off: off}
		if err := a.Process(timedRecord(off, timedRec{value, kafka}), ov, c); err != nil {
			t.Fatal(err)
		}
		off++
		if err := ov.Apply(off); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Expire(st, 1000); err != nil {
			t.Fatal(err)
		}
		if len(c.events) != 1 {
			t.Fatalf("%d events for %q", len(c.events), value)
		}
		f := bytes.Fields([]byte(c.events[0]))
		if string(f[1]) == "emit" {
			return "emit"
		}
		return string(f[1]) + " " + string(f[2])
	}
	expect := func(value string, kafka time.Time, want string) {
		t.Helper()
		if got := step(value, kafka); got != want {
			t.Fatalf("%q: %s, want %s", value, got, want)
		}
	}
	dk := func(acct, id, at string) []byte {
		ts, err := time.Parse(time.RFC3339, at)
		if err != nil {
			t.Fatal(err)
		}
		return dedupKey(nil, a.bucketOf(ts.UnixNano()), acct, id)
	}

	expect("t1,A,5.00,2024-05-01T10:00:00Z", at("10:00"), "emit")
	expect("f1,A,1.00,2024-05-01T10:30:00Z", at("10:30"), "emit")
	expect("t1,A,5.00,2024-05-01T10:00:00Z", at("10:31"), "skip duplicate")
	expect("t1,A,6.00,2024-05-01T10:00:00Z", at("10:31"), "dlq "+string(txcsv.ReasonConflictingDuplicate))
	expect("t1,A,5.00,2024-05-01T10:55:00Z", at("10:55"), "dlq "+string(txcsv.ReasonConflictingDuplicate)) // same id, 55 min apart, other time
	if _, ok, _ := st.Get(dk("A", "t1", "2024-05-01T10:00:00Z")); !ok {
		t.Fatal("live dedup entry was removed")
	}
	// Cache the entry, as an epoch's read of a found key does, to check
	// that expiry keeps the store's hot cache consistent.
	if _, ok, _ := pipeline.NewOverlay(st).Get(dk("A", "t1", "2024-05-01T10:00:00Z")); !ok {
		t.Fatal("dedup entry not found")
	}

	// W = 11:30: live from 10:30, whose bucket is [10:30, 10:45) (a
	// quarter of the window): the buckets before it go, with t1@10:00.
	expect("f2,A,1.00,2024-05-01T11:30:00Z", at("11:30"), "emit")
	if _, ok, _ := st.Get(dk("A", "t1", "2024-05-01T10:00:00Z")); ok {
		t.Fatal("expired dedup entry was not removed")
	}
	if _, ok, _ := pipeline.NewOverlay(st).Get(dk("A", "t1", "2024-05-01T10:00:00Z")); ok {
		t.Fatal("expired dedup entry is still in the hot cache")
	}
	if n := countPrefix(t, st, dedupPrefix); n != 2 { // f1@10:30 and f2
		t.Fatalf("%d dedup entries, want 2", n)
	}

	expect("t1,A,5.00,2024-05-01T11:40:00Z", at("11:40"), "emit") // id reused after the window
	expect("t1,A,5.00,2024-05-01T11:40:00Z", at("11:41"), "skip duplicate")
	expect("t1,A,5.00,2024-05-01T10:00:00Z", at("11:42"), "dlq "+ReasonLateRecord) // the original again: too late to tell
	expect("t9,B,2.00,2024-05-01T10:50:00Z", at("11:42"), "emit")                  // late, but within the window
	expect("t9,B,2.00,2024-05-01T10:50:00Z", at("11:43"), "skip duplicate")

	// A far-future row time moves the watermark only to its Kafka
	// timestamp: the live entries stay live and records stay on time.
	expect("fx,B,3.00,2099-01-01T00:00:00Z", at("11:45"), "emit")
	if w, _ := watermark(st); w != at("11:45").UnixNano() {
		t.Fatalf("watermark %s, want 11:45", time.Unix(0, w).UTC())
	}
	expect("t9,B,2.00,2024-05-01T10:50:00Z", at("11:46"), "skip duplicate")
	expect("t1,A,5.00,2024-05-01T11:40:00Z", at("11:46"), "skip duplicate")
	expect("t2,A,1.00,2024-05-01T11:46:00Z", at("11:46"), "emit")
	expect("fx,B,3.00,2099-01-01T00:00:00Z", at("11:47"), "skip duplicate")

	var s AccountState
	v, _, _ := st.Get(AccountKey(nil, "A"))
	if err := s.Decode(v); err != nil || s.Count != 5 || s.Total.Text('f') != "13.00" {
		t.Fatalf("account A: %+v (%v), want 5 transactions (t1 twice, f1, f2, t2), 13.00", s, err)
	}
}

// TestAggregatorExtremeTimes: times outside the int64 nanosecond range
// (years before 1678 or after 2262) saturate instead of wrapping around, so
// they neither move the watermark to a random time nor break dedup.
func TestAggregatorExtremeTimes(t *testing.T) {
	a := New(Config{DedupWindow: time.Hour})
	st := memState{}
	kafka := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	var got []string
	for i, v := range []string{
		"t0,A,1.00,1600-01-01",  // before any watermark: accepted
		"t1,A,1.00,99999999999", // Unix seconds: year 5138
		"t1,A,1.00,99999999999", // its repeat
		"t2,A,1.00,2024-05-01T10:00:00Z",
		"t0,A,1.00,1600-01-01", // now far behind the watermark
		"t3,A,1.00,2024-05-01T09:30:00Z",
	} {
		c := &trace{}
		if err := a.Process(timedRecord(int64(i), timedRec{v, kafka}), st, c); err != nil {
			t.Fatal(err)
		}
		f := bytes.Fields([]byte(c.events[0]))
		got = append(got, string(f[1]))
		if string(f[1]) != "emit" {
			got[i] += " " + string(f[2])
		}
	}
	want := []string{"emit", "emit", "skip duplicate", "emit", "dlq " + ReasonLateRecord, "emit"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if w, _ := watermark(st); w != kafka.UnixNano() {
		t.Fatalf("watermark %v, want %v", time.Unix(0, w).UTC(), kafka)
	}
}

// TestExpireBudget: a backlog is worked off over several calls of at most
// budget entries each, oldest first, whole buckets.
func TestExpireBudget(t *testing.T) {
	st := openTestStore(t)
	a := New(Config{DedupWindow: time.Minute})
	ov := pipeline.NewOverlay(st)
	c := &trace{}
	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 100; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		if err := a.Process(timedRecord(int64(i), timedRec{row(fmt.Sprintf("t%d", i), "A", i, at), at}), ov, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := ov.Apply(100); err != nil {
		t.Fatal(err)
	}
	// W = 99 s: entries seen before 39 s are expired; the buckets are
	// 15 s, so those of [0, 30 s) go and [30, 39 s) stays until W = 105 s.
	var calls []int
	for {
		n, err := a.Expire(st, 7)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, n)
		if n == 0 {
			break
		}
		if d, want := countPrefix(t, st, dedupPrefix), 100-min(len(calls)*7, 30); d != want {
			t.Fatalf("after %d calls %d dedup entries, want %d", len(calls), d, want)
		}
	}
	for i := 0; i < 100; i++ {
		k := dedupKey(nil, a.bucketOf(t0.Add(time.Duration(i)*time.Second).UnixNano()), "A", fmt.Sprintf("t%d", i))
		if _, ok, _ := st.Get(k); ok != (i >= 30) {
			t.Fatalf("entry t%d (seen %d s): present %v after the backlog is worked off", i, i, ok)
		}
	}
	if want := []int{7, 7, 7, 7, 2, 0}; !slices.Equal(calls, want) {
		t.Fatalf("removed per call %v, want %v", calls, want)
	}
	if off, _ := st.Offset(); off != 100 {
		t.Fatalf("offset %d", off)
	}
}

// TestExpireKeepsStateFlat is the measurement: 10 windows of records at a
// steady rate (window 1 h, 20k records per window, unique ids) in epochs of
// 1000 with Expire after each: the dedup entries stay within one window
// plus one bucket (a quarter window) plus one epoch, and the store's size
// stops growing after the first window. A run without Expire is the
// control.
func TestExpireKeepsStateFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement: 2 x 200k records")
	}
	const (
		window    = time.Hour
		perWindow = 20_000
		windows   = 10
		epoch     = 1000
		accounts  = 1000
	)
	step := window / perWindow
	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	type point struct {
		windows, d         int
		flushed, compacted int64 // sstable bytes after a flush, after a full compaction
		size               int64 // Store.Size after the compaction (with WAL, manifest)
	}
	run := func(expire bool) []point {
		st := openTestStore(t)
		a := New(Config{DedupWindow: window})
		ov := pipeline.NewOverlay(st)
		c := &captured{}
		var pts []point
		var expireTime time.Duration
		maxD := 0
		for i := 0; i < perWindow*windows; i++ {
			at := t0.Add(time.Duration(i) * step)
			r := &pipeline.Record{Topic: "in", Offset: int64(i), Timestamp: at.Add(time.Second),
				Value: []byte(row(fmt.Sprintf("tx-%08d", i), fmt.Sprintf("ACC-%04d", i*7919%accounts), i%100000, at))}
			if err := a.Process(r, ov, c); err != nil {
				t.Fatal(err)
			}
			if (i+1)%epoch != 0 {
				continue
			}
			if err := ov.Apply(int64(i + 1)); err != nil {
				t.Fatal(err)
			}
			if expire {
				start := time.Now()
				if _, err := a.Expire(st, 2*epoch); err != nil {
					t.Fatal(err)
				}
				expireTime += time.Since(start)
				if (i+1)%(10*epoch) == 0 {
					d := countPrefix(t, st, dedupPrefix)
					if d > perWindow+perWindow/bucketsPerWindow+epoch+1 {
						t.Fatalf("after %d records: %d dedup entries; want at most one window (%d) plus one bucket (%d) plus one epoch (%d)",
							i+1, d, perWindow, perWindow/bucketsPerWindow, epoch)
					}
					maxD = max(maxD, d)
				}
			}
			if w := (i + 1) / perWindow; (i+1)%perWindow == 0 && (w == 1 || w == 5 || w == 10) {
				if err := st.DB().Flush(); err != nil {
					t.Fatal(err)
				}
				flushed := st.DB().Metrics().Total().TablesSize
				if err := st.DB().Compact(context.Background(), []byte{0}, []byte{0xff, 0xff, 0xff}, false); err != nil {
					t.Fatal(err)
				}
				pts = append(pts, point{w, countPrefix(t, st, dedupPrefix),
					flushed, st.DB().Metrics().Total().TablesSize, st.Size()})
			}
		}
		if len(c.out) != perWindow*windows || c.dups != 0 || len(c.dlq) != 0 {
			t.Fatalf("outputs %d, duplicates %d, dead letters %d; want every record output", len(c.out), c.dups, len(c.dlq))
		}
		if expire {
			t.Logf("Expire: %d calls, %v in all (%v per call), at most %d dedup entries between calls",
				perWindow*windows/epoch, expireTime, expireTime/time.Duration(perWindow*windows/epoch), maxD)
		}
		return pts
	}
	with, without := run(true), run(false)
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	for i := range with {
		t.Logf("after %2d windows: with Expire %6d d/, sstables %5.2f MiB flushed, %5.2f MiB compacted, Size %5.2f MiB; "+
			"without %6d d/, sstables %5.2f / %5.2f MiB, Size %5.2f MiB",
			with[i].windows, with[i].d, mib(with[i].flushed), mib(with[i].compacted), mib(with[i].size),
			without[i].d, mib(without[i].flushed), mib(without[i].compacted), mib(without[i].size))
	}
	if c := with[2].compacted; c > with[0].compacted*11/10 || c > with[1].compacted*11/10 {
		t.Errorf("compacted state with Expire grows: %d bytes after 1 window, %d after 5, %d after 10",
			with[0].compacted, with[1].compacted, with[2].compacted)
	}
	if without[2].compacted < with[2].compacted*5 {
		t.Errorf("control: without Expire the compacted state is %d bytes after 10 windows, with Expire %d; the measurement does not show the growth",
			without[2].compacted, with[2].compacted)
	}
}
