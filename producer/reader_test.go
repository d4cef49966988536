package producer

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

type gotRec struct {
	line, end    int64
	data         string
	header       bool
	tooLong      bool
	size         int64
	unterminated bool
}

func readAll(t *testing.T, in io.Reader, maxLen int) []gotRec {
	t.Helper()
	rr := newRecordReader(in, maxLen)
	var out []gotRec
	conv := func(r record) gotRec {
		return gotRec{r.Line, r.EndLine, string(r.Data), r.Header, r.TooLong, r.Size, r.Unterminated}
	}
	for {
		rec, err := rr.next()
		if err == io.EOF {
			if rec, ok := rr.flushPartial(); ok {
				out = append(out, conv(rec))
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, conv(rec))
	}
}

func TestRecordReaderLines(t *testing.T) {
	in := "h1,h2\r\na,1\r\n\r\n\nb,2\nc,3" // CRLF, empty lines, no final newline
	got := readAll(t, strings.NewReader(in), 100)
	want := []gotRec{
		{1, 1, "h1,h2", true, false, 5, false},
		{2, 2, "a,1", false, false, 3, false},
		{5, 5, "b,2", false, false, 3, false},
		{6, 6, "c,3", false, false, 3, false},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRecordReaderQuotedNewlines(t *testing.T) {
	in := "h\n" +
		"t1,1,\"two\nlines\"\n" +
		"t2,2,\"say \"\"hi\"\"\"\n" + // escaped quotes keep parity
		"t3,3,\"three\r\n\r\nlines, one empty\"\r\n" +
		"t4,4,x\n"
	got := readAll(t, strings.NewReader(in), 100)
	if len(got) != 5 {
		t.Fatalf("got %d records: %+v", len(got), got)
	}
	checks := []gotRec{
		{2, 3, "t1,1,\"two\nlines\"", false, false, 0, false},
		{4, 4, "t2,2,\"say \"\"hi\"\"\"", false, false, 0, false},
		{5, 7, "t3,3,\"three\r\n\r\nlines, one empty\"", false, false, 0, false},
		{8, 8, "t4,4,x", false, false, 0, false},
	}
	for i, w := range checks {
		g := got[i+1]
		if g.line != w.line || g.end != w.end || g.data != w.data || g.tooLong || g.unterminated {
			t.Errorf("record %d: got %+v, want %+v", i+1, g, w)
		}
	}
}

func TestRecordReaderLimit(t *testing.T) {
	exact := strings.Repeat("x", 20)
	in := "h\n" + exact + "\n" + exact + "\r\n" + exact + "y\n" + exact + "yz\r\nok\n"
	got := readAll(t, strings.NewReader(in), 20)
	if len(got) != 6 {
		t.Fatalf("%+v", got)
	}
	if got[1].tooLong || got[2].tooLong || got[1].data != exact || got[2].data != exact {
		t.Errorf("lines of exactly the limit rejected: %+v %+v", got[1], got[2])
	}
	if !got[3].tooLong || got[3].size != 21 || got[3].line != 4 {
		t.Errorf("limit+1: %+v", got[3])
	}
	if !got[4].tooLong || got[4].size != 22 || got[4].line != 5 {
		t.Errorf("limit+2 with CRLF: %+v", got[4])
	}
	if got[5].data != "ok" || got[5].line != 6 {
		t.Errorf("after over-long lines: %+v", got[5])
	}
}

// endless yields n bytes of 'x' without ever holding them.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), e.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	e.n -= k
	return int(k), nil
}

// A 50 MB line is rejected without being held: the reader's buffer stays
// near the limit, and reading resumes after it.
func TestRecordReaderHugeLineBoundedMemory(t *testing.T) {
	const huge = 50 << 20
	in := io.MultiReader(strings.NewReader("h\nt0,0\n\"quoted,"), &endless{huge}, strings.NewReader("\nt1,1\n"))
	rr := newRecordReader(in, 1024)
	var recs []record
	for {
		rec, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rec.Data = bytes.Clone(rec.Data)
		recs = append(recs, rec)
		if c := cap(rr.buf); c > 256<<10 {
			t.Fatalf("reader buffer grew to %d bytes", c)
		}
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	long := recs[2]
	if !long.TooLong || long.Size != huge+8 || len(long.Data) != rawClip || long.Line != 3 || long.EndLine != 3 {
		t.Errorf("huge line: TooLong %v Size %d len(Data) %d lines %d-%d", long.TooLong, long.Size, len(long.Data), long.Line, long.EndLine)
	}
	if string(recs[3].Data) != "t1,1" || recs[3].Line != 4 {
		t.Errorf("after the huge line: %q at %d", recs[3].Data, recs[3].Line)
	}
}

// An over-long record inside an open quote is cut at the end of the physical
// line where the limit was crossed: a stray quote cannot swallow the rest of
// the input.
func TestRecordReaderRunawayQuote(t *testing.T) {
	in := "h\n\"t1,1\n" + strings.Repeat("t,1\n", 10) + "t9,9\n"
	got := readAll(t, strings.NewReader(in), 16)
	if len(got) < 3 {
		t.Fatalf("%+v", got)
	}
	if !got[1].tooLong || got[1].line != 2 {
		t.Fatalf("runaway quote: %+v", got[1])
	}
	if last := got[len(got)-1]; last.data != "t9,9" || last.line != 13 {
		t.Errorf("reading did not resume: %+v", got)
	}
}

// A quote inside an unquoted field does not open a quoted field (RFC 4180
// quotes a field only from its first character): its line is one record
// (which the row parser rejects) and the lines after it are their own.
func TestRecordReaderStrayQuote(t *testing.T) {
	in := "h\n" +
		"t1,ACC-\"1,1.00\n" + // stray quote mid-field
		"t2,2\n" +
		"t3,\"3\"x,3\n" + // text after a closing quote
		"t4,4\n" +
		"t5,\"a,\"\"b\"\"\nc\",5\n" + // quoted field with , "" and a line break
		"t6,6\n"
	// A tiny read buffer (16 bytes, bufio's minimum) splits lines, so the
	// quote state must carry across chunks.
	rr := newRecordReader(strings.NewReader(in), 100)
	rr.br = bufio.NewReaderSize(strings.NewReader(in), 16)
	var got []string
	var lines [][2]int64
	for {
		rec, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(rec.Data))
		lines = append(lines, [2]int64{rec.Line, rec.EndLine})
	}
	want := []string{"h", "t1,ACC-\"1,1.00", "t2,2", "t3,\"3\"x,3", "t4,4", "t5,\"a,\"\"b\"\"\nc\",5", "t6,6"}
	wantLines := [][2]int64{{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 7}, {8, 8}}
	if !slices.Equal(got, want) || !slices.Equal(lines, wantLines) {
		t.Fatalf("got %q lines %v\nwant %q lines %v", got, lines, want, wantLines)
	}
}

func TestRecordReaderUnterminatedQuote(t *testing.T) {
	got := readAll(t, strings.NewReader("h\nt1,1\nt2,\"2\nt3,3\n"), 100)
	if len(got) != 3 {
		t.Fatalf("%+v", got)
	}
	if u := got[2]; !u.unterminated || u.line != 3 || u.end != 4 || u.data != "t2,\"2\nt3,3" {
		t.Errorf("unterminated: %+v", u)
	}
}

// A line without its newline is held at the end of the available input and
// completed when more data arrives (a followed file being written).
func TestRecordReaderPartialLine(t *testing.T) {
	var in growing
	rr := newRecordReader(&in, 100)
	in.WriteString("h\nt1,")
	if rec, err := rr.next(); err != nil || string(rec.Data) != "h" {
		t.Fatalf("header: %q %v", rec.Data, err)
	}
	if _, err := rr.next(); err != io.EOF {
		t.Fatalf("partial line returned: %v", err)
	}
	in.WriteString("1\nt2,\"a")
	rec, err := rr.next()
	if err != nil || string(rec.Data) != "t1,1" || rec.Line != 2 {
		t.Fatalf("completed line: %q %v", rec.Data, err)
	}
	if _, err := rr.next(); err != io.EOF {
		t.Fatal(err)
	}
	in.WriteString("\nb\",2\n")
	rec, err = rr.next()
	if err != nil || string(rec.Data) != "t2,\"a\nb\",2" || rec.Line != 3 || rec.EndLine != 4 {
		t.Fatalf("completed quoted record: %q %v %d-%d", rec.Data, err, rec.Line, rec.EndLine)
	}
	if _, ok := rr.flushPartial(); ok {
		t.Fatal("flushPartial with nothing pending")
	}
}

// growing is a buffer that reports io.EOF when drained but accepts more
// writes, like a file being appended to.
type growing struct{ bytes.Buffer }

func (g *growing) Read(p []byte) (int, error) {
	n, err := g.Buffer.Read(p)
	if err == io.EOF && n == 0 {
		return 0, io.EOF
	}
	return n, nil
}
