package producer

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/txstream/txstream/synth"
)

const genSummary = `producer gen: write deterministic synthetic transactions as CSV.

Columns transaction_id,account_id,amount,timestamp; accounts ACC-001... drawn
from a Zipf distribution; amounts with two decimals (about 5% negative);
timestamps increasing by --interval from --epoch. --bad-fraction of the rows
are malformed (empty id, bad amount, wrong field count, bad timestamp) and
--dup-fraction repeat an earlier valid row exactly. The same flags always
give the same bytes. A one-line report of what was written goes to stderr.

Usage: producer gen [flags]`

// parseSubcommand parses the flags of gen or expect, whose help is summary
// and then the flags. done says the command ends there with code: after
// --help, or a flag error that the flag set has already reported.
func parseSubcommand(fs *flag.FlagSet, summary string, args []string) (code int, done bool) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), summary)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, true
		}
		return ExitUsage, true
	}
	return 0, false
}

func genMain(args []string, e Env) int {
	def := synth.DefaultConfig()
	fs := flag.NewFlagSet("producer gen", flag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	rows := fs.Int("rows", def.Rows, "data rows to write (header excluded), bad and duplicate rows included")
	accounts := fs.Int("accounts", def.Accounts, "number of distinct accounts")
	zipfS := fs.Float64("zipf-s", def.ZipfS, "Zipf exponent of the account distribution (0 = uniform; larger = more skewed)")
	seed := fs.Uint64("seed", def.Seed, "random seed")
	bad := fs.Float64("bad-fraction", 0, "fraction of malformed rows (0..1)")
	dup := fs.Float64("dup-fraction", 0, "fraction of exact duplicates of earlier valid rows (0..1)")
	epoch := fs.String("epoch", def.Epoch.Format(time.RFC3339), "timestamp of the first row (RFC 3339)")
	interval := fs.Duration("interval", def.Interval, "timestamp step between rows")
	out := fs.String("out", "-", "output file (- = stdout); a file is written to a temporary name and renamed when complete")
	if code, done := parseSubcommand(fs, genSummary, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.Stderr, "producer gen: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	ep, err := time.Parse(time.RFC3339, *epoch)
	if err != nil {
		fmt.Fprintf(e.Stderr, "producer gen: --epoch: %v\n", err)
		return ExitUsage
	}
	cfg := synth.Config{Rows: *rows, Accounts: *accounts, ZipfS: *zipfS, Seed: *seed,
		BadFraction: *bad, DupFraction: *dup, Epoch: ep.UTC(), Interval: *interval}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.Stderr, "producer gen:", err)
		return ExitUsage
	}
	st, err := writeGenerated(cfg, *out, e.Stdout)
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer gen:", err)
		return ExitFailure
	}
	fmt.Fprintf(e.Stderr, "producer gen: %d rows (%d valid, %d duplicates, %d bad: %d empty id, %d bad amount, %d field count, %d bad timestamp), %d accounts used, %d bytes\n",
		st.Rows, st.Valid, st.Duplicates, st.Bad, st.BadByKind[synth.BadEmptyID], st.BadByKind[synth.BadAmount],
		st.BadByKind[synth.BadFieldCount], st.BadByKind[synth.BadTimestamp], len(st.Accounts), st.Bytes)
	return ExitOK
}

func writeGenerated(cfg synth.Config, out string, stdout io.Writer) (synth.Stats, error) {
	if out == "-" {
		return synth.Generate(cfg, stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp*")
	if err != nil {
		return synth.Stats{}, err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	st, err := synth.Generate(cfg, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	return st, err
}

const expectSummary = `producer expect: print what a correct exactly-once consumer computes from a CSV file.

Counts of valid, duplicate, conflicting and bad rows (by reason), and per
account the number of valid unique transactions and their exact decimal total.
The computation is independent of the producer's and consumer's parser (see
package synth), so it can check their output.

Usage: producer expect [flags] FILE|-`

func expectMain(args []string, e Env) int {
	fs := flag.NewFlagSet("producer expect", flag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	maxLine := fs.Int("max-line-bytes", synth.DefaultMaxLineBytes, "longest valid CSV record in bytes")
	asJSON := fs.Bool("json", false, "print JSON instead of Markdown tables")
	if code, done := parseSubcommand(fs, expectSummary, args); done {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.Stderr, "producer expect: want exactly one FILE argument (- = stdin)")
		return ExitUsage
	}
	var in io.Reader = e.Stdin
	if p := fs.Arg(0); p != "-" {
		f, err := os.Open(p)
		if err != nil {
			fmt.Fprintln(e.Stderr, "producer expect:", err)
			return ExitFailure
		}
		defer f.Close()
		in = f
	}
	res, err := synth.ExpectedWith(bufio.NewReaderSize(in, 1<<20), synth.Options{MaxLineBytes: *maxLine})
	if err != nil {
		fmt.Fprintln(e.Stderr, "producer expect:", err)
		return ExitFailure
	}
	if !*asJSON {
		if err := res.WriteMarkdown(e.Stdout); err != nil {
			fmt.Fprintln(e.Stderr, "producer expect:", err)
			return ExitFailure
		}
		return ExitOK
	}
	type acct struct {
		Count int64  `json:"count"`
		Total string `json:"total"`
	}
	doc := struct {
		Rows        int             `json:"rows"`
		Valid       int             `json:"valid"`
		Duplicates  int             `json:"duplicates"`
		Conflicts   int             `json:"conflicts"`
		Bad         int             `json:"bad"`
		BadByReason map[string]int  `json:"bad_by_reason"`
		Accounts    map[string]acct `json:"accounts"`
		Total       string          `json:"total"`
	}{res.Rows, res.Valid, res.Duplicates, res.Conflicts, res.Bad, res.BadByReason, map[string]acct{}, res.GrandTotal()}
	for k, a := range res.Accounts {
		doc.Accounts[k] = acct{a.Count, res.Total(k)}
	}
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		fmt.Fprintln(e.Stderr, "producer expect:", err)
		return ExitFailure
	}
	return ExitOK
}
