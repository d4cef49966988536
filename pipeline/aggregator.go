package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/apd/v3"

	"github.com/txstream/txstream/txcsv"
)

// AggregatorName is the built-in operator's name and state version.
const AggregatorName = "txstream.aggregator/v1"

// Aggregator is the built-in operator: it parses CSV transactions, drops
// exact duplicates within a record-time window, sends conflicting duplicates
// and invalid rows to the dead-letter topic, keeps per-account count, total,
// min, max and first/last time, and emits one JSON record per accepted
// transaction with the account's running aggregate.
type Aggregator struct {
	schema       *txcsv.Schema // for records without a columns header
	dedupWindow  time.Duration
	maxLineBytes int
	schemas      map[string]*txcsv.Schema // header value -> schema, bounded
	hashOrder    map[*txcsv.Schema][]int  // column positions in name order, for contentHash

	keyBuf, dkBuf []byte
}

// AggregatorConfig configures the built-in operator.
type AggregatorConfig struct {
	Columns      *txcsv.Schema // nil = txcsv.DefaultColumns
	DedupWindow  time.Duration // 0 = 168h
	MaxLineBytes int           // 0 = txcsv.DefaultMaxLineBytes
}

// NewAggregator builds the built-in operator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.Columns == nil {
		cfg.Columns = txcsv.MustSchema(txcsv.DefaultColumns...)
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = 168 * time.Hour
	}
	return &Aggregator{schema: cfg.Columns, dedupWindow: cfg.DedupWindow, maxLineBytes: cfg.MaxLineBytes,
		schemas: make(map[string]*txcsv.Schema), hashOrder: make(map[*txcsv.Schema][]int)}
}

// Name implements Operator.
func (a *Aggregator) Name() string { return AggregatorName }

// DedupWindow is the configured window (part of the job's compatibility
// settings: a restored state was built with some window).
func (a *Aggregator) DedupWindow() time.Duration { return a.dedupWindow }

// decCtx has far more precision than any money total needs; an inexact
// result is reported, never rounded silently.
var decCtx = apd.BaseContext.WithPrecision(60)

// AccountState is the per-account aggregate.
type AccountState struct {
	Count      int64
	Total      apd.Decimal
	Min, Max   apd.Decimal
	First      time.Time
	Last       time.Time
	LastOffset int64
}

// AccountKey is the state key of an account's aggregate.
func AccountKey(dst []byte, account string) []byte {
	dst = append(dst[:0], 'a', '/')
	return append(dst, account...)
}

func dedupKey(dst []byte, account, txid string) []byte {
	dst = append(dst[:0], 'd', '/')
	dst = append(dst, account...)
	dst = append(dst, 0)
	return append(dst, txid...)
}

// Process implements Operator.
func (a *Aggregator) Process(rec *Record, st State, out Emitter) error {
	schema := a.schema
	for _, h := range rec.Headers {
		if h.Key == txcsv.HeaderColumns {
			s, err := a.schemaFor(string(h.Value))
			if err != nil {
				out.DeadLetter(string(txcsv.ReasonBadHeader), err.Error())
				return nil
			}
			schema = s
			break
		}
	}
	row, err := schema.ParseLine(rec.Value, a.maxLineBytes)
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
	account := row.Key()
	h := contentHash(a.order(schema), schema, &row)

	a.dkBuf = dedupKey(a.dkBuf, account, row.TransactionID)
	if v, ok, err := st.Get(a.dkBuf); err != nil {
		return err
	} else if ok && len(v) == 16 {
		seen := time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])))
		if absDur(recTime.Sub(seen)) <= a.dedupWindow {
			if binary.BigEndian.Uint64(v[8:]) == h {
				out.Skipped("duplicate")
				return nil
			}
			out.DeadLetter(string(txcsv.ReasonConflictingDuplicate),
				fmt.Sprintf("transaction_id %q was seen at %s with different content", row.TransactionID, seen.UTC().Format(time.RFC3339Nano)))
			return nil
		}
		// Older than the window: a new transaction that reuses the id.
	}

	var amt apd.Decimal
	if _, _, err := amt.SetString(row.Amount); err != nil {
		out.DeadLetter(string(txcsv.ReasonInvalidAmount), err.Error())
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

	if err := st.Set(a.keyBuf, s.Encode(make([]byte, 0, 48))); err != nil {
		return err
	}
	var dv [16]byte
	binary.BigEndian.PutUint64(dv[:8], uint64(recTime.UnixNano()))
	binary.BigEndian.PutUint64(dv[8:], h)
	if err := st.Set(a.dkBuf, dv[:]); err != nil {
		return err
	}
	out.Emit([]byte(account), appendOutput(make([]byte, 0, 256), rec, &row, account, &s))
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
func contentHash(order []int, s *txcsv.Schema, r *txcsv.Row) uint64 {
	f := fnv.New64a()
	for _, i := range order {
		_, _ = f.Write([]byte(s.Column(i)))
		_, _ = f.Write([]byte{0})
		_, _ = f.Write([]byte(strings.TrimSpace(r.Fields[i])))
		_, _ = f.Write([]byte{0})
	}
	return f.Sum64()
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
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
	dst = binary.AppendVarint(dst, s.First.UnixNano())
	dst = binary.AppendVarint(dst, s.Last.UnixNano())
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
func appendOutput(dst []byte, rec *Record, row *txcsv.Row, account string, s *AccountState) []byte {
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

// appendJSONString quotes valid UTF-8 as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
