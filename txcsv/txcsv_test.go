package txcsv

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	std   = MustSchema(DefaultColumns...)
	noted = MustSchema("transaction_id", "account_id", "amount", "note")
)

func TestParseLineReasons(t *testing.T) {
	long := "t1,a,1," + strings.Repeat("x", 100)
	cases := []struct {
		name   string
		schema *Schema
		line   string
		maxLen int
		reason Reason // "" = valid
		detail string // substring of the detail, if set
	}{
		{"valid", std, "t1,ACC-001,12.50,2024-05-01T10:00:00Z", 0, "", ""},
		{"valid no timestamp", std, "t1,ACC-001,12.50,", 0, "", ""},
		{"valid CRLF", std, "t1,ACC-001,12.50,2024-05-01T10:00:00Z\r", 0, "", ""},
		{"empty transaction id", std, ",ACC-001,12.50,2024-05-01T10:00:00Z", 0, ReasonEmptyTransactionID, ""},
		{"blank transaction id", std, "   ,ACC-001,12.50,", 0, ReasonEmptyTransactionID, ""},
		{"missing amount", std, "t1,ACC-001,,2024-05-01T10:00:00Z", 0, ReasonMissingAmount, ""},
		{"blank amount", std, "t1,ACC-001, ,", 0, ReasonMissingAmount, ""},
		{"letters", std, "t1,ACC-001,abc,", 0, ReasonInvalidAmount, "not a decimal"},
		{"exponent", std, "t1,ACC-001,1e3,", 0, ReasonInvalidAmount, ""},
		{"two points", std, "t1,ACC-001,1.2.3,", 0, ReasonInvalidAmount, "more than one decimal point"},
		{"trailing point", std, "t1,ACC-001,5.,", 0, ReasonInvalidAmount, "ends with a decimal point"},
		{"sign only", std, "t1,ACC-001,-,", 0, ReasonInvalidAmount, "no digits"},
		{"NaN", std, "t1,ACC-001,NaN,", 0, ReasonInvalidAmount, ""},
		{"Inf", std, "t1,ACC-001,Inf,", 0, ReasonInvalidAmount, ""},
		{"currency", std, "t1,ACC-001,$5.00,", 0, ReasonInvalidAmount, ""},
		{"quoted thousands", std, `t1,ACC-001,"1,000.00",`, 0, ReasonInvalidAmount, ""},
		{"too many digits", std, "t1,ACC-001,1" + strings.Repeat("0", 38) + ",", 0, ReasonInvalidAmount, "digits, limit 38"},
		{"bad timestamp", std, "t1,ACC-001,1,yesterday", 0, ReasonInvalidTimestamp, ""},
		{"month 13", std, "t1,ACC-001,1,2024-13-01T00:00:00Z", 0, ReasonInvalidTimestamp, ""},
		{"feb 30", std, "t1,ACC-001,1,2024-02-30", 0, ReasonInvalidTimestamp, ""},
		{"too few fields", std, "t1,12.50,2024-05-01T10:00:00Z", 0, ReasonFieldCount, "3 fields, expected 4"},
		{"too many fields", std, "t1,a,1,,x", 0, ReasonFieldCount, "5 fields"},
		{"empty line", std, "", 0, ReasonFieldCount, "1 fields"},
		{"invalid utf8", std, "t1,AC\xffC,1,", 0, ReasonInvalidUTF8, ""},
		{"too long", noted, long, 50, ReasonLineTooLong, "limit 50"},
		{"at the limit", noted, long, len(long), "", ""},
		{"default limit", std, "t1,a,1," + strings.Repeat("x", DefaultMaxLineBytes), 0, ReasonLineTooLong, ""},
		{"bare quote", std, `t1,a"b,1,`, 0, ReasonCSVSyntax, ""},
		{"text after quote", std, `"t1"x,a,1,`, 0, ReasonCSVSyntax, ""},
		{"unterminated quote", std, `"t1,a,1,`, 0, ReasonCSVSyntax, ""},
		{"newline outside quotes", std, "\"t1\",a,1,\nt2,a,1,", 0, ReasonCSVSyntax, "more than one line"},
		// Precedence: length, then UTF-8, then CSV syntax, then field count,
		// then id, then amount, then timestamp.
		{"too long and bad utf8", noted, "\xff" + long, 50, ReasonLineTooLong, ""},
		{"bad utf8 and bad quote", std, "\xff\"", 0, ReasonInvalidUTF8, ""},
		{"wrong count and empty id", std, ",a,1", 0, ReasonFieldCount, ""},
		{"empty id and bad amount", std, ",a,x,", 0, ReasonEmptyTransactionID, ""},
		{"bad amount and bad time", std, "t1,a,x,never", 0, ReasonInvalidAmount, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			row, err := tc.schema.ParseLine([]byte(tc.line), tc.maxLen)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ParseLine(%q) = %v, want valid", tc.line, err)
				}
				if len(row.Fields) != len(tc.schema.Columns()) {
					t.Fatalf("fields %q", row.Fields)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseLine(%q) accepted: %+v", tc.line, row)
			}
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T) is not a *RowError", err, err)
			}
			if re.Reason != tc.reason || ReasonOf(err) != tc.reason {
				t.Fatalf("reason %q (%v), want %q", re.Reason, err, tc.reason)
			}
			if tc.detail != "" && !strings.Contains(re.Detail, tc.detail) {
				t.Fatalf("detail %q lacks %q", re.Detail, tc.detail)
			}
			if !strings.HasPrefix(err.Error(), string(tc.reason)) {
				t.Fatalf("Error() %q does not start with the reason", err.Error())
			}
		})
	}
}

func TestParseLineFields(t *testing.T) {
	row, err := std.ParseLine([]byte(" t1 , ACC-001 , -12.50 , 2024-05-01T12:00:00+02:00 "), 0)
	if err != nil {
		t.Fatal(err)
	}
	if row.TransactionID != "t1" || row.AccountID != "ACC-001" || row.Amount != "-12.50" || row.Timestamp != "2024-05-01T12:00:00+02:00" {
		t.Errorf("trimmed values: %+v", row)
	}
	if row.Fields[0] != " t1 " {
		t.Errorf("Fields must keep the raw values, got %q", row.Fields[0])
	}
	if !row.HasTime || !row.Time.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) || row.Time.Location() != time.UTC {
		t.Errorf("time %v", row.Time)
	}
	if row.Key() != "ACC-001" {
		t.Errorf("key %q", row.Key())
	}
	row, err = std.ParseLine([]byte("t2,,1,"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if row.Key() != "t2" || row.HasTime {
		t.Errorf("row without account/time: key %q, %+v", row.Key(), row)
	}
}

func TestColumnOrderFreedom(t *testing.T) {
	orders := [][]string{
		{"transaction_id", "account_id", "amount", "timestamp"},
		{"timestamp", "amount", "account_id", "transaction_id"},
		{"amount", "note", "transaction_id", "account_id", "timestamp"},
		{"account_id", "transaction_id", "channel", "amount"},
	}
	values := map[string]string{
		"transaction_id": "t-9", "account_id": "ACC-007", "amount": "3.14",
		"timestamp": "2024-05-01T10:00:00Z", "note": "hello, world", "channel": `say "hi"`,
	}
	for _, cols := range orders {
		s, err := NewSchema(cols)
		if err != nil {
			t.Fatal(err)
		}
		fields := make([]string, len(cols))
		for i, c := range cols {
			fields[i] = values[c]
		}
		line := EncodeLine(nil, fields)
		row, err := s.ParseLine(line, 0)
		if err != nil {
			t.Fatalf("%v: %q: %v", cols, line, err)
		}
		if row.TransactionID != "t-9" || row.AccountID != "ACC-007" || row.Amount != "3.14" || !slices.Equal(row.Fields, fields) {
			t.Errorf("%v: %+v", cols, row)
		}
		if slices.Contains(cols, "timestamp") != row.HasTime {
			t.Errorf("%v: HasTime %v", cols, row.HasTime)
		}
		if got := s.Header(); got != strings.Join(cols, ",") {
			t.Errorf("Header() = %q", got)
		}
		// The header value round-trips through ParseColumns.
		s2, err := ParseColumns(s.Header())
		if err != nil || !slices.Equal(s2.Columns(), cols) {
			t.Errorf("ParseColumns(%q) = %v, %v", s.Header(), s2, err)
		}
	}
}

func TestMinimalShape(t *testing.T) {
	s, err := ParseColumns("transaction_id,amount")
	if err != nil {
		t.Fatal(err)
	}
	if s.HasAccount() || s.Index("timestamp") != -1 || s.Index("amount") != 1 {
		t.Errorf("schema %+v", s)
	}
	row, err := s.ParseLine([]byte("tx-1,100"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if row.Key() != "tx-1" || row.Amount != "100" || row.AccountID != "" || row.HasTime {
		t.Errorf("%+v", row)
	}
	if _, err := s.ParseLine([]byte("tx-1,100,extra"), 0); ReasonOf(err) != ReasonFieldCount {
		t.Errorf("extra field: %v", err)
	}
	if _, err := s.ParseLine([]byte("tx-1"), 0); ReasonOf(err) != ReasonFieldCount {
		t.Errorf("missing field: %v", err)
	}
}

func TestSchemaErrors(t *testing.T) {
	for _, list := range []string{
		"", "transaction_id", "amount", "account_id,amount", "transaction_id,account_id",
		"transaction_id,amount,amount", "transaction_id,,amount", "transaction_id, amount ,transaction_id",
	} {
		if _, err := ParseColumns(list); err == nil {
			t.Errorf("ParseColumns(%q) accepted", list)
		}
	}
	if _, err := NewSchema(nil); err == nil {
		t.Error("NewSchema(nil) accepted")
	}
	s, err := ParseColumns(" amount , transaction_id ")
	if err != nil || !slices.Equal(s.Columns(), []string{"amount", "transaction_id"}) {
		t.Errorf("spaces around names: %v %v", s, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustSchema did not panic on a bad list")
		}
	}()
	MustSchema("amount")
}

func TestColumnsIsACopy(t *testing.T) {
	s := MustSchema("transaction_id", "amount")
	c := s.Columns()
	c[0] = "mutated"
	if s.Columns()[0] != "transaction_id" {
		t.Error("Columns() exposes internal state")
	}
}

func TestQuotedFields(t *testing.T) {
	s := MustSchema("transaction_id", "amount", "note")
	cases := []struct {
		line string
		note string
	}{
		{`t1,1,"a, b"`, "a, b"},
		{`t1,1,"say ""hi"""`, `say "hi"`},
		{`"t1","1",""`, ""},
		{"t1,1,\"two\nlines\"", "two\nlines"},
		{"t1,1,\"crlf\r\ninside\"", "crlf\ninside"}, // encoding/csv normalises \r\n in quoted fields
		{`t1,1," padded "`, " padded "},
		{"t1,1,\"trailing cr\"\r", "trailing cr"},
		{`t1,1,"ünïcödé ✓"`, "ünïcödé ✓"},
	}
	for _, tc := range cases {
		row, err := s.ParseLine([]byte(tc.line), 0)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if row.Fields[2] != tc.note || row.TransactionID != "t1" || row.Amount != "1" {
			t.Errorf("%q: fields %q", tc.line, row.Fields)
		}
		// Re-encoding gives a line that parses to the same fields.
		again, err := s.ParseLine(EncodeLine(nil, row.Fields), 0)
		if err != nil || !slices.Equal(again.Fields, row.Fields) {
			t.Errorf("%q: re-encoded %q -> %q, %v", tc.line, EncodeLine(nil, row.Fields), again.Fields, err)
		}
	}
}

func TestEncodeLine(t *testing.T) {
	cases := []struct {
		fields []string
		want   string
	}{
		{[]string{"a", "b"}, "a,b"},
		{[]string{"", ""}, ","},
		{[]string{"a,b", "c"}, `"a,b",c`},
		{[]string{`q"q`}, `"q""q"`},
		{[]string{"line\nbreak"}, "\"line\nbreak\""},
		{[]string{"cr\r"}, "\"cr\r\""},
		{[]string{" lead", "trail "}, `" lead","trail "`},
		{[]string{"in side"}, "in side"},
	}
	for _, tc := range cases {
		if got := string(EncodeLine(nil, tc.fields)); got != tc.want {
			t.Errorf("EncodeLine(%q) = %q, want %q", tc.fields, got, tc.want)
		}
	}
	// dst is appended to.
	if got := string(EncodeLine([]byte("x:"), []string{"a"})); got != "x:a" {
		t.Errorf("append: %q", got)
	}
}

func TestSplitLine(t *testing.T) {
	cases := []struct {
		line string
		want []string
		err  bool
	}{
		{"", []string{""}, false},
		{"\r", []string{""}, false},
		{"a", []string{"a"}, false},
		{",", []string{"", ""}, false},
		{"a,b,c\r", []string{"a", "b", "c"}, false},
		{`"a",b`, []string{"a", "b"}, false},
		{`""`, []string{""}, false},
		{`"a`, nil, true},
		{"\"a\"\n\"b\"", nil, true},
	}
	for _, tc := range cases {
		got, err := SplitLine([]byte(tc.line))
		if (err != nil) != tc.err || (!tc.err && !slices.Equal(got, tc.want)) {
			t.Errorf("SplitLine(%q) = %q, %v", tc.line, got, err)
		}
		if err != nil && ReasonOf(err) != ReasonCSVSyntax {
			t.Errorf("SplitLine(%q): reason %q", tc.line, ReasonOf(err))
		}
	}
}

func TestCheckAmount(t *testing.T) {
	good := []string{"0", "12", "-3.50", "+3.50", "0.001", ".5", "-.5", "007", "1" + strings.Repeat("0", 37),
		"0." + strings.Repeat("1", 37), "99999999999999999999.99"}
	bad := []string{"", "+", "-", ".", "5.", "1.2.3", "1e3", "1E-2", "NaN", "Inf", "-Infinity", "0x10",
		"1,000", "1 000", "$1", "1€", "١٢", "--1", "+-1", "1-", " 1", "1 ", "1" + strings.Repeat("0", 38)}
	for _, s := range good {
		if err := CheckAmount(s); err != nil {
			t.Errorf("CheckAmount(%q) = %v, want ok", s, err)
		}
	}
	for _, s := range bad {
		err := CheckAmount(s)
		if err == nil {
			t.Errorf("CheckAmount(%q) accepted", s)
		} else if ReasonOf(err) != ReasonInvalidAmount {
			t.Errorf("CheckAmount(%q): reason %q", s, ReasonOf(err))
		}
	}
	// The detail clips long input.
	err := CheckAmount(strings.Repeat("x", 100))
	if err == nil || len(err.Error()) > 100 {
		t.Errorf("long amount detail not clipped: %v", err)
	}
}

// Amounts keep their exact text: no float64 conversion anywhere.
func TestAmountExactText(t *testing.T) {
	for _, a := range []string{"0.1", "0.30000000000000004", "12345678901234567890.12", "-0.00"} {
		row, err := std.ParseLine([]byte("t,a,"+a+","), 0)
		if err != nil {
			t.Fatal(err)
		}
		if row.Amount != a {
			t.Errorf("amount %q became %q", a, row.Amount)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	good := map[string]time.Time{
		"2024-05-01T10:00:00Z":           want,
		"2024-05-01T12:00:00+02:00":      want,
		"2024-05-01T10:00:00.250Z":       want.Add(250 * time.Millisecond),
		"2024-05-01T10:00:00":            want,
		"2024-05-01 10:00:00":            want,
		"2024-05-01 10:00:00Z":           want,
		"2024-05-01 10:00:00.5":          want.Add(500 * time.Millisecond),
		"2024-05-01":                     time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
		"1714557600":                     want,
		"1714557600000":                  want,
		"1714557600250":                  want.Add(250 * time.Millisecond),
		"2024-05-01T10:00:00.123456789Z": want.Add(123456789),
	}
	for s, w := range good {
		got, err := ParseTimestamp(s)
		if err != nil || !got.Equal(w) || got.Location() != time.UTC {
			t.Errorf("ParseTimestamp(%q) = %v, %v; want %v", s, got, err, w)
		}
	}
	for _, s := range []string{"", "yesterday", "2024-13-01", "2024-05-01T25:00:00Z", "01/05/2024", "2024-05-01T10:00",
		"+1714557600", "99999999999999999999", "1714557600.5", "2024-05-01T10:00:00+25:00"} {
		if _, err := ParseTimestamp(s); ReasonOf(err) != ReasonInvalidTimestamp {
			t.Errorf("ParseTimestamp(%q): %v, want invalid_timestamp", s, err)
		}
	}
}

// The fast path for "YYYY-MM-DDThh:mm:ssZ" answers as time.Parse does on
// every calendar edge (month and day 0 and past the end, leap years of
// each rule, hour 24, minute and second 60), and is taken for every such
// string time.Parse accepts.
func TestParseTimestampFastPath(t *testing.T) {
	taken := 0
	for _, y := range []int{0, 1900, 1999, 2000, 2023, 2024, 2100, 9999} {
		for mo := 0; mo <= 13; mo++ {
			for d := 0; d <= 32; d++ {
				for _, hms := range [][3]int{{0, 0, 0}, {23, 59, 59}, {24, 0, 0}, {12, 60, 0}, {12, 0, 60}} {
					s := fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, hms[0], hms[1], hms[2])
					fast, ok := parseUTCSeconds(s)
					want, err := time.Parse(time.RFC3339Nano, s)
					switch {
					case ok && (err != nil || !fast.Equal(want) || fast.Location() != time.UTC):
						t.Fatalf("parseUTCSeconds(%q) = %v; time.Parse: %v, %v", s, fast, want, err)
					case !ok && err == nil:
						t.Fatalf("parseUTCSeconds(%q) declined a string time.Parse accepts", s)
					}
					if ok {
						taken++
					}
					got, gerr := ParseTimestamp(s)
					if (gerr == nil) != (err == nil) || (err == nil && !got.Equal(want)) {
						t.Fatalf("ParseTimestamp(%q) = %v, %v; time.Parse: %v, %v", s, got, gerr, want, err)
					}
				}
			}
		}
	}
	if taken == 0 {
		t.Fatal("the fast path was never taken")
	}
	for _, s := range []string{"2024-05-01t10:00:00Z", "2024-05-01T10:00:00z", "+024-05-01T10:00:00Z", "2024-05-01T10:00:0AZ", " 2024-05-01T10:00:00Z"} {
		if _, ok := parseUTCSeconds(s); ok {
			t.Errorf("parseUTCSeconds(%q) took a string outside its form", s)
		}
	}
}

func TestRowErrorFormatting(t *testing.T) {
	e := &RowError{Reason: ReasonMissingAmount}
	if e.Error() != "missing_amount" {
		t.Errorf("%q", e.Error())
	}
	wrapped := errors.Join(errors.New("ctx"), &RowError{Reason: ReasonCSVSyntax, Detail: "x"})
	if ReasonOf(wrapped) != ReasonCSVSyntax {
		t.Errorf("ReasonOf through a wrap: %q", ReasonOf(wrapped))
	}
	if ReasonOf(errors.New("plain")) != "" || ReasonOf(nil) != "" {
		t.Error("ReasonOf of a non-RowError")
	}
}

// Regression: the quote-free fast path of SplitLine used to accept an
// unquoted newline as field content ("t1\nx" as one transaction id), while
// the quoted path (encoding/csv) rejects the same record as two lines. A
// record value is one CSV line: both paths now reject it.
func TestUnquotedNewlineRejected(t *testing.T) {
	for _, line := range []string{"t1\nx,1", "t1\r\nx,1", "t1,1\n", "\"t1\",1\nx"} {
		_, err := MustSchema("transaction_id", "amount").ParseLine([]byte(line), 0)
		if ReasonOf(err) != ReasonCSVSyntax {
			t.Errorf("ParseLine(%q) = %v, want csv_syntax", line, err)
		}
	}
}

// BenchmarkParseLine parses a row of the generator's shape (RFC 3339
// timestamp in UTC), the consumer's per-record validation.
func BenchmarkParseLine(b *testing.B) {
	s := MustSchema(DefaultColumns...)
	line := []byte("TX-00000001,ACC-001439,8.02,2024-01-01T00:00:00Z")
	var scratch []string
	b.ReportAllocs()
	for b.Loop() {
		row, err := s.ParseLineInto(scratch[:0], line, 0)
		if err != nil || !row.HasTime {
			b.Fatal(row, err)
		}
		scratch = row.Fields
	}
}
