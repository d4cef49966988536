package synth

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The sample data set in testdata/ and the numbers in its README.
const (
	sampleCSV     = "../testdata/transactions.csv"
	sampleREADME  = "../testdata/README.md"
	sampleCommand = "go run ./cmd/producer gen --rows 3000 --accounts 10 --seed 1 --bad-fraction 0.0035 --dup-fraction 0.007 --out testdata/transactions.csv"
)

func sampleConfig() Config {
	c := DefaultConfig()
	c.Rows, c.Accounts, c.Seed, c.BadFraction, c.DupFraction = 3000, 10, 1, 0.0035, 0.007
	return c
}

func readSample(t *testing.T) (csv []byte, readme string) {
	t.Helper()
	csv, err := os.ReadFile(sampleCSV)
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(sampleREADME)
	if err != nil {
		t.Fatal(err)
	}
	return csv, string(md)
}

// The committed file is exactly what the documented command generates.
func TestSampleDataRegenerates(t *testing.T) {
	csv, readme := readSample(t)
	if !strings.Contains(readme, sampleCommand) {
		t.Fatalf("README does not show the command %q", sampleCommand)
	}
	var buf bytes.Buffer
	if _, err := Generate(sampleConfig(), &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), csv) {
		t.Fatalf("%s differs from the generator's output for %q (%d vs %d bytes); regenerate it and update the README",
			sampleCSV, sampleCommand, len(csv), buf.Len())
	}
}

// Every line of Expected's tables appears verbatim in the README.
func TestSampleREADMENumbers(t *testing.T) {
	csv, readme := readSample(t)
	res, err := Expected(bytes.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	var md strings.Builder
	if err := res.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(md.String()), "\n") {
		if line != "" && !strings.Contains(readme, line+"\n") {
			t.Errorf("README lacks the line %q", line)
		}
	}
	// The sentence about what producer and consumer see.
	published := strconv.Itoa(res.Valid+res.Duplicates) + " records"
	if !strings.Contains(readme, published) || !strings.Contains(readme, "rejects "+strconv.Itoa(res.Bad)) {
		t.Errorf("README does not say %q and \"rejects %d\"", published, res.Bad)
	}
	// The generator's own bookkeeping agrees.
	st, err := Generate(sampleConfig(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Valid != res.Valid || st.Duplicates != res.Duplicates || st.Bad != res.Bad {
		t.Errorf("generator stats %+v disagree with Expected %+v", st, res)
	}
}

// The bad-row and duplicate listings point at the right lines.
func TestSampleREADMELines(t *testing.T) {
	csv, readme := readSample(t)
	lines := strings.Split(strings.TrimSuffix(string(csv), "\n"), "\n")
	header := lines[0]

	badRE := regexp.MustCompile("(?m)^\\| (\\d+) \\| ([a-z_]+)[^|]* \\| `([^`]*)` \\|$")
	bad := badRE.FindAllStringSubmatch(readme, -1)
	res, _ := Expected(bytes.NewReader(csv))
	if len(bad) != res.Bad {
		t.Fatalf("README lists %d bad rows, the file has %d", len(bad), res.Bad)
	}
	for _, m := range bad {
		n, _ := strconv.Atoi(m[1])
		if n < 2 || n > len(lines) || lines[n-1] != m[3] {
			t.Errorf("line %d is not %q", n, m[3])
			continue
		}
		one, err := Expected(strings.NewReader(header + "\n" + m[3] + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if one.Bad != 1 || one.BadByReason[m[2]] != 1 {
			t.Errorf("line %d: README says %s, Expected says %v", n, m[2], one.BadByReason)
		}
	}

	dupRE := regexp.MustCompile(`(?s)Duplicate lines \(each repeats an earlier line exactly\): ([0-9,\s]+)\.`)
	m := dupRE.FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README has no duplicate line list")
	}
	listed := map[int]bool{}
	for _, f := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("duplicate list entry %q", f)
		}
		listed[n] = true
	}
	seen := map[string]bool{}
	found := 0
	for i, l := range lines[1:] {
		n := i + 2
		if seen[l] {
			found++
			if !listed[n] {
				t.Errorf("line %d repeats an earlier line but is not listed", n)
			}
		} else if listed[n] {
			t.Errorf("line %d is listed as a duplicate but is not one", n)
		}
		seen[l] = true
	}
	if found != len(listed) || found != res.Duplicates {
		t.Errorf("%d duplicate lines in the file, %d listed, Expected counts %d", found, len(listed), res.Duplicates)
	}
}
