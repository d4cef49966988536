package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cockroachdb/apd/v3"
)

// This file checks what a consumer wrote against a Result: the other half
// of the oracle. Like Expected it shares nothing with the consumer: it
// decodes the output JSON itself and knows only the documented fields of
// an output record. Reading the topics (read_committed, until quiet) is
// the caller's business; the checker takes the values it read (the
// package documentation shows the use).

// Output is the part of one output record the checker reads: the
// transaction and its account's running aggregate right after it.
type Output struct {
	TransactionID string `json:"transaction_id"`
	AccountID     string `json:"account_id"`
	AccountCount  int64  `json:"account_count"`
	AccountTotal  string `json:"account_total"` // exact decimal text
}

// DecodeOutput decodes the JSON value of an output record.
func DecodeOutput(value []byte) (Output, error) {
	var o Output
	if err := json.Unmarshal(value, &o); err != nil {
		return Output{}, fmt.Errorf("output record is not JSON: %w", err)
	}
	if o.TransactionID == "" {
		return Output{}, fmt.Errorf("output record has no transaction_id: %.200s", value)
	}
	return o, nil
}

// OutputChecker collects the records of the output and dead-letter topics
// and compares them with a Result. Add them in the order they were read
// (per partition, offset order); it is not safe for concurrent use.
type OutputChecker struct {
	records     int
	undecodable int
	firstBad    error
	ids         map[string]int    // output records per transaction id
	first       map[string]Output // first output record of each id
	last        map[string]Output // per account: the record with the highest count
	perAccount  map[string]int64  // output records per account
	dlq         int
	dlqSources  map[string]int // dead letters per non-empty source
}

// NewOutputChecker returns an empty checker.
func NewOutputChecker() *OutputChecker {
	return &OutputChecker{ids: map[string]int{}, first: map[string]Output{}, last: map[string]Output{},
		perAccount: map[string]int64{}, dlqSources: map[string]int{}}
}

// AddOutput decodes and adds one output record value. A value that does
// not decode is counted (a problem in the report) and its error returned.
func (c *OutputChecker) AddOutput(value []byte) error {
	o, err := DecodeOutput(value)
	if err != nil {
		c.records++
		c.undecodable++
		if c.firstBad == nil {
			c.firstBad = err
		}
		return err
	}
	c.Add(o)
	return nil
}

// Add adds one decoded output record.
func (c *OutputChecker) Add(o Output) {
	c.records++
	c.ids[o.TransactionID]++
	if _, ok := c.first[o.TransactionID]; !ok {
		c.first[o.TransactionID] = o
	}
	c.perAccount[o.AccountID]++
	if l, ok := c.last[o.AccountID]; !ok || o.AccountCount > l.AccountCount {
		c.last[o.AccountID] = o
	}
}

// AddDeadLetter adds one record of the dead-letter topic. source names the
// input record it came from (for example the consumer's source headers
// joined as topic/partition/offset), so that a dead letter written twice
// is caught; "" when unknown.
func (c *OutputChecker) AddDeadLetter(source string) {
	c.dlq++
	if source != "" {
		c.dlqSources[source]++
	}
}

// Records is the number of output records added; DeadLetters the number of
// dead letters.
func (c *OutputChecker) Records() int     { return c.records }
func (c *OutputChecker) DeadLetters() int { return c.dlq }

// Count is the number of output records of transaction id added so far: 1
// for each valid transaction of an exactly-once output, 2 for the
// transactions a deliberate reprocessing outputs again.
func (c *OutputChecker) Count(id string) int { return c.ids[id] }

// CheckOptions say how the input reached the consumer.
type CheckOptions struct {
	// BadRowsFiltered: the CSV went through the producer, which rejects
	// bad rows before Kafka, so only conflicting duplicates become dead
	// letters. Otherwise (rows written to the topic as they are) every bad
	// row does too.
	BadRowsFiltered bool
	// ExtraDeadLetters is the number of malformed records written to the
	// input topic besides the CSV's rows.
	ExtraDeadLetters int
	// SkipRunning leaves out the check of every record's running aggregate
	// against Result.Running (which assumes each account's rows reached its
	// partition in file order); the final aggregates are still checked.
	SkipRunning bool
}

// AccountCheck is one expected account: what the input gives and what the
// output's last record of the account (the highest account_count) says.
type AccountCheck struct {
	Account   string
	WantCount int64
	WantTotal string
	Count     int64  // highest account_count in the output (0: none)
	Total     string // account_total of that record ("" when none)
	Records   int64  // output records of the account
	OK        bool   // Count, Records and Total as expected
}

// Report is the outcome of OutputChecker.Check.
type Report struct {
	Records         int            // output records read
	Distinct        int            // distinct transaction ids among them
	Want            int            // valid unique transactions of the input
	Repeated        map[string]int // ids output more than once, with their count
	Missing         int            // valid transactions not in the output
	Unexpected      []string       // ids in the output that are not valid transactions of the input, sorted
	Undecodable     int            // output records that did not decode
	WrongRunning    int            // records whose running aggregate differs from a failure-free pass
	DeadLetters     int            // dead-letter records read
	DeadLetterSrcs  int            // distinct sources among them (0 when none was named)
	WantDeadLetters int
	Accounts        []AccountCheck // every account of the input, sorted
	ExtraAccounts   []string       // accounts in the output and not in the input, sorted
	// Problems says every discrepancy in words (a few examples per kind
	// and a count); empty when the output is exactly right.
	Problems []string
}

// OK reports whether the output is exactly what the input gives.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxExamples bounds the examples of one kind of problem in Report.Problems.
const maxExamples = 5

// Check compares what was added with exp: every valid unique transaction
// exactly once, each record carrying its account's running count and
// exact total of a failure-free pass, the expected number of dead letters
// (each source once), and per account the final count and total.
func (c *OutputChecker) Check(exp *Result, opt CheckOptions) *Report {
	r := &Report{Records: c.records, Distinct: len(c.ids), Want: exp.Valid, Repeated: map[string]int{},
		Undecodable: c.undecodable, DeadLetters: c.dlq, DeadLetterSrcs: len(c.dlqSources)}
	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }

	if c.undecodable > 0 {
		problem("%d output records did not decode (first: %v)", c.undecodable, c.firstBad)
	}
	ids := make([]string, 0, len(c.ids))
	for id := range c.ids {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var repeated []string
	for _, id := range ids {
		if n := c.ids[id]; n > 1 {
			r.Repeated[id] = n
			repeated = append(repeated, fmt.Sprintf("%s×%d", id, n))
		}
		if _, ok := exp.Running[id]; !ok {
			r.Unexpected = append(r.Unexpected, id)
		}
	}
	if len(repeated) > 0 {
		problem("%d transactions output more than once (not exactly-once): %s", len(repeated), examples(repeated))
	}
	if len(r.Unexpected) > 0 {
		problem("%d transaction ids in the output are not valid transactions of the input: %s", len(r.Unexpected), examples(r.Unexpected))
	}
	for id := range exp.Running {
		if c.ids[id] == 0 {
			r.Missing++
		}
	}
	if r.Missing > 0 {
		var some []string
		for id := range exp.Running {
			if c.ids[id] == 0 {
				some = append(some, id)
			}
		}
		sort.Strings(some)
		problem("%d of %d valid transactions are missing from the output: %s", r.Missing, exp.Valid, examples(some))
	}
	if len(c.ids) != exp.Valid || r.Records-r.Undecodable != exp.Valid {
		problem("output: %d distinct transactions in %d records, want %d, each once", len(c.ids), r.Records, exp.Valid)
	}

	// Every record's running aggregate, not only the last ones: a lost or
	// repeated input record shows in every later aggregate of its account.
	if !opt.SkipRunning {
		var wrong []string
		for _, id := range ids {
			got := c.first[id]
			want, ok := exp.Running[id]
			if !ok {
				continue // reported as unexpected
			}
			if got.AccountID != want.Account || got.AccountCount != want.Count || !decimalEqual(got.AccountTotal, &want.Total) {
				wrong = append(wrong, fmt.Sprintf("%s (account %s count %d total %s, want %s %d %s)",
					id, got.AccountID, got.AccountCount, got.AccountTotal, want.Account, want.Count, want.Total.Text('f')))
			}
		}
		r.WrongRunning = len(wrong)
		if len(wrong) > 0 {
			problem("%d of %d output records carry a running aggregate other than a failure-free pass gives: %s",
				len(wrong), len(ids), examples(wrong))
		}
	}

	r.WantDeadLetters = exp.Conflicts + opt.ExtraDeadLetters
	if !opt.BadRowsFiltered {
		r.WantDeadLetters += exp.Bad
	}
	if c.dlq != r.WantDeadLetters {
		problem("%d dead letters, want %d", c.dlq, r.WantDeadLetters)
	}
	if len(c.dlqSources) > 0 && (len(c.dlqSources) != c.dlq) {
		var twice []string
		for src, n := range c.dlqSources {
			if n > 1 {
				twice = append(twice, fmt.Sprintf("%s×%d", src, n))
			}
		}
		sort.Strings(twice)
		problem("dead letters: %d records from %d distinct sources, want each source once (repeated: %s)",
			c.dlq, len(c.dlqSources), examples(twice))
	}

	var wrongAcc []string
	for _, a := range exp.SortedAccounts() {
		e := exp.Accounts[a]
		ac := AccountCheck{Account: a, WantCount: e.Count, WantTotal: e.Total.Text('f'), Records: c.perAccount[a]}
		if l, ok := c.last[a]; ok {
			ac.Count, ac.Total = l.AccountCount, l.AccountTotal
		}
		ac.OK = ac.Count == e.Count && ac.Records == e.Count && decimalEqual(ac.Total, &e.Total)
		if !ac.OK {
			wrongAcc = append(wrongAcc, fmt.Sprintf("%s (last count %d total %q in %d records, want %d and %s)",
				a, ac.Count, ac.Total, ac.Records, ac.WantCount, ac.WantTotal))
		}
		r.Accounts = append(r.Accounts, ac)
	}
	if len(wrongAcc) > 0 {
		problem("%d of %d accounts have wrong aggregates: %s", len(wrongAcc), len(exp.Accounts), examples(wrongAcc))
	}
	for a := range c.perAccount {
		if exp.Accounts[a] == nil {
			r.ExtraAccounts = append(r.ExtraAccounts, a)
		}
	}
	sort.Strings(r.ExtraAccounts)
	if len(r.ExtraAccounts) > 0 {
		problem("%d accounts in the output are not in the input: %s", len(r.ExtraAccounts), examples(r.ExtraAccounts))
	}
	return r
}

// Err returns nil when the output is right, else an error listing the
// problems.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	return errors.New(strings.Join(r.Problems, "; "))
}

func examples(s []string) string {
	if len(s) <= maxExamples {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:maxExamples], ", ") + fmt.Sprintf(", ... (%d more)", len(s)-maxExamples)
}

// decimalEqual compares decimal text with d exactly (2.50 equals 2.5).
func decimalEqual(s string, d *apd.Decimal) bool {
	var x apd.Decimal
	if _, _, err := x.SetString(strings.TrimSpace(s)); err != nil {
		return false
	}
	return x.Cmp(d) == 0
}
