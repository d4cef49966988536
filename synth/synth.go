package synth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

// Header is the header line written by Generate.
const Header = "transaction_id,account_id,amount,timestamp"

// DefaultEpoch is the timestamp of the first generated row.
var DefaultEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxAccounts bounds Config.Accounts (the Zipf table holds one float64 per
// account).
const MaxAccounts = 10_000_000

// dupWindow is how many recent valid rows a duplicate may repeat. Real
// duplicates (retries, replays) are recent; the window also bounds memory.
const dupWindow = 1024

// Config describes a data set. The zero value is not useful; start from
// DefaultConfig.
type Config struct {
	Rows        int           // data rows to write (header excluded), all kinds included
	Accounts    int           // distinct account ids to draw from (ACC-001 ...)
	ZipfS       float64       // Zipf exponent; 0 = uniform, larger = more skewed
	Seed        uint64        // same seed, same bytes
	BadFraction float64       // probability that a row is malformed
	DupFraction float64       // probability that a row repeats an earlier valid row
	Epoch       time.Time     // timestamp of row 1
	Interval    time.Duration // timestamp step between consecutive rows (> 0)
}

// DefaultConfig returns the generator defaults (the same as `producer gen`).
func DefaultConfig() Config {
	return Config{
		Rows:     1000,
		Accounts: 10,
		ZipfS:    1.1,
		Seed:     1,
		Epoch:    DefaultEpoch,
		Interval: time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Rows < 0:
		return errors.New("rows must be >= 0")
	case c.Accounts < 1 || c.Accounts > MaxAccounts:
		return fmt.Errorf("accounts must be between 1 and %d", MaxAccounts)
	case math.IsNaN(c.ZipfS) || c.ZipfS < 0 || c.ZipfS > 100:
		return errors.New("zipf-s must be between 0 and 100")
	case !(c.BadFraction >= 0 && c.BadFraction <= 1):
		return errors.New("bad-fraction must be between 0 and 1")
	case !(c.DupFraction >= 0 && c.DupFraction <= 1):
		return errors.New("dup-fraction must be between 0 and 1")
	case c.BadFraction+c.DupFraction > 1:
		return errors.New("bad-fraction + dup-fraction must not exceed 1")
	case c.Interval <= 0:
		return errors.New("interval must be > 0")
	case c.Epoch.IsZero():
		return errors.New("epoch must be set")
	}
	return nil
}

// BadKind is a kind of malformed row the generator writes.
type BadKind string

// Malformed row kinds.
const (
	BadEmptyID    BadKind = "empty_id"      // transaction_id is empty
	BadAmount     BadKind = "bad_amount"    // amount missing or not a decimal
	BadFieldCount BadKind = "field_count"   // a field too few or too many
	BadTimestamp  BadKind = "bad_timestamp" // timestamp does not parse
)

// BadKinds lists every kind, in the order the generator draws them.
var BadKinds = []BadKind{BadEmptyID, BadAmount, BadFieldCount, BadTimestamp}

// AccountStats is the generator's own bookkeeping for one account, in
// integer cents. It is computed while generating, independently of Expected,
// which parses the CSV back with exact decimals; tests compare the two.
type AccountStats struct {
	Count      int64 // valid unique transactions
	TotalCents int64 // sum of their amounts in cents
}

// Stats is what Generate wrote.
type Stats struct {
	Rows       int // data rows written (Valid + Duplicates + Bad)
	Valid      int // valid rows with a transaction_id not seen before
	Duplicates int // exact repeats of an earlier valid row
	Bad        int // malformed rows
	BadByKind  map[BadKind]int
	Accounts   map[string]AccountStats // only accounts with at least one valid row
	Bytes      int64                   // bytes written, header included
}

// FormatCents renders cents as a decimal with two fraction digits.
func FormatCents(c int64) string {
	sign := ""
	u := uint64(c)
	if c < 0 {
		sign = "-"
		u = uint64(-c) // two's complement also handles math.MinInt64
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}

// AccountName returns the id of account i (0-based) out of n: ACC-001 ...,
// zero-padded to at least three digits and to the width of n.
func AccountName(i, n int) string {
	w := len(strconv.Itoa(n))
	if w < 3 {
		w = 3
	}
	return fmt.Sprintf("ACC-%0*d", w, i+1)
}

// Generate writes cfg.Rows data rows after a header line to w.
func Generate(cfg Config, w io.Writer) (Stats, error) {
	if err := cfg.Validate(); err != nil {
		return Stats{}, err
	}
	g := newGen(cfg)
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	st := Stats{BadByKind: map[BadKind]int{}, Accounts: map[string]AccountStats{}}
	for _, k := range BadKinds {
		st.BadByKind[k] = 0
	}
	bw.WriteString(Header)
	bw.WriteByte('\n')

	var line []byte
	recent := make([][]byte, 0, dupWindow) // ring of recent valid lines
	next := 0
	for i := 0; i < cfg.Rows; i++ {
		ts := cfg.Epoch.Add(time.Duration(i) * cfg.Interval)
		u := g.float()
		switch {
		case u < cfg.BadFraction:
			kind := BadKinds[g.intn(len(BadKinds))]
			line = g.badRow(line[:0], kind, ts)
			st.Bad++
			st.BadByKind[kind]++
		case u < cfg.BadFraction+cfg.DupFraction && len(recent) > 0:
			line = append(line[:0], recent[g.intn(len(recent))]...)
			st.Duplicates++
		default:
			acct := g.account()
			cents := g.cents()
			line = g.validRow(line[:0], acct, cents, ts)
			st.Valid++
			a := st.Accounts[acct]
			a.Count++
			a.TotalCents += cents
			st.Accounts[acct] = a
			cp := append([]byte(nil), line...)
			if len(recent) < dupWindow {
				recent = append(recent, cp)
			} else {
				recent[next] = cp
				next = (next + 1) % dupWindow
			}
		}
		st.Rows++
		bw.Write(line)
		bw.WriteByte('\n')
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	st.Bytes = cw.n
	return st, nil
}

// SortedAccounts returns the account ids of st in order.
func (s Stats) SortedAccounts() []string {
	out := make([]string, 0, len(s.Accounts))
	for a := range s.Accounts {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type gen struct {
	cfg   Config
	src   *rand.PCG
	cdf   []float64 // Zipf cumulative distribution over accounts
	names []string
	seq   int64 // transaction id counter, shared by valid and bad rows
	idW   int
}

func newGen(cfg Config) *gen {
	g := &gen{
		cfg: cfg,
		src: rand.NewPCG(cfg.Seed, 0x7478_7374_7265_616d), // "txstream"
		cdf: make([]float64, cfg.Accounts),
	}
	sum := 0.0
	for k := range g.cdf {
		sum += math.Pow(float64(k+1), -cfg.ZipfS)
		g.cdf[k] = sum
	}
	for k := range g.cdf {
		g.cdf[k] /= sum
	}
	g.cdf[len(g.cdf)-1] = 1
	g.names = make([]string, cfg.Accounts)
	for k := range g.names {
		g.names[k] = AccountName(k, cfg.Accounts)
	}
	g.idW = len(strconv.Itoa(cfg.Rows))
	if g.idW < 8 {
		g.idW = 8
	}
	return g
}

// float returns a uniform float64 in [0, 1) from the top 53 bits.
func (g *gen) float() float64 { return float64(g.src.Uint64()>>11) / (1 << 53) }

// intn returns a uniform int in [0, n) (multiply-shift; the bias is below
// 2^-40 for the sizes used here).
func (g *gen) intn(n int) int {
	hi, _ := bits.Mul64(g.src.Uint64(), uint64(n))
	return int(hi)
}

// account draws an account by inverting the Zipf CDF. Ranks are not
// shuffled: ACC-001 is the hottest account, which keeps READMEs readable.
func (g *gen) account() string {
	u := g.float()
	k := sort.SearchFloat64s(g.cdf, u)
	if k < len(g.cdf) && g.cdf[k] == u {
		k++ // SearchFloat64s finds cdf[k] >= u; we want cdf[k] > u
	}
	if k >= len(g.cdf) {
		k = len(g.cdf) - 1
	}
	return g.names[k]
}

// cents draws an amount: a log-uniform-ish magnitude from 0.01 to 9,999.99
// (a decade, then uniform within it), about 5% refunds (negative). Integer
// arithmetic only, so the output is the same on every platform.
func (g *gen) cents() int64 {
	lo := int64(1)
	for d := g.intn(6); d > 0; d-- {
		lo *= 10
	}
	c := lo + int64(g.intn(int(9*lo))) // [lo, 10*lo)
	if g.intn(20) == 0 {
		c = -c
	}
	return c
}

func (g *gen) nextID() string {
	g.seq++
	return fmt.Sprintf("TX-%0*d", g.idW, g.seq)
}

func appendTS(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, time.RFC3339)
}

func (g *gen) validRow(dst []byte, acct string, cents int64, ts time.Time) []byte {
	dst = append(dst, g.nextID()...)
	dst = append(dst, ',')
	dst = append(dst, acct...)
	dst = append(dst, ',')
	dst = append(dst, FormatCents(cents)...)
	dst = append(dst, ',')
	return appendTS(dst, ts)
}

// Malformed variants. Each has exactly one defect so that its reason is
// unambiguous.
var (
	badAmounts    = []string{"", "abc", "12.3.4", "1e3", "NaN", "12,50", "$5.00", "5."}
	badTimestamps = []string{"not-a-time", "2024-13-01T00:00:00Z", "2024-02-30T10:00:00Z", "31/12/2024", "2024-01-01T25:61:00Z"}
)

func (g *gen) badRow(dst []byte, kind BadKind, ts time.Time) []byte {
	acct := g.account()
	amount := FormatCents(g.cents())
	stamp := string(appendTS(nil, ts))
	id := g.nextID()
	switch kind {
	case BadEmptyID:
		id = ""
	case BadAmount:
		amount = badAmounts[g.intn(len(badAmounts))]
		if amount == "12,50" {
			amount = `"12,50"` // quoted: one field, but not a decimal
		}
	case BadTimestamp:
		stamp = badTimestamps[g.intn(len(badTimestamps))]
	case BadFieldCount:
		if g.intn(2) == 0 {
			// account column missing
			dst = append(dst, id...)
			dst = append(dst, ',')
			dst = append(dst, amount...)
			dst = append(dst, ',')
			return append(dst, stamp...)
		}
		stamp += ",extra"
	}
	dst = append(dst, id...)
	dst = append(dst, ',')
	dst = append(dst, acct...)
	dst = append(dst, ',')
	dst = append(dst, amount...)
	dst = append(dst, ',')
	return append(dst, stamp...)
}
