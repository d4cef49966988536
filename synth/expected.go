package synth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/apd/v3"
)

// This file computes, from a CSV file alone, what a correct exactly-once
// consumer must end up with. It deliberately shares no code with txcsv or
// the consumer: it re-implements the documented row rules so that a bug in
// the shared parser cannot hide itself in both the system under test and
// its oracle.
//
// Rules (the wire format's documented contract):
//   - the first line is the header; columns in any order; transaction_id and
//     amount are required; a UTF-8 byte order mark is ignored
//   - empty lines are skipped; a quoted field may span lines
//   - a row is bad, checked in this order, if it is longer than
//     MaxLineBytes, is not valid UTF-8, is not valid CSV, has a different
//     number of fields than the header, has an empty transaction_id, has an
//     empty amount, has an amount that is not a plain decimal (optional sign,
//     digits, optional fraction, at most 38 digits), or has a timestamp that
//     is neither RFC 3339, "YYYY-MM-DD[ T]hh:mm:ss[.f][zone]", a date nor
//     Unix seconds/milliseconds (an empty timestamp is allowed)
//   - surrounding spaces of transaction_id, account_id, amount and timestamp
//     are ignored
//   - a valid row whose transaction_id was seen before in a valid row is a
//     duplicate when all its fields are identical (it counts once), and a
//     conflict otherwise (the first occurrence wins)
//   - totals are grouped by account_id, or by transaction_id when the row has
//     no account (no column, or an empty value)

// Reason names for bad rows; the same stable strings the wire format uses.
const (
	ReasonEmptyTransactionID = "empty_transaction_id"
	ReasonMissingAmount      = "missing_amount"
	ReasonInvalidAmount      = "invalid_amount"
	ReasonInvalidTimestamp   = "invalid_timestamp"
	ReasonFieldCount         = "field_count"
	ReasonInvalidUTF8        = "invalid_utf8"
	ReasonLineTooLong        = "line_too_long"
	ReasonCSVSyntax          = "csv_syntax"
)

// DefaultMaxLineBytes is the line limit Expected applies unless told
// otherwise (the producer's and consumer's default).
const DefaultMaxLineBytes = 64 << 10

// Account is the expected aggregate of one key.
type Account struct {
	Count int64       // valid unique transactions
	Total apd.Decimal // exact sum of their amounts
}

// Result is what a correct consumer computes from a CSV file.
type Result struct {
	Rows        int // data rows (records after the header; empty lines excluded)
	Valid       int // valid rows with a new transaction_id
	Duplicates  int // valid rows identical to an earlier valid row
	Conflicts   int // valid rows reusing a transaction_id with other content
	Bad         int // rows failing validation
	BadByReason map[string]int
	Accounts    map[string]*Account
	// Running is, for each valid transaction id, its account's count and
	// exact total right after it: what the output record of that
	// transaction must carry, in a failure-free pass in file order (an
	// account's records keep file order in their partition).
	Running map[string]Running
}

// Running is an account's aggregate right after one transaction.
type Running struct {
	Account string
	Count   int64
	Total   apd.Decimal
}

// Options tunes Expected.
type Options struct {
	MaxLineBytes int // 0 = DefaultMaxLineBytes
}

// ExpectedFile is Expected on a file.
func ExpectedFile(path string) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Expected(f)
}

// Expected reads a CSV with a header and computes the expected results.
func Expected(r io.Reader) (*Result, error) { return ExpectedWith(r, Options{}) }

var (
	decimalRE = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]+)?|\.[0-9]+)$`)
	sumCtx    = apd.BaseContext.WithPrecision(200)
)

const maxDigits = 38

// ExpectedWith is Expected with options.
func ExpectedWith(r io.Reader, opt Options) (*Result, error) {
	maxLen := opt.MaxLineBytes
	if maxLen <= 0 {
		maxLen = DefaultMaxLineBytes
	}
	rr := &recReader{sc: bufio.NewScanner(r)}
	rr.sc.Buffer(make([]byte, 0, 64<<10), 1<<30)

	head, err := rr.next()
	if err == io.EOF {
		return nil, errors.New("empty input: no header line")
	}
	if err != nil {
		return nil, err
	}
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	cols, err := splitCSV(head)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	idx := map[string]int{}
	for i, c := range cols {
		idx[strings.TrimSpace(c)] = i
	}
	col := func(name string) int {
		if i, ok := idx[name]; ok {
			return i
		}
		return -1
	}
	txCol, acctCol, amtCol, tsCol := col("transaction_id"), col("account_id"), col("amount"), col("timestamp")
	if txCol < 0 || amtCol < 0 {
		return nil, fmt.Errorf("header %q lacks transaction_id or amount", head)
	}

	res := &Result{BadByReason: map[string]int{}, Accounts: map[string]*Account{}, Running: map[string]Running{}}
	seen := map[string][16]byte{}
	bad := func(reason string) {
		res.Bad++
		res.BadByReason[reason]++
	}
	for {
		rec, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		res.Rows++
		if len(rec) > maxLen {
			bad(ReasonLineTooLong)
			continue
		}
		if !utf8.Valid(rec) {
			bad(ReasonInvalidUTF8)
			continue
		}
		fields, err := splitCSV(rec)
		if err != nil {
			bad(ReasonCSVSyntax)
			continue
		}
		if len(fields) != len(cols) {
			bad(ReasonFieldCount)
			continue
		}
		id := strings.TrimSpace(fields[txCol])
		if id == "" {
			bad(ReasonEmptyTransactionID)
			continue
		}
		amount := strings.TrimSpace(fields[amtCol])
		if amount == "" {
			bad(ReasonMissingAmount)
			continue
		}
		if !decimalRE.MatchString(amount) || countDigits(amount) > maxDigits {
			bad(ReasonInvalidAmount)
			continue
		}
		if tsCol >= 0 {
			if ts := strings.TrimSpace(fields[tsCol]); ts != "" && !validTime(ts) {
				bad(ReasonInvalidTimestamp)
				continue
			}
		}
		sum := contentHash(fields)
		if prev, ok := seen[id]; ok {
			if prev == sum {
				res.Duplicates++
			} else {
				res.Conflicts++
			}
			continue
		}
		seen[id] = sum
		res.Valid++
		key := id
		if acctCol >= 0 {
			if a := strings.TrimSpace(fields[acctCol]); a != "" {
				key = a
			}
		}
		acc := res.Accounts[key]
		if acc == nil {
			acc = &Account{}
			res.Accounts[key] = acc
		}
		var d apd.Decimal
		if _, _, err := d.SetString(amount); err != nil {
			return nil, fmt.Errorf("amount %q: %w", amount, err)
		}
		cond, err := sumCtx.Add(&acc.Total, &acc.Total, &d)
		if err != nil || cond.Inexact() {
			return nil, fmt.Errorf("account %s: sum not exact (%v, %v)", key, cond, err)
		}
		acc.Count++
		run := Running{Account: key, Count: acc.Count}
		run.Total.Set(&acc.Total)
		res.Running[id] = run
	}
	return res, nil
}

// recReader yields CSV records: physical lines joined while a quoted field
// is open, line terminators (\n or \r\n) removed, empty lines skipped.
type recReader struct {
	sc  *bufio.Scanner
	buf []byte
}

func (r *recReader) next() ([]byte, error) {
	r.buf = r.buf[:0]
	open := false
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(r.buf) > 0 || open {
			r.buf = append(r.buf, '\n')
		}
		r.buf = append(r.buf, line...)
		if bytes.Count(line, []byte{'"'})%2 == 1 {
			open = !open
		}
		if open {
			continue
		}
		rec := bytes.TrimSuffix(r.buf, []byte{'\r'})
		if len(rec) == 0 {
			continue
		}
		return rec, nil
	}
	if err := r.sc.Err(); err != nil {
		return nil, err
	}
	if len(r.buf) > 0 {
		return r.buf, nil // unterminated quote at EOF: splitCSV rejects it
	}
	return nil, io.EOF
}

func splitCSV(rec []byte) ([]string, error) {
	cr := csv.NewReader(bytes.NewReader(rec))
	cr.FieldsPerRecord = -1
	fields, err := cr.Read()
	if err != nil {
		return nil, err
	}
	if _, err := cr.Read(); err != io.EOF {
		return nil, errors.New("more than one record")
	}
	return fields, nil
}

func countDigits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
}

var timeLayouts = []string{
	"2006-01-02T15:04:05Z07:00",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02",
}

func validTime(s string) bool {
	allDigits := true
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			allDigits = false
			break
		}
	}
	if allDigits {
		_, err := strconv.ParseInt(s, 10, 64)
		return err == nil
	}
	for _, l := range timeLayouts {
		if _, err := time.Parse(l, s); err == nil {
			return true
		}
	}
	return false
}

func contentHash(fields []string) [16]byte {
	h := sha256.New()
	for _, f := range fields {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	var out [16]byte
	copy(out[:], h.Sum(nil))
	return out
}

// SortedAccounts returns the keys of r.Accounts in order.
func (r *Result) SortedAccounts() []string {
	out := make([]string, 0, len(r.Accounts))
	for a := range r.Accounts {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Total returns the exact total of a key as plain decimal text ("" if the
// key has no valid transaction).
func (r *Result) Total(key string) string {
	a := r.Accounts[key]
	if a == nil {
		return ""
	}
	return a.Total.Text('f')
}

// GrandTotal is the sum over all keys.
func (r *Result) GrandTotal() string {
	var t apd.Decimal
	for _, a := range r.Accounts {
		if _, err := sumCtx.Add(&t, &t, &a.Total); err != nil {
			return "error: " + err.Error()
		}
	}
	return t.Text('f')
}

// WriteMarkdown writes the counts and the per-key table in the format of
// testdata/README.md.
func (r *Result) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "| rows | count |\n| --- | ---: |\n")
	fmt.Fprintf(&b, "| data rows (header excluded) | %d |\n", r.Rows)
	fmt.Fprintf(&b, "| valid unique transactions | %d |\n", r.Valid)
	fmt.Fprintf(&b, "| exact duplicates | %d |\n", r.Duplicates)
	fmt.Fprintf(&b, "| conflicting duplicates | %d |\n", r.Conflicts)
	fmt.Fprintf(&b, "| bad rows | %d |\n", r.Bad)
	reasons := make([]string, 0, len(r.BadByReason))
	for k := range r.BadByReason {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(&b, "| bad: %s | %d |\n", k, r.BadByReason[k])
	}
	fmt.Fprintf(&b, "\n| account | transactions | total |\n| --- | ---: | ---: |\n")
	for _, k := range r.SortedAccounts() {
		fmt.Fprintf(&b, "| %s | %d | %s |\n", k, r.Accounts[k].Count, r.Total(k))
	}
	fmt.Fprintf(&b, "| **all** | %d | %s |\n", r.Valid, r.GrandTotal())
	_, err := io.WriteString(w, b.String())
	return err
}
