package synth

import (
	"strings"
	"testing"
)

// handOutput is what a correct consumer writes for handCSV, in the
// consumer's format (fields the checker does not read included).
var handOutput = []string{
	`{"transaction_id":"t1","account_id":"A","amount":"10.50","timestamp":"2024-01-01T00:00:00Z","account_count":1,"account_total":"10.50","account_min":"10.50","account_max":"10.50","partition":0,"offset":1}`,
	`{"transaction_id":"t2","account_id":"B","amount":"-3","account_count":1,"account_total":"-3"}`,
	`{"transaction_id":"t3","account_id":"A","amount":".25","account_count":2,"account_total":"10.75"}`,
	`{"transaction_id":"t4","account_id":"t4","amount":"5","account_count":1,"account_total":"5"}`,
	`{"transaction_id":"t11","account_id":"C","amount":"+2.005","account_count":1,"account_total":"2.005"}`,
	`{"transaction_id":"t12","account_id":"B","amount":"1.25","account_count":2,"account_total":"-1.750"}`, // same value as -1.75
	`{"transaction_id":"t14","account_id":"D","amount":"7","account_count":1,"account_total":"7"}`,
}

func handResult(t *testing.T) *Result {
	t.Helper()
	res, err := ExpectedWith(strings.NewReader(handCSV), Options{MaxLineBytes: 60})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// check feeds outputs and dead letters (9: 8 bad rows and 1 conflict, as
// when the rows are written to the topic unfiltered) to a checker.
func check(t *testing.T, outputs []string, deadLetters []string, opt CheckOptions) *Report {
	t.Helper()
	c := NewOutputChecker()
	for _, o := range outputs {
		_ = c.AddOutput([]byte(o))
	}
	for _, d := range deadLetters {
		c.AddDeadLetter(d)
	}
	return c.Check(handResult(t), opt)
}

func sources(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "transactions/0/" + string(rune('a'+i))
	}
	return s
}

func TestCheckCorrectOutput(t *testing.T) {
	rep := check(t, handOutput, sources(9), CheckOptions{})
	if !rep.OK() || rep.Err() != nil {
		t.Fatalf("a correct output is reported wrong: %v", rep.Problems)
	}
	if rep.Records != 7 || rep.Distinct != 7 || rep.Want != 7 || rep.DeadLetters != 9 || rep.WantDeadLetters != 9 || rep.DeadLetterSrcs != 9 {
		t.Errorf("report = %+v", rep)
	}
	if len(rep.Accounts) != 5 || rep.Accounts[0].Account != "A" || !rep.Accounts[0].OK ||
		rep.Accounts[0].Count != 2 || rep.Accounts[0].Total != "10.75" || rep.Accounts[0].WantTotal != "10.75" || rep.Accounts[0].Records != 2 {
		t.Errorf("accounts = %+v", rep.Accounts)
	}

	// Through the producer, only the conflict is a dead letter, plus the
	// malformed records sent besides the file; sources may be unknown.
	rep = check(t, handOutput, []string{"", "", ""}, CheckOptions{BadRowsFiltered: true, ExtraDeadLetters: 2})
	if !rep.OK() || rep.WantDeadLetters != 3 {
		t.Errorf("filtered: want 3 dead letters, ok: %d %v", rep.WantDeadLetters, rep.Problems)
	}

	// Order between accounts does not matter.
	rev := append([]string(nil), handOutput...)
	rev[0], rev[1] = rev[1], rev[0]
	if rep := check(t, rev, sources(9), CheckOptions{}); !rep.OK() {
		t.Errorf("reordered across accounts: %v", rep.Problems)
	}
}

func TestCheckCount(t *testing.T) {
	c := NewOutputChecker()
	for _, o := range append(handOutput, handOutput[3]) {
		if err := c.AddOutput([]byte(o)); err != nil {
			t.Fatal(err)
		}
	}
	if c.Count("t1") != 1 || c.Count("t4") != 2 || c.Count("t99") != 0 || c.Records() != len(handOutput)+1 {
		t.Errorf("counts t1 %d, t4 %d, t99 %d, records %d; want 1, 2, 0, %d",
			c.Count("t1"), c.Count("t4"), c.Count("t99"), c.Records(), len(handOutput)+1)
	}
}

func TestCheckFindsEveryKindOfError(t *testing.T) {
	with := func(f func(o []string) []string) []string { return f(append([]string(nil), handOutput...)) }
	cases := []struct {
		name    string
		outputs []string
		dlq     []string
		opt     CheckOptions
		want    []string // substrings of the problems
	}{
		{"repeated", with(func(o []string) []string { return append(o, o[3]) }), sources(9), CheckOptions{},
			[]string{"output more than once (not exactly-once): t4×2", "want 7, each once", "accounts have wrong aggregates: t4"}},
		{"missing", with(func(o []string) []string { return append(o[:6:6], o[7:]...) }), sources(9), CheckOptions{},
			[]string{"1 of 7 valid transactions are missing from the output: t14", "accounts have wrong aggregates: D"}},
		{"unknown id", with(func(o []string) []string {
			return append(o, `{"transaction_id":"t99","account_id":"Z","account_count":1,"account_total":"1"}`)
		}), sources(9), CheckOptions{},
			[]string{"not valid transactions of the input: t99", "accounts in the output are not in the input: Z"}},
		{"wrong running total", with(func(o []string) []string {
			o[2] = strings.Replace(o[2], `"10.75"`, `"10.76"`, 1)
			return o
		}), sources(9), CheckOptions{},
			[]string{"1 of 7 output records carry a running aggregate", "t3 (account A count 2 total 10.76, want A 2 10.75)", "accounts have wrong aggregates: A"}},
		{"wrong running count", with(func(o []string) []string {
			o[0] = strings.Replace(o[0], `"account_count":1`, `"account_count":2`, 1)
			return o
		}), sources(9), CheckOptions{}, []string{"t1 (account A count 2 total 10.50, want A 1 10.50)"}},
		{"undecodable", with(func(o []string) []string { return append(o, `{"transaction_id":`) }), sources(9), CheckOptions{},
			[]string{"1 output records did not decode", "not JSON"}},
		{"dead letters", handOutput, sources(8), CheckOptions{}, []string{"8 dead letters, want 9"}},
		{"dead letter twice", handOutput, append(sources(8), sources(1)...), CheckOptions{},
			[]string{"9 records from 8 distinct sources", "transactions/0/a×2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := check(t, tc.outputs, tc.dlq, tc.opt)
			if rep.OK() || rep.Err() == nil {
				t.Fatal("a wrong output is reported right")
			}
			all := strings.Join(rep.Problems, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems do not mention %q:\n%s", w, all)
				}
			}
		})
	}

	// SkipRunning leaves a wrong intermediate aggregate alone when the
	// final ones are right.
	out := append([]string(nil), handOutput...)
	out[0] = strings.Replace(out[0], `"account_total":"10.50"`, `"account_total":"9"`, 1)
	if rep := check(t, out, sources(9), CheckOptions{SkipRunning: true}); !rep.OK() {
		t.Errorf("SkipRunning: %v", rep.Problems)
	}
	if rep := check(t, out, sources(9), CheckOptions{}); rep.OK() || rep.WrongRunning != 1 {
		t.Errorf("running check: wrong %d, problems %v", rep.WrongRunning, rep.Problems)
	}
}

func TestCheckGeneratedData(t *testing.T) {
	// A generated file whose output is simulated from Result.Running in
	// file order is right; a consumer that lost one input record carries
	// wrong aggregates in every later record of that account.
	var b strings.Builder
	cfg := DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.BadFraction, cfg.DupFraction = 2000, 20, 0.01, 0.02
	if _, err := Generate(cfg, &b); err != nil {
		t.Fatal(err)
	}
	exp, err := Expected(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	var order []Output
	seen := map[string]bool{}
	for _, line := range strings.Split(b.String(), "\n")[1:] {
		id, _, _ := strings.Cut(line, ",")
		if r, ok := exp.Running[id]; ok && !seen[id] {
			seen[id] = true
			order = append(order, Output{TransactionID: id, AccountID: r.Account, AccountCount: r.Count, AccountTotal: r.Total.Text('f')})
		}
	}
	if len(order) != exp.Valid {
		t.Fatalf("%d outputs simulated, want %d", len(order), exp.Valid)
	}
	c := NewOutputChecker()
	for _, o := range order {
		c.Add(o)
	}
	if rep := c.Check(exp, CheckOptions{BadRowsFiltered: true}); !rep.OK() {
		t.Fatalf("simulated correct output: %v", rep.Problems)
	}

	// Lose the input record of order[100]: its account's later records
	// count one less.
	lost := order[100]
	c = NewOutputChecker()
	later := 0
	for _, o := range order {
		switch {
		case o.TransactionID == lost.TransactionID:
			continue
		case o.AccountID == lost.AccountID && o.AccountCount > lost.AccountCount:
			o.AccountCount--
			later++
		}
		c.Add(o)
	}
	rep := c.Check(exp, CheckOptions{BadRowsFiltered: true})
	if rep.OK() || rep.Missing != 1 || rep.WrongRunning != later || later == 0 {
		t.Errorf("lost input record: missing %d, wrong running %d (want 1, %d): %v", rep.Missing, rep.WrongRunning, later, rep.Problems)
	}
}
