package synth

import (
	"strings"
	"testing"
)

// A small file whose results are computed by hand below. It exercises a BOM,
// CRLF line ends, free column order, an extra column, a quoted comma, a
// quoted field spanning lines, an empty line, an exact duplicate, a
// conflicting reuse of a transaction id, a row without account, surrounding
// spaces, and one bad row of every reason.
const handCSV = "\ufeffaccount_id,amount,transaction_id,timestamp,note\r\n" +
	"A,10.50,t1,2024-01-01T00:00:00Z,first\r\n" +
	"B,-3,t2,2024-01-01 00:00:01,\"with, comma\"\r\n" +
	"\r\n" +
	"A,.25,t3,,\"multi\r\nline\"\r\n" +
	"A,10.50,t1,2024-01-01T00:00:00Z,first\r\n" + // exact duplicate of t1
	"A,99,t1,2024-01-01T00:00:00Z,first\r\n" + // conflict: t1 with another amount
	",5,t4,1700000000,\r\n" + // no account: keyed by t4
	"C,1e3,t5,,x\r\n" + // invalid_amount
	"C,,t6,,x\r\n" + // missing_amount
	"C,1,  ,,x\r\n" + // empty_transaction_id
	"C,1,t7,yesterday,x\r\n" + // invalid_timestamp
	"C,1,t8,,x,extra\r\n" + // field_count
	"C,1,t9,,\"bad\"quote\r\n" + // csv_syntax
	"C,1,t10,,\xff\r\n" + // invalid_utf8
	"C,+2.005,t11,2024-01-02,\r\n" +
	" B , 1.25 , t12 ,,\r\n" +
	"C,1,t13,,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n" + // line_too_long at 60
	"D,7,t14,2024-01-03T00:00:00.5+02:00,no newline at end"

func TestExpectedHandComputed(t *testing.T) {
	res, err := ExpectedWith(strings.NewReader(handCSV), Options{MaxLineBytes: 60})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 17 || res.Valid != 7 || res.Duplicates != 1 || res.Conflicts != 1 || res.Bad != 8 {
		t.Errorf("counts: rows %d valid %d dup %d conflict %d bad %d; want 17 7 1 1 8",
			res.Rows, res.Valid, res.Duplicates, res.Conflicts, res.Bad)
	}
	wantReasons := map[string]int{
		ReasonInvalidAmount: 1, ReasonMissingAmount: 1, ReasonEmptyTransactionID: 1,
		ReasonInvalidTimestamp: 1, ReasonFieldCount: 1, ReasonCSVSyntax: 1,
		ReasonInvalidUTF8: 1, ReasonLineTooLong: 1,
	}
	for r, n := range wantReasons {
		if res.BadByReason[r] != n {
			t.Errorf("reason %s: %d, want %d", r, res.BadByReason[r], n)
		}
	}
	want := map[string]struct {
		n     int64
		total string
	}{
		"A":  {2, "10.75"}, // 10.50 + .25 (the duplicate and the conflict do not count)
		"B":  {2, "-1.75"}, // -3 + 1.25
		"C":  {1, "2.005"},
		"D":  {1, "7"},
		"t4": {1, "5"},
	}
	if len(res.Accounts) != len(want) {
		t.Errorf("keys %v, want %d", res.SortedAccounts(), len(want))
	}
	for k, w := range want {
		a := res.Accounts[k]
		if a == nil || a.Count != w.n || res.Total(k) != w.total {
			t.Errorf("%s: got %+v (%s), want %d %s", k, a, res.Total(k), w.n, w.total)
		}
	}
	if g := res.GrandTotal(); g != "23.005" {
		t.Errorf("grand total %s, want 23.005", g)
	}
	var md strings.Builder
	if err := res.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| A | 2 | 10.75 |", "| bad rows | 8 |", "| **all** | 7 | 23.005 |"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
}

func TestExpectedMinimalShape(t *testing.T) {
	res, err := Expected(strings.NewReader("transaction_id,amount\na,1.10\nb,2\na,1.10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Valid != 2 || res.Duplicates != 1 || res.Total("a") != "1.10" || res.Total("b") != "2" {
		t.Errorf("%+v", res)
	}
}

func TestExpectedUnterminatedQuote(t *testing.T) {
	res, err := Expected(strings.NewReader("transaction_id,amount\na,1\nb,\"2\nc,3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Valid != 1 || res.Bad != 1 || res.BadByReason[ReasonCSVSyntax] != 1 {
		t.Errorf("%+v", res)
	}
}

func TestExpectedErrors(t *testing.T) {
	for _, in := range []string{"", "transaction_id,account_id\n", "amount\n1\n", "\"a\n"} {
		if _, err := Expected(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
