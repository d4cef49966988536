package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// source yields the CSV records of the input: a file, stdin, or a file
// followed like `tail -F` (kept open at its end, reopened when rotated or
// truncated, header read again each time).
type source struct {
	path   string // "-" = stdin
	follow bool
	poll   time.Duration
	maxLen int
	log    *zap.Logger
	stdin  io.Reader

	f       *os.File
	rr      *recordReader
	ident   os.FileInfo // the open file, to detect rotation
	pos     int64       // bytes read from the open file
	gen     int         // files opened so far
	drained bool        // rotation seen once: read the old file to its end again before switching
	waiting bool        // logged "waiting for file"

	read     atomic.Int64 // bytes read from the input, all files together
	consumed atomic.Int64 // bytes turned into records so far (progress)
	blank    atomic.Int64 // empty lines skipped (not rows; reported in the summary)
	total    atomic.Int64 // input size when known and not following, else 0
}

func (s *source) name() string {
	if s.path == "-" {
		return "stdin"
	}
	return s.path
}

// generation is the number of the file being read: 1 for the first, +1 per
// rotation or truncation.
func (s *source) generation() int { return s.gen }

// Next returns the next record, io.EOF at the end of a non-followed input,
// or ctx's error when ctx ends while following.
func (s *source) Next(ctx context.Context) (record, error) {
	for {
		if s.rr == nil {
			if err := s.open(ctx); err != nil {
				return record{}, err
			}
		}
		rec, err := s.rr.next()
		if err == nil {
			return rec, nil
		}
		if err != io.EOF {
			return record{}, fmt.Errorf("reading %s: %w", s.name(), err)
		}
		if !s.follow {
			if rec, ok := s.rr.flushPartial(); ok {
				return rec, nil
			}
			return record{}, io.EOF
		}
		switch s.check() {
		case fileRotated:
			if !s.drained {
				s.drained = true // read what was written before the rename
				continue
			}
			if rec, ok := s.rr.flushPartial(); ok {
				return rec, nil
			}
			s.log.Info("input file was replaced (rotation); reading the new file from its start",
				zap.String("file", s.path), zap.Int64("lines_read", s.rr.lines))
			s.closeFile()
			continue
		case fileTruncated:
			if rec, ok := s.rr.flushPartial(); ok {
				return rec, nil
			}
			s.log.Warn("input file shrank (truncated); reading it again from its start",
				zap.String("file", s.path), zap.Int64("read_offset", s.pos))
			if _, err := s.f.Seek(0, io.SeekStart); err != nil {
				return record{}, fmt.Errorf("rewinding %s: %w", s.path, err)
			}
			s.pos = 0
			s.gen++
			s.rr = s.newReader()
			continue
		}
		if err := sleep(ctx, s.poll); err != nil {
			return record{}, err
		}
	}
}

type fileState int

const (
	fileUnchanged fileState = iota
	fileRotated
	fileTruncated
)

func (s *source) check() fileState {
	fi, err := os.Stat(s.path)
	if err != nil {
		return fileUnchanged // moved away, new one not created yet: keep waiting
	}
	if !os.SameFile(fi, s.ident) {
		return fileRotated
	}
	if fi.Size() < s.pos {
		return fileTruncated
	}
	return fileUnchanged
}

func (s *source) open(ctx context.Context) error {
	s.drained = false
	if s.path == "-" {
		s.rr = s.newReader()
		s.gen++
		if f, ok := s.stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				s.total.Store(fi.Size())
			}
		}
		return nil
	}
	for {
		f, err := os.Open(s.path)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return fmt.Errorf("stat %s: %w", s.path, err)
			}
			if fi.IsDir() {
				f.Close()
				return fmt.Errorf("%s is a directory", s.path)
			}
			s.f, s.ident, s.pos = f, fi, 0
			s.gen++
			s.rr = s.newReader()
			if !s.follow && fi.Mode().IsRegular() {
				s.total.Store(fi.Size())
			}
			s.waiting = false
			return nil
		}
		if !s.follow || !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("opening input: %w", err)
		}
		if !s.waiting {
			s.log.Info("waiting for the input file to appear", zap.String("file", s.path))
			s.waiting = true
		}
		if err := sleep(ctx, s.poll); err != nil {
			return err
		}
	}
}

func (s *source) newReader() *recordReader {
	rr := newRecordReader(countingReader{s}, s.maxLen)
	rr.progress = &s.consumed
	rr.blanks = &s.blank
	return rr
}

func (s *source) closeFile() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.rr = nil
}

// Close releases the open file.
func (s *source) Close() { s.closeFile() }

// countingReader reads the source's current input and counts bytes.
type countingReader struct{ s *source }

func (c countingReader) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.s.f != nil {
		n, err = c.s.f.Read(p)
	} else {
		n, err = c.s.stdin.Read(p)
	}
	c.s.pos += int64(n)
	c.s.read.Add(int64(n))
	return n, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
