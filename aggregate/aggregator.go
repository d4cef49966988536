package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/cockroachdb/apd/v3"

	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/txcsv"
)

// DefaultDedupWindow is the record-time window of duplicate detection when
// none is configured (--dedup-window).
const DefaultDedupWindow = 168 * time.Hour

// Name is the operator's name and state version (pipeline.Operator.Name,
// and the "operator" compatibility setting of its snapshots).
//
// v4 (from v3): dedup entries may be packed, many to a Pebble value
// (pipeline.Packer); a v3 reader would not see them.
// v3 (from v2): dedup entries are keyed by a time bucket of a quarter of
// the dedup window (dedupKey) and expire a bucket at a time; the time index
// of v2 (an x/ key per entry, written by every accepted record) is gone.
// v2 (from v1): the state has a watermark and dedup entries expire against
// it; records more than the window behind it are dead-lettered. The keys
// differ, so older state is not compatible.
const Name = "txstream.aggregator/v4"

// ReasonLateRecord is the dead-letter reason of a record whose time is more
// than the dedup window behind its partition's watermark: no dedup entry
// can be kept for it (it would already be expired), so the aggregator can
// neither tell whether it repeats an earlier transaction nor protect against
// a later repeat of it, and it does not count it.
const ReasonLateRecord = "late_record"

// Aggregator is the built-in operator: it parses CSV transactions, drops
// exact duplicates within a record-time window, sends conflicting duplicates
// and invalid rows to the dead-letter topic, keeps per-account count, total,
// min, max and first/last time, and emits one JSON record per accepted
// transaction with the account's running aggregate. The package
// documentation has the rules (dedup against the watermark, late records)
// and the state layout.
//
// The engine makes one Aggregator per partition (pipeline.NewEngine's
// newOp); an Aggregator is not safe for concurrent use.
type Aggregator struct {
	schema       *txcsv.Schema // for records without a columns header
	dedupWindow  time.Duration
	maxLineBytes int
	schemas      map[string]*txcsv.Schema // header value -> schema, bounded
	hashOrder    map[*txcsv.Schema][]int  // column positions in name order, for contentHash

	bucketWidth int64 // of the dedup buckets: a quarter of the window, at least 1 ns

	keyBuf, dkBuf []byte
	valBuf        []byte   // the values a record writes (State.Set copies them)
	outBuf        []byte   // the output record's key and value (Emit copies them)
	fields        []string // a record's CSV fields (ParseLineInto)

	// ahead holds the rows Prefetch parsed, by offset, for Process to
	// take (parse); Prefetch builds its keys in pfBuf (pfEnds: where each
	// ends) and hands them over as pfKeys.
	ahead            [aheadSlots]parsedRow
	pfKeys           [][]byte
	pfBuf, pfScratch []byte
	pfEnds           []int

	// cursor is where the next expiry scan of cursorStore starts: every
	// index key below it has been deleted (see Expire). Nil, or another
	// store: from the start.
	cursorStore *pipeline.Store
	cursor      []byte
}

// Config configures the operator.
type Config struct {
	Columns      *txcsv.Schema // nil = txcsv.DefaultColumns
	DedupWindow  time.Duration // 0 = DefaultDedupWindow
	MaxLineBytes int           // 0 = txcsv.DefaultMaxLineBytes
}

// New builds the operator.
func New(cfg Config) *Aggregator {
	if cfg.Columns == nil {
		cfg.Columns = txcsv.MustSchema(txcsv.DefaultColumns...)
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = DefaultDedupWindow
	}
	return &Aggregator{schema: cfg.Columns, dedupWindow: cfg.DedupWindow, maxLineBytes: cfg.MaxLineBytes,
		bucketWidth: bucketWidth(cfg.DedupWindow),
		schemas:     make(map[string]*txcsv.Schema), hashOrder: make(map[*txcsv.Schema][]int)}
}

// Name implements pipeline.Operator.
func (a *Aggregator) Name() string { return Name }

// ProbedPrefix implements pipeline.Prober: most dedup lookups are of new
// transaction ids, which are absent.
func (a *Aggregator) ProbedPrefix() []byte { return []byte(dedupPrefix) }

// ProbeKey implements pipeline.ProbeKeyer: a dedup key without its bucket,
// so that one filter check rules an id out in every bucket.
func (a *Aggregator) ProbeKey(key []byte) []byte {
	if len(key) < len(dedupPrefix)+8 {
		return key
	}
	return key[len(dedupPrefix)+8:]
}

// ReadsState implements pipeline.StateUpgrader: v4 reads v3 state (its
// dedup entries are v4's unpacked ones), so a v3 snapshot or savepoint is
// restored and continues as v4.
func (a *Aggregator) ReadsState(name string) bool { return name == nameV3 }

const nameV3 = "txstream.aggregator/v3"

// PackedGroupLen implements pipeline.Packer: dedup entries are packed per
// time bucket (the prefix and the 8-byte bucket), so that expiring a
// bucket removes its packed values with it.
func (a *Aggregator) PackedGroupLen() int { return len(dedupPrefix) + 8 }

// DedupWindow is the configured window (part of the compatibility
// settings: a restored state was built with some window).
func (a *Aggregator) DedupWindow() time.Duration { return a.dedupWindow }

// StateSettings implements pipeline.Compatibility: a snapshot's state can
// be restored only by the same operator version (Name) with the same dedup
// window, which decides which entries are live and which records are late.
// The keys and values are those the consumer has always recorded, so that
// existing snapshots stay restorable; the default columns are not among
// them (they decide how rows without a columns header are parsed, not the
// state's format).
func (a *Aggregator) StateSettings() map[string]string {
	return map[string]string{
		"operator":     Name,
		"dedup_window": a.dedupWindow.String(),
	}
}

// decCtx has far more precision than any money total needs; an inexact
// result is reported, never rounded silently.
var decCtx = apd.BaseContext.WithPrecision(60)

// AccountState is the per-account aggregate.
type AccountState struct {
	Count    int64
	Total    apd.Decimal
	Min, Max apd.Decimal
	// First and Last are the earliest and latest record times. They are
	// stored as Unix nanoseconds, so a time outside 1677-09-21..2262-04-11
	// is kept as that range's nearest end (time.UnixNano would wrap it).
	First      time.Time
	Last       time.Time
	LastOffset int64
}

// AccountKey is the state key of an account's aggregate.
func AccountKey(dst []byte, account string) []byte {
	dst = append(dst[:0], 'a', '/')
	return append(dst, account...)
}

// bucketsPerWindow: dedup entries are kept in time buckets of a quarter of
// the window. A lookup reads at most 2*4+1 buckets (those within a window
// of the record's time), and only when the key filter does not rule the id
// out; expiry removes whole buckets, so the state holds up to 1.25 windows
// of entries.
const bucketsPerWindow = 4

const dedupPrefix = "d/"

// bucketWidth is a quarter of the window, rounded up (so that a window
// spans at most bucketsPerWindow+1 buckets), at least 1 ns.
func bucketWidth(window time.Duration) int64 {
	w := int64(window / bucketsPerWindow)
	if window%bucketsPerWindow != 0 {
		w++
	}
	return max(w, 1)
}

// bucketOf is the index of the bucket holding time t: floor(t / width),
// buckets aligned to the Unix epoch.
func (a *Aggregator) bucketOf(t int64) int64 {
	q := t / a.bucketWidth
	if t%a.bucketWidth < 0 {
		q--
	}
	return q
}

// dedupKey is the state key of a transaction id's dedup entry in bucket b:
// d/<b><account> 0x00 <txid>, b as 8 bytes that sort in time order. Its
// value is the record time seen (Unix ns, big-endian int64) and the
// content hash (big-endian uint64).
func dedupKey(dst []byte, b int64, account, txid string) []byte {
	dst = append(dst[:0], dedupPrefix...)
	dst = binary.BigEndian.AppendUint64(dst, orderedNanos(b))
	dst = append(dst, account...)
	dst = append(dst, 0)
	return append(dst, txid...)
}

// setBucket rewrites the bucket of a dedup key in place.
func setBucket(dk []byte, b int64) {
	binary.BigEndian.PutUint64(dk[len(dedupPrefix):], orderedNanos(b))
}

// watermarkKey holds the partition's watermark W (Unix ns, big-endian
// int64); absent before the first parsed record.
var watermarkKey = []byte("m/watermark")

// orderedNanos maps Unix ns to a uint64 whose big-endian bytes sort like the
// signed times (times before 1970 are negative).
func orderedNanos(ns int64) uint64 { return uint64(ns) ^ (1 << 63) }

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// unixNanos is t in Unix ns, saturated at the int64 range (years 1677 to
// 2262) instead of wrapping around as time.Time.UnixNano does.
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// liveFrom is the oldest time seen of a live dedup entry under watermark w:
// w - window, saturated.
func liveFrom(w int64, window time.Duration) int64 {
	if w < math.MinInt64+int64(window) {
		return math.MinInt64
	}
	return w - int64(window)
}

// addSat is t + d, saturated at the int64 range.
func addSat(t int64, d time.Duration) int64 {
	switch {
	case d > 0 && t > math.MaxInt64-int64(d):
		return math.MaxInt64
	case d < 0 && t < math.MinInt64-int64(d):
		return math.MinInt64
	}
	return t + int64(d)
}

// within reports |t - seen| <= window without overflowing.
func within(t, seen int64, window time.Duration) bool {
	var d uint64
	if t >= seen {
		d = uint64(t) - uint64(seen)
	} else {
		d = uint64(seen) - uint64(t)
	}
	return d <= uint64(window)
}

// watermark reads W from st; math.MinInt64 before the first record.
func watermark(st interface {
	Get([]byte) ([]byte, bool, error)
}) (int64, error) {
	v, ok, err := st.Get(watermarkKey)
	if err != nil || !ok {
		return math.MinInt64, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("aggregator watermark has %d bytes, want 8", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// knownSchema is the schema of rec's rows: its columns header's, if that
// header was seen before, or the configured one when it has none. known
// is false for a header not seen yet: header is its value, for
// schemaFor to validate.
func (a *Aggregator) knownSchema(rec *pipeline.Record) (s *txcsv.Schema, header []byte, known bool) {
	for _, h := range rec.Headers {
		if h.Key == txcsv.HeaderColumns {
			s, ok := a.schemas[string(h.Value)] // no allocation
			return s, h.Value, ok
		}
	}
	return a.schema, nil, true
}

// aheadSlots is the size of the ring of rows parsed by Prefetch, indexed
// by offset: more than a batch, so that a batch's rows do not overwrite
// each other across the small gaps transaction markers leave in offsets.
const aheadSlots = 4 * pipeline.PrefetchBatch

// parsedRow is a row Prefetch parsed, with what identifies its record.
type parsedRow struct {
	ok     bool
	offset int64
	value  *byte // the record's value, by identity
	n      int
	schema *txcsv.Schema
	row    txcsv.Row
	err    error
	fields []string
}

// parse parses rec's value, or takes the row Prefetch parsed from the
// same bytes with the same schema.
func (a *Aggregator) parse(rec *pipeline.Record, schema *txcsv.Schema) (txcsv.Row, error) {
	p := &a.ahead[uint64(rec.Offset)%aheadSlots]
	if p.ok && p.offset == rec.Offset && p.schema == schema && p.value == unsafe.SliceData(rec.Value) && p.n == len(rec.Value) {
		row, err := p.row, p.err
		// Taken once; not holding on to the record's bytes (a fetch
		// buffer) any longer than needed.
		*p = parsedRow{fields: p.fields}
		return row, err
	}
	row, err := schema.ParseLineInto(a.fields, rec.Value, a.maxLineBytes)
	if err == nil && cap(row.Fields) <= 64 { // keep a typical row's slice, not a huge one
		a.fields = row.Fields[:0]
	}
	return row, err
}

// Prefetch implements pipeline.Prefetcher: it parses the records (Process
// takes the rows) and prefetches each one's dedup key in its own bucket
// and its account's key.
func (a *Aggregator) Prefetch(recs []pipeline.Record, st pipeline.State) {
	a.pfKeys, a.pfBuf, a.pfEnds = a.pfKeys[:0], a.pfBuf[:0], a.pfEnds[:0]
	for i := range recs {
		rec := &recs[i]
		schema, _, known := a.knownSchema(rec)
		if !known {
			continue
		}
		p := &a.ahead[uint64(rec.Offset)%aheadSlots]
		row, err := schema.ParseLineInto(p.fields[:0], rec.Value, a.maxLineBytes)
		*p = parsedRow{ok: true, offset: rec.Offset, value: unsafe.SliceData(rec.Value), n: len(rec.Value),
			schema: schema, row: row, err: err, fields: p.fields}
		if err != nil {
			continue
		}
		if cap(row.Fields) <= 64 {
			p.fields = row.Fields[:0]
		}
		t := rec.Timestamp
		if row.HasTime {
			t = row.Time
		}
		account := row.Key()
		a.pfScratch = dedupKey(a.pfScratch, a.bucketOf(unixNanos(t)), account, row.TransactionID)
		a.pfBuf = append(a.pfBuf, a.pfScratch...)
		a.pfEnds = append(a.pfEnds, len(a.pfBuf))
		a.pfScratch = AccountKey(a.pfScratch, account)
		a.pfBuf = append(a.pfBuf, a.pfScratch...)
		a.pfEnds = append(a.pfEnds, len(a.pfBuf))
	}
	start := 0
	for _, end := range a.pfEnds {
		a.pfKeys = append(a.pfKeys, a.pfBuf[start:end])
		start = end
	}
	pipeline.PrefetchKeys(st, a.pfKeys)
}

// Process implements pipeline.Operator.
func (a *Aggregator) Process(rec *pipeline.Record, st pipeline.State, out pipeline.Emitter) error {
	schema, header, known := a.knownSchema(rec)
	if !known {
		s, err := a.schemaFor(string(header))
		if err != nil {
			out.DeadLetter(string(txcsv.ReasonBadHeader), err.Error())
			return nil
		}
		schema = s
	}
	row, err := a.parse(rec, schema)
	if err != nil {
		reason := txcsv.ReasonOf(err)
		if reason == "" {
			reason = txcsv.ReasonCSVSyntax
		}
		out.DeadLetter(string(reason), err.Error())
		return nil
	}
	recTime := rec.Timestamp
	if row.HasTime {
		recTime = row.Time
	}
	t := unixNanos(recTime)
	account := row.Key()
	h := contentHash(a.order(schema), schema, &row)

	// The watermark includes this record (see the package documentation).
	w, err := watermark(st)
	if err != nil {
		return err
	}
	if c := min(t, unixNanos(rec.Timestamp)); c > w {
		w = c
		if err := st.Set(watermarkKey, binary.BigEndian.AppendUint64(a.valBuf[:0], uint64(w))); err != nil {
			return err
		}
	}
	live := liveFrom(w, a.dedupWindow)

	// Only a live entry seen within the window of t decides, so only the
	// buckets from max(live, t - window) to t + window can hold it; the
	// newest bucket first, so that if an id has two such entries (possible
	// only when a row dated ahead of the watermark reused it), the later
	// one decides. The filter usually rules the id out in all of them.
	a.dkBuf = dedupKey(a.dkBuf, a.bucketOf(t), account, row.TransactionID)
	if lo, hi := max(live, addSat(t, -a.dedupWindow)), addSat(t, a.dedupWindow); lo <= hi && pipeline.MayContain(st, a.dkBuf) {
		bhi := a.bucketOf(hi)
		for i := range bhi - a.bucketOf(lo) + 1 { // at most 2*bucketsPerWindow+2 (bucketWidth)
			setBucket(a.dkBuf, bhi-i)
			v, ok, err := st.Get(a.dkBuf)
			if err != nil {
				return err
			}
			if !ok || len(v) != 16 {
				continue
			}
			seen := int64(binary.BigEndian.Uint64(v[:8]))
			if seen < live || !within(t, seen, a.dedupWindow) {
				continue // expired, or another transaction that reused the id
			}
			if binary.BigEndian.Uint64(v[8:]) == h {
				out.Skipped("duplicate")
				return nil
			}
			out.DeadLetter(string(txcsv.ReasonConflictingDuplicate),
				fmt.Sprintf("transaction_id %q was seen at %s with different content", row.TransactionID, time.Unix(0, seen).UTC().Format(time.RFC3339Nano)))
			return nil
		}
		setBucket(a.dkBuf, a.bucketOf(t))
	}

	var amt apd.Decimal
	if err := setAmount(&amt, row.Amount); err != nil {
		out.DeadLetter(string(txcsv.ReasonInvalidAmount), err.Error())
		return nil
	}
	if t < live {
		out.DeadLetter(ReasonLateRecord, fmt.Sprintf("record time %s is more than the dedup window (%s) behind the partition's watermark %s",
			recTime.UTC().Format(time.RFC3339Nano), a.dedupWindow, time.Unix(0, w).UTC().Format(time.RFC3339Nano)))
		return nil
	}
	a.keyBuf = AccountKey(a.keyBuf, account)
	var s AccountState
	if v, ok, err := st.Get(a.keyBuf); err != nil {
		return err
	} else if ok {
		if err := s.Decode(v); err != nil {
			return fmt.Errorf("account %q: %w", account, err)
		}
	}
	if s.Count == 0 {
		s.Min.Set(&amt)
		s.Max.Set(&amt)
		s.First, s.Last = recTime, recTime
	} else {
		if amt.Cmp(&s.Min) < 0 {
			s.Min.Set(&amt)
		}
		if amt.Cmp(&s.Max) > 0 {
			s.Max.Set(&amt)
		}
		if recTime.Before(s.First) {
			s.First = recTime
		}
		if recTime.After(s.Last) {
			s.Last = recTime
		}
	}
	var total apd.Decimal
	cond, err := decCtx.Add(&total, &s.Total, &amt)
	if err != nil || cond.Inexact() {
		out.DeadLetter("amount_overflow", fmt.Sprintf("account %q total would exceed %d digits", account, decCtx.Precision))
		return nil
	}
	s.Total.Set(&total)
	s.Count++
	s.LastOffset = rec.Offset

	a.valBuf = s.Encode(a.valBuf[:0])
	if err := st.Set(a.keyBuf, a.valBuf); err != nil {
		return err
	}
	// The dedup entry, in t's bucket: it replaces any entry of the id
	// there, which cannot be live (it would have decided above).
	a.valBuf = binary.BigEndian.AppendUint64(a.valBuf[:0], uint64(t))
	a.valBuf = binary.BigEndian.AppendUint64(a.valBuf, h)
	if err := st.Set(a.dkBuf, a.valBuf); err != nil {
		return err
	}
	if !pipeline.Discards(out) { // a replay: the output was committed before
		// Key and value built in one reused buffer (Emit copies them).
		buf := append(a.outBuf[:0], account...)
		buf = appendOutput(buf, rec, &row, account, &s)
		out.Emit(buf[:len(account):len(account)], buf[len(account):])
		if cap(buf) <= 64<<10 { // keep a typical record's buffer, not a huge one
			a.outBuf = buf
		}
	}
	return nil
}

func (a *Aggregator) schemaFor(header string) (*txcsv.Schema, error) {
	if s, ok := a.schemas[header]; ok {
		return s, nil
	}
	if !utf8.ValidString(header) || len(header) > 4096 {
		return nil, errors.New("columns header is not valid UTF-8 or too long")
	}
	s, err := txcsv.ParseColumns(header)
	if err != nil {
		return nil, fmt.Errorf("columns header %q: %w", header, err)
	}
	if len(a.schemas) >= 64 { // bounded: producers use a handful of layouts
		clear(a.schemas)
		clear(a.hashOrder)
	}
	a.schemas[header] = s
	return s, nil
}

// order returns the schema's column positions sorted by column name,
// without transaction_id.
func (a *Aggregator) order(s *txcsv.Schema) []int {
	if idx, ok := a.hashOrder[s]; ok {
		return idx
	}
	cols := s.Columns()
	var idx []int
	for i, c := range cols {
		if c != txcsv.ColTransactionID {
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(x, y int) int { return strings.Compare(cols[x], cols[y]) })
	a.hashOrder[s] = idx
	return idx
}

// contentHash identifies a transaction's content independent of column
// order: every column except transaction_id, in column-name order.
//
// The hash is 64-bit FNV-1a (dedup entries in existing state hold it, so
// it must not change), computed inline: hash/fnv behind its interface
// cost a conversion and an indirect call per piece.
func contentHash(order []int, s *txcsv.Schema, r *txcsv.Row) uint64 {
	h := uint64(fnvOffset64)
	for _, i := range order {
		h = fnvString(h, s.Column(i))
		h *= fnvPrime64 // the 0x00 separator (h ^ 0 == h)
		h = fnvString(h, strings.TrimSpace(r.Fields[i]))
		h *= fnvPrime64
	}
	return h
}

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime64
	}
	return h
}

// Account state encodings. Format 2 stores decimals in binary (sign,
// exponent, varint coefficient) so that the hot path parses no text; format
// 1 (decimals as text) is still read.
const (
	stateText   = 1
	stateBinary = 2
	decUint     = 0 // coefficient fits in a uint64
	decText     = 1 // larger: the decimal's text
)

// Encode serialises the aggregate (format 2).
func (s *AccountState) Encode(dst []byte) []byte {
	dst = append(dst, stateBinary)
	dst = binary.AppendVarint(dst, s.Count)
	for _, d := range []*apd.Decimal{&s.Total, &s.Min, &s.Max} {
		dst = appendDecimal(dst, d)
	}
	dst = binary.AppendVarint(dst, unixNanos(s.First))
	dst = binary.AppendVarint(dst, unixNanos(s.Last))
	dst = binary.AppendVarint(dst, s.LastOffset)
	return dst
}

func appendDecimal(dst []byte, d *apd.Decimal) []byte {
	if d.Form == apd.Finite && d.Coeff.IsUint64() {
		neg := byte(0)
		if d.Negative {
			neg = 1
		}
		dst = append(dst, decUint, neg)
		dst = binary.AppendVarint(dst, int64(d.Exponent))
		return binary.AppendUvarint(dst, d.Coeff.Uint64())
	}
	t := d.Text('f')
	dst = append(dst, decText)
	dst = binary.AppendUvarint(dst, uint64(len(t)))
	return append(dst, t...)
}

var errState = errors.New("account state: corrupt encoding")

func readDecimal(b []byte, d *apd.Decimal) ([]byte, error) {
	if len(b) < 1 {
		return nil, errState
	}
	switch b[0] {
	case decUint:
		if len(b) < 2 || b[1] > 1 {
			return nil, errState
		}
		neg := b[1] == 1
		b = b[2:]
		e, n := binary.Varint(b)
		if n <= 0 || e < -1<<31 || e >= 1<<31 {
			return nil, errState
		}
		b = b[n:]
		c, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errState
		}
		d.Form, d.Negative, d.Exponent = apd.Finite, neg, int32(e)
		d.Coeff.SetUint64(c)
		return b[n:], nil
	case decText:
		return readTextDecimal(b[1:], d)
	}
	return nil, errState
}

func readTextDecimal(b []byte, d *apd.Decimal) ([]byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return nil, errState
	}
	if _, _, err := d.SetString(string(b[n : n+int(l)])); err != nil {
		return nil, fmt.Errorf("account state: %w", err)
	}
	return b[n+int(l):], nil
}

// Decode parses an encoded aggregate (format 1 or 2).
func (s *AccountState) Decode(b []byte) error {
	if len(b) == 0 || (b[0] != stateText && b[0] != stateBinary) {
		return errors.New("account state: unknown encoding")
	}
	format := b[0]
	b = b[1:]
	var n int
	s.Count, n = binary.Varint(b)
	if n <= 0 {
		return errors.New("account state: bad count")
	}
	b = b[n:]
	for _, d := range []*apd.Decimal{&s.Total, &s.Min, &s.Max} {
		var err error
		if format == stateBinary {
			b, err = readDecimal(b, d)
		} else {
			b, err = readTextDecimal(b, d)
		}
		if err != nil {
			return err
		}
	}
	var ts [3]int64
	for i := range ts {
		v, n := binary.Varint(b)
		if n <= 0 {
			return errors.New("account state: bad time")
		}
		ts[i] = v
		b = b[n:]
	}
	s.First, s.Last, s.LastOffset = time.Unix(0, ts[0]).UTC(), time.Unix(0, ts[1]).UTC(), ts[2]
	return nil
}

// appendOutput writes the output JSON by hand: it is on the hot path and
// the field order is fixed, which keeps outputs byte-for-byte deterministic.
func appendOutput(dst []byte, rec *pipeline.Record, row *txcsv.Row, account string, s *AccountState) []byte {
	dst = append(dst, `{"transaction_id":`...)
	dst = appendJSONString(dst, row.TransactionID)
	dst = append(dst, `,"account_id":`...)
	dst = appendJSONString(dst, account)
	dst = append(dst, `,"amount":`...)
	dst = appendJSONString(dst, row.Amount)
	dst = append(dst, `,"timestamp":`...)
	if row.Timestamp != "" {
		dst = appendJSONString(dst, row.Timestamp)
	} else {
		dst = appendJSONString(dst, rec.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	dst = append(dst, `,"account_count":`...)
	dst = strconv.AppendInt(dst, s.Count, 10)
	dst = append(dst, `,"account_total":"`...)
	dst = s.Total.Append(dst, 'f')
	dst = append(dst, `","account_min":"`...)
	dst = s.Min.Append(dst, 'f')
	dst = append(dst, `","account_max":"`...)
	dst = s.Max.Append(dst, 'f')
	dst = append(dst, `","partition":`...)
	dst = strconv.AppendInt(dst, int64(rec.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, rec.Offset, 10)
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes valid UTF-8 as a JSON string. Runs of bytes that
// need no escape (all of a typical field) are copied whole.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < 0x20 {
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		} else {
			dst = append(dst, '\\', c)
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
