package txcsv

import (
	"bytes"
	"encoding/csv"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/apd/v3"
)

// fuzzSchemas are the schemas FuzzParseLine picks from with its second
// argument: the default order, the minimal shape, a shuffled order with an
// extra column.
var fuzzSchemas = []*Schema{
	MustSchema(DefaultColumns...),
	MustSchema("transaction_id", "amount"),
	MustSchema("timestamp", "note", "amount", "account_id", "transaction_id"),
}

var knownReasons = []Reason{
	ReasonEmptyTransactionID, ReasonMissingAmount, ReasonInvalidAmount, ReasonInvalidTimestamp,
	ReasonFieldCount, ReasonInvalidUTF8, ReasonLineTooLong, ReasonCSVSyntax,
}

// FuzzParseLine checks that ParseLine never panics and that its results
// obey the format's invariants. The seed corpus is in
// testdata/fuzz/FuzzParseLine; run with
//
//	go test ./txcsv -run '^$' -fuzz FuzzParseLine -fuzztime 60s
func FuzzParseLine(f *testing.F) {
	f.Add([]byte("t1,ACC-001,12.50,2024-05-01T10:00:00Z"), uint8(0))
	f.Fuzz(func(t *testing.T, line []byte, sel uint8) {
		s := fuzzSchemas[int(sel)%len(fuzzSchemas)]
		maxLen := []int{0, 16, 64, 1 << 20}[int(sel/4)%4]
		effMax := maxLen
		if effMax <= 0 {
			effMax = DefaultMaxLineBytes
		}

		row, err := s.ParseLine(line, maxLen)
		if err != nil {
			r := ReasonOf(err)
			if !slices.Contains(knownReasons, r) {
				t.Fatalf("ParseLine(%q): error %v has reason %q", line, err, r)
			}
			switch {
			case len(line) > effMax && r != ReasonLineTooLong:
				t.Fatalf("%d bytes > %d: reason %q", len(line), effMax, r)
			case len(line) <= effMax && r == ReasonLineTooLong:
				t.Fatalf("%d bytes <= %d: line_too_long", len(line), effMax)
			case len(line) <= effMax && !utf8.Valid(line) && r != ReasonInvalidUTF8:
				t.Fatalf("invalid UTF-8 %q: reason %q", line, r)
			}
			return
		}

		// Valid rows.
		if len(line) > effMax || !utf8.Valid(line) {
			t.Fatalf("accepted %q (%d bytes, limit %d)", line, len(line), effMax)
		}
		cols := s.Columns()
		if len(row.Fields) != len(cols) {
			t.Fatalf("%d fields for %d columns", len(row.Fields), len(cols))
		}
		txID := row.Fields[s.Index(ColTransactionID)]
		if row.TransactionID == "" || row.TransactionID != strings.TrimSpace(txID) {
			t.Fatalf("transaction id %q from field %q", row.TransactionID, txID)
		}
		if row.Key() == "" {
			t.Fatal("empty key")
		}
		if i := s.Index(ColAccountID); i >= 0 && row.AccountID != strings.TrimSpace(row.Fields[i]) {
			t.Fatalf("account %q from field %q", row.AccountID, row.Fields[i])
		}
		if err := CheckAmount(row.Amount); err != nil {
			t.Fatalf("accepted amount %q fails CheckAmount: %v", row.Amount, err)
		}
		// The amount is an exact decimal: apd parses it, and it is not an
		// exponent/NaN/Inf form.
		d, _, err := apd.NewFromString(row.Amount)
		if err != nil || d.Form != apd.Finite || strings.ContainsAny(row.Amount, "eE") {
			t.Fatalf("amount %q is not a plain decimal: %v %v", row.Amount, d, err)
		}
		if ti := s.Index(ColTimestamp); ti >= 0 {
			if row.HasTime != (strings.TrimSpace(row.Fields[ti]) != "") {
				t.Fatalf("HasTime %v for timestamp field %q", row.HasTime, row.Fields[ti])
			}
			if row.HasTime && row.Time.Location() != time.UTC {
				t.Fatalf("time %v not in UTC", row.Time)
			}
		} else if row.HasTime {
			t.Fatal("HasTime without a timestamp column")
		}

		// Re-encoding a valid row gives a line that parses to the same fields.
		enc := EncodeLine(nil, row.Fields)
		again, err := s.ParseLine(enc, 1<<30)
		if err != nil {
			t.Fatalf("re-encoded %q (from %q) does not parse: %v", enc, line, err)
		}
		if !slices.Equal(again.Fields, row.Fields) || again.TransactionID != row.TransactionID ||
			again.Amount != row.Amount || again.AccountID != row.AccountID || !again.Time.Equal(row.Time) {
			t.Fatalf("round trip of %q via %q: %q != %q", line, enc, again.Fields, row.Fields)
		}
		// Encoding is canonical: encoding again gives the same bytes.
		if enc2 := EncodeLine(nil, again.Fields); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: %q then %q", enc, enc2)
		}
		// SplitLine agrees with encoding/csv (RFC 4180) on what the fields are.
		if std, err := readCSV(line); err == nil && !slices.Equal(std, row.Fields) {
			t.Fatalf("%q: fields %q, encoding/csv says %q", line, row.Fields, std)
		}
	})
}

// readCSV parses line as exactly one CSV record with encoding/csv.
func readCSV(line []byte) ([]string, error) {
	r := csv.NewReader(bytes.NewReader(line))
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return nil, err
	}
	if _, err := r.Read(); err != io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return rec, nil
}

// FuzzParseTimestamp checks the fast path of ParseTimestamp against
// time.Parse: whatever parseUTCSeconds accepts, time.Parse accepts with
// the same instant, in UTC.
//
//	go test ./txcsv -run '^$' -fuzz FuzzParseTimestamp -fuzztime 60s
func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{"2024-05-01T10:00:00Z", "2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "2024-05-01T24:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTCSeconds(s)
		if !ok {
			return
		}
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Fatalf("parseUTCSeconds(%q) = %v; time.Parse: %v, %v", s, got, want, err)
		}
	})
}
