package producer

import (
	"bufio"
	"bytes"
	"io"
	"sync/atomic"
)

// rawClip bounds the raw text kept for a rejected over-long record.
const rawClip = 1024

// record is one CSV record of the input: a physical line, or several when a
// quoted field contains line breaks.
type record struct {
	Line    int64  // physical line number where the record starts (1-based)
	EndLine int64  // physical line number where it ends
	Data    []byte // the record without its line terminator; reused by the next call
	Header  bool   // first record of the file: the column names

	// TooLong: the record exceeds the limit. Data holds at most rawClip
	// bytes of its start; Size is its full length. Reading resumed at the
	// end of the physical line where the limit was crossed.
	TooLong bool
	Size    int64
	// Unterminated: the input ended inside a quoted field.
	Unterminated bool
}

// recordReader splits an input into CSV records with bounded memory: a
// record longer than maxLen is reported (TooLong) and skipped without being
// held. A line break inside a quoted field continues the record (RFC 4180).
// A quote opens a quoted field only at the start of a field; a quote
// anywhere else is left to the row parser, which rejects that one line,
// so a stray quote cannot glue the lines after it onto its row. Empty
// lines are skipped.
//
// At the end of the available input next returns io.EOF and keeps any
// incomplete last line, so that a followed file can grow and the line be
// completed; flushPartial hands it out as a record when the input really
// ended.
type recordReader struct {
	br     *bufio.Reader
	maxLen int

	lines    int64         // complete physical lines consumed
	consumed int64         // bytes consumed
	progress *atomic.Int64 // also counts consumed bytes, for other goroutines (may be nil)
	records  int64         // records returned
	blank    int64         // empty lines skipped
	blanks   *atomic.Int64 // also counts them, for the summary (may be nil)

	// the record being assembled
	in      bool
	start   int64
	buf     []byte
	quote   quoteState
	tooLong bool
	size    int64
	tail    [2]byte // last two bytes of the record (terminator of over-long records)
}

func newRecordReader(r io.Reader, maxLen int) *recordReader {
	return &recordReader{br: bufio.NewReaderSize(r, 64<<10), maxLen: maxLen}
}

// next returns the next complete record, io.EOF when none is complete yet,
// or a read error.
func (r *recordReader) next() (record, error) {
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(chunk) > 0 {
			r.add(chunk)
		}
		switch err {
		case nil:
		case bufio.ErrBufferFull:
			continue
		default:
			return record{}, err
		}
		r.lines++
		if r.quote.open() && !r.tooLong {
			continue // line break inside a quoted field
		}
		if rec, ok := r.finish(false); ok {
			return rec, nil
		}
	}
}

// flushPartial returns the incomplete last line (or quoted record) as a
// record, when the input has ended.
func (r *recordReader) flushPartial() (record, bool) {
	if !r.in {
		return record{}, false
	}
	return r.finish(true)
}

func (r *recordReader) add(chunk []byte) {
	if !r.in {
		r.in, r.start, r.buf, r.quote, r.tooLong, r.size, r.tail = true, r.lines+1, r.buf[:0], fieldStart, false, 0, [2]byte{}
	}
	r.consumed += int64(len(chunk))
	if r.progress != nil {
		r.progress.Add(int64(len(chunk)))
	}
	r.size += int64(len(chunk))
	if len(chunk) >= 2 {
		r.tail = [2]byte{chunk[len(chunk)-2], chunk[len(chunk)-1]}
	} else {
		r.tail = [2]byte{r.tail[1], chunk[0]}
	}
	if r.tooLong {
		return
	}
	// +2: the line terminator is not part of the limit.
	if len(r.buf)+len(chunk) > r.maxLen+2 {
		r.tooLong = true
		if n := rawClip - len(r.buf); n > 0 {
			r.buf = append(r.buf, chunk[:min(n, len(chunk))]...)
		} else {
			r.buf = r.buf[:rawClip]
		}
		return
	}
	r.buf = append(r.buf, chunk...)
	r.quote = r.quote.scan(chunk)
}

// quoteState is where a record's text stands with respect to CSV quoting.
type quoteState uint8

const (
	fieldStart    quoteState = iota // at the start of a field
	unquoted                        // inside an unquoted field
	quoted                          // inside a quoted field
	quoteInQuoted                   // after a quote inside a quoted field: "" or the closing quote
)

// open reports whether a line break here is inside a quoted field.
func (q quoteState) open() bool { return q == quoted }

// scan returns the state after chunk.
func (q quoteState) scan(chunk []byte) quoteState {
	if q <= unquoted && bytes.IndexByte(chunk, '"') < 0 {
		// No quote (almost every chunk): only the last byte matters.
		switch chunk[len(chunk)-1] {
		case ',', '\n':
			return fieldStart
		}
		return unquoted
	}
	for _, c := range chunk {
		switch q {
		case fieldStart:
			switch c {
			case '"':
				q = quoted
			case ',', '\n':
			default:
				q = unquoted
			}
		case unquoted:
			if c == ',' || c == '\n' {
				q = fieldStart
			}
		case quoted:
			if c == '"' {
				q = quoteInQuoted
			}
		case quoteInQuoted:
			switch c {
			case '"':
				q = quoted // an escaped quote
			case ',', '\n':
				q = fieldStart
			default:
				q = unquoted // text after the closing quote: the row parser rejects it
			}
		}
	}
	return q
}

// finish ends the record being assembled; ok is false for an empty line.
func (r *recordReader) finish(eof bool) (record, bool) {
	r.in = false
	data := r.buf
	size := r.size
	if n := len(data); !r.tooLong && n > 0 && data[n-1] == '\n' {
		data = data[:n-1]
		size--
	}
	if n := len(data); !r.tooLong && n > 0 && data[n-1] == '\r' {
		data = data[:n-1]
		size--
	}
	if r.tooLong && r.tail[1] == '\n' {
		size--
		if r.tail[0] == '\r' {
			size--
		}
	}
	end := r.lines
	if eof && r.tail[1] != '\n' {
		end++ // the last line has no terminator
	}
	if len(data) == 0 && !r.tooLong {
		r.blank++
		if r.blanks != nil {
			r.blanks.Add(1)
		}
		return record{}, false
	}
	rec := record{Line: r.start, EndLine: end, Data: data, Size: size, Header: r.records == 0}
	if !r.tooLong && len(data) > r.maxLen {
		r.tooLong = true
		rec.Data = data[:min(len(data), rawClip)]
	}
	rec.TooLong = r.tooLong
	rec.Unterminated = eof && r.quote.open() && !r.tooLong
	r.records++
	return rec, true
}
