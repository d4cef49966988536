// Package txcsv owns the wire format of a transaction record: one CSV line
// per Kafka record value, with an optional record header naming the columns
// so that producers may use any column order. Both the producer (which
// validates before publishing) and the consumer (which validates again,
// because other clients such as kcat may publish too) use it.
package txcsv

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// HeaderColumns is the Kafka record header whose value lists the columns of
// the record's CSV line, comma-separated. Records without it are parsed with
// the consumer's configured columns (DefaultColumns unless --columns says
// otherwise).
const HeaderColumns = "txstream-columns"

// Well-known column names.
const (
	ColTransactionID = "transaction_id"
	ColAccountID     = "account_id"
	ColAmount        = "amount"
	ColTimestamp     = "timestamp"
)

// DefaultColumns is the documented default column order for bare CSV lines.
var DefaultColumns = []string{ColTransactionID, ColAccountID, ColAmount, ColTimestamp}

// DefaultMaxLineBytes bounds a single CSV line (and so a record value).
const DefaultMaxLineBytes = 64 << 10

// maxAmountDigits bounds the work and storage for one amount; no currency
// needs more.
const maxAmountDigits = 38

// Reason classifies why a row was rejected. Reasons are stable strings: they
// appear in reject files, dead-letter headers and metrics labels.
type Reason string

// Rejection reasons.
const (
	ReasonEmptyTransactionID Reason = "empty_transaction_id"
	ReasonMissingAmount      Reason = "missing_amount"
	ReasonInvalidAmount      Reason = "invalid_amount"
	ReasonInvalidTimestamp   Reason = "invalid_timestamp"
	ReasonFieldCount         Reason = "field_count"
	ReasonInvalidUTF8        Reason = "invalid_utf8"
	ReasonLineTooLong        Reason = "line_too_long"
	ReasonCSVSyntax          Reason = "csv_syntax"
	ReasonBadHeader          Reason = "bad_columns_header"
	// ReasonConflictingDuplicate is used by the consumer: the same
	// transaction_id was seen earlier with different content.
	ReasonConflictingDuplicate Reason = "conflicting_duplicate"
)

// RowError is a validation failure of one row.
type RowError struct {
	Reason Reason
	Detail string
}

func (e *RowError) Error() string {
	if e.Detail == "" {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Detail
}

func rowErr(r Reason, format string, args ...any) *RowError {
	return &RowError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the Reason of a *RowError in err's chain, or "" if none.
func ReasonOf(err error) Reason {
	var re *RowError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// Schema is a validated list of columns with the positions of the columns
// the pipeline needs. It is immutable and safe for concurrent use.
type Schema struct {
	cols      []string
	joined    string
	txID      int
	account   int // -1 when absent
	amount    int
	timestamp int // -1 when absent
}

// NewSchema validates a column list: names non-empty and unique,
// transaction_id and amount present.
func NewSchema(cols []string) (*Schema, error) {
	if len(cols) == 0 {
		return nil, errors.New("no columns")
	}
	s := &Schema{cols: slices.Clone(cols), txID: -1, account: -1, amount: -1, timestamp: -1}
	seen := make(map[string]bool, len(cols))
	for i, c := range s.cols {
		c = strings.TrimSpace(c)
		s.cols[i] = c
		if c == "" {
			return nil, fmt.Errorf("column %d has an empty name", i+1)
		}
		if seen[c] {
			return nil, fmt.Errorf("column %q appears twice", c)
		}
		seen[c] = true
		switch c {
		case ColTransactionID:
			s.txID = i
		case ColAccountID:
			s.account = i
		case ColAmount:
			s.amount = i
		case ColTimestamp:
			s.timestamp = i
		}
	}
	if s.txID < 0 {
		return nil, fmt.Errorf("required column %q is missing (columns: %s)", ColTransactionID, strings.Join(s.cols, ","))
	}
	if s.amount < 0 {
		return nil, fmt.Errorf("required column %q is missing (columns: %s)", ColAmount, strings.Join(s.cols, ","))
	}
	s.joined = strings.Join(s.cols, ",")
	return s, nil
}

// ParseColumns parses a comma-separated column list into a Schema.
func ParseColumns(list string) (*Schema, error) {
	return NewSchema(strings.Split(list, ","))
}

// MustSchema is NewSchema for compile-time constant column lists.
func MustSchema(cols ...string) *Schema {
	s, err := NewSchema(cols)
	if err != nil {
		panic(err)
	}
	return s
}

// Columns returns a copy of the column names.
func (s *Schema) Columns() []string { return slices.Clone(s.cols) }

// Column returns the name of column i.
func (s *Schema) Column(i int) string { return s.cols[i] }

// Header returns the comma-joined columns, the value of HeaderColumns.
func (s *Schema) Header() string { return s.joined }

// HasAccount reports whether the schema has an account_id column.
func (s *Schema) HasAccount() bool { return s.account >= 0 }

// Index returns the position of a column or -1.
func (s *Schema) Index(name string) int { return slices.Index(s.cols, name) }

// Row is one validated transaction. Field strings alias the parsed line's
// memory only when documented by the parser; treat them as read-only.
type Row struct {
	Fields        []string // all fields, in schema order
	TransactionID string
	AccountID     string // empty when the schema has no account column
	Amount        string // validated decimal literal, as written
	Timestamp     string // as written; may be empty
	Time          time.Time
	HasTime       bool
}

// Key returns the partitioning and state key: the account, or the
// transaction id when there is no account column.
func (r *Row) Key() string {
	if r.AccountID != "" {
		return r.AccountID
	}
	return r.TransactionID
}

// ParseLine splits and validates one CSV line (without its line terminator).
// maxLen <= 0 means DefaultMaxLineBytes.
func (s *Schema) ParseLine(line []byte, maxLen int) (Row, error) {
	return s.ParseLineInto(nil, line, maxLen)
}

// ParseLineInto is ParseLine with the fields split into scratch's backing
// array when it is large enough (the returned Row's Fields then share it):
// a caller that parses one line at a time reuses one slice.
func (s *Schema) ParseLineInto(scratch []string, line []byte, maxLen int) (Row, error) {
	if maxLen <= 0 {
		maxLen = DefaultMaxLineBytes
	}
	if len(line) > maxLen {
		return Row{}, rowErr(ReasonLineTooLong, "%d bytes, limit %d", len(line), maxLen)
	}
	if !utf8.Valid(line) {
		return Row{}, rowErr(ReasonInvalidUTF8, "line is not valid UTF-8")
	}
	fields, err := splitLine(scratch[:0], line)
	if err != nil {
		return Row{}, err
	}
	return s.Validate(fields)
}

// Validate checks already-split fields against the schema.
func (s *Schema) Validate(fields []string) (Row, error) {
	if len(fields) != len(s.cols) {
		return Row{}, rowErr(ReasonFieldCount, "%d fields, expected %d (%s)", len(fields), len(s.cols), s.joined)
	}
	r := Row{Fields: fields}
	r.TransactionID = strings.TrimSpace(fields[s.txID])
	if r.TransactionID == "" {
		return Row{}, rowErr(ReasonEmptyTransactionID, "")
	}
	if s.account >= 0 {
		r.AccountID = strings.TrimSpace(fields[s.account])
	}
	r.Amount = strings.TrimSpace(fields[s.amount])
	if r.Amount == "" {
		return Row{}, rowErr(ReasonMissingAmount, "")
	}
	if err := CheckAmount(r.Amount); err != nil {
		return Row{}, err
	}
	if s.timestamp >= 0 {
		r.Timestamp = strings.TrimSpace(fields[s.timestamp])
		if r.Timestamp != "" {
			t, err := ParseTimestamp(r.Timestamp)
			if err != nil {
				return Row{}, err
			}
			r.Time, r.HasTime = t, true
		}
	}
	return r, nil
}

// SplitLine splits one CSV line into fields. Lines without quotes take a
// fast path; quoted lines go through encoding/csv (RFC 4180).
func SplitLine(line []byte) ([]string, error) { return splitLine(nil, line) }

// splitLine is SplitLine appending the fields of an unquoted line to out.
func splitLine(out []string, line []byte) ([]string, error) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if bytes.IndexByte(line, '"') < 0 {
		if bytes.IndexByte(line, '\n') >= 0 {
			// An unquoted newline ends a CSV record, as on the quoted path.
			return nil, rowErr(ReasonCSVSyntax, "more than one line in a record")
		}
		if out == nil {
			out = make([]string, 0, bytes.Count(line, []byte{','})+1)
		}
		// One string allocation for the whole line; fields share it.
		str := string(line)
		for {
			i := strings.IndexByte(str, ',')
			if i < 0 {
				out = append(out, str)
				return out, nil
			}
			out = append(out, str[:i])
			str = str[i+1:]
		}
	}
	r := csv.NewReader(bytes.NewReader(line))
	r.FieldsPerRecord = -1
	r.ReuseRecord = false
	fields, err := r.Read()
	if err != nil {
		if err == io.EOF {
			return []string{""}, nil
		}
		return nil, rowErr(ReasonCSVSyntax, "%v", err)
	}
	if _, err := r.Read(); err != io.EOF {
		return nil, rowErr(ReasonCSVSyntax, "more than one line in a record")
	}
	return fields, nil
}

// EncodeLine joins fields into one CSV line (no terminator), quoting fields
// that need it.
func EncodeLine(dst []byte, fields []string) []byte {
	for i, f := range fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		if strings.ContainsAny(f, ",\"\r\n") || (f != "" && (f[0] == ' ' || f[len(f)-1] == ' ')) {
			dst = append(dst, '"')
			dst = append(dst, strings.ReplaceAll(f, `"`, `""`)...)
			dst = append(dst, '"')
			continue
		}
		dst = append(dst, f...)
	}
	return dst
}

// CheckAmount accepts a plain decimal literal: optional sign, digits, an
// optional fraction ("12", "-3.50", "0.001", ".5"). Exponents, NaN,
// infinities, thousands separators and currency symbols are rejected: money
// must be unambiguous.
func CheckAmount(s string) error {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits, dots, fracDigits := 0, 0, 0
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			if dots > 0 {
				fracDigits++
			}
		case c == '.':
			dots++
			if dots > 1 {
				return rowErr(ReasonInvalidAmount, "%q has more than one decimal point", clip(s))
			}
		default:
			return rowErr(ReasonInvalidAmount, "%q is not a decimal number", clip(s))
		}
	}
	if digits == 0 {
		return rowErr(ReasonInvalidAmount, "%q has no digits", clip(s))
	}
	if dots == 1 && fracDigits == 0 && s[len(s)-1] == '.' {
		return rowErr(ReasonInvalidAmount, "%q ends with a decimal point", clip(s))
	}
	if digits > maxAmountDigits {
		return rowErr(ReasonInvalidAmount, "%d digits, limit %d", digits, maxAmountDigits)
	}
	return nil
}

// Timestamp layouts accepted, most specific first.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// ParseTimestamp accepts RFC 3339 ("2024-05-01T10:00:00Z"), the same with a
// space instead of T, naive date-times (taken as UTC), a bare date, and Unix
// epoch seconds or milliseconds (integers; more than 11 digits = ms).
func ParseTimestamp(s string) (time.Time, error) {
	if t, ok := parseUTCSeconds(s); ok {
		return t, nil
	}
	if s != "" && (s[0] >= '0' && s[0] <= '9') && !strings.ContainsAny(s, "-:T ") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			if len(s) > 11 {
				return time.UnixMilli(n).UTC(), nil
			}
			return time.Unix(n, 0).UTC(), nil
		}
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, rowErr(ReasonInvalidTimestamp, "%q is not RFC 3339, \"YYYY-MM-DD hh:mm:ss\", a date or Unix seconds/milliseconds", clip(s))
}

// parseUTCSeconds parses the commonest form, "YYYY-MM-DDThh:mm:ssZ",
// without time.Parse's generality: it was half of the CSV validation's
// cost per row. Anything else, out-of-range fields included, returns false
// and goes to the general path, which decides; for every string it takes,
// the answer is time.Parse's (FuzzParseTimestamp).
func parseUTCSeconds(s string) (time.Time, bool) {
	if len(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z' {
		return time.Time{}, false
	}
	num := func(i, j int) int {
		n := 0
		for ; i < j; i++ {
			c := s[i] - '0'
			if c > 9 {
				return -1
			}
			n = n*10 + int(c)
		}
		return n
	}
	y, mo, d := num(0, 4), num(5, 7), num(8, 10)
	h, mi, sec := num(11, 13), num(14, 16), num(17, 19)
	if y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	// time.Date normalises an impossible day (Feb 30 is Mar 2): such a
	// date is left to the general path, which rejects it.
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if d > 28 && t.Day() != d {
		return time.Time{}, false
	}
	return t, true
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
