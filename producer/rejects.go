package producer

import (
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// rejectWriter writes rejected rows to a CSV file: line,reason,detail,raw.
// raw is the record as read (at most rawClip bytes of an over-long one).
type rejectWriter struct {
	mu     sync.Mutex
	f      *os.File
	w      *csv.Writer
	closed bool
	err    error
}

// notTheInput refuses a rejects file that is the input file itself:
// opening it truncates it before a row is read.
func notTheInput(rejects, input string) error {
	if input == "-" {
		return nil
	}
	ri, err := os.Stat(rejects)
	if err != nil {
		return nil // absent (it is created) or unreadable (opening says why)
	}
	if ii, err := os.Stat(input); err == nil && os.SameFile(ri, ii) {
		return fmt.Errorf("--rejects %s is the input file %s: it would be truncated before it is read", rejects, input)
	}
	return nil
}

func openRejects(path string) (*rejectWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--rejects: %w", err)
	}
	w := &rejectWriter{f: f, w: csv.NewWriter(f)}
	if err := w.w.Write([]string{"line", "reason", "detail", "raw"}); err != nil {
		f.Close()
		return nil, fmt.Errorf("--rejects %s: %w", path, err)
	}
	return w, nil
}

func (w *rejectWriter) write(line int64, reason, detail string, raw []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.err != nil {
		return w.err
	}
	if err := w.w.Write([]string{strconv.FormatInt(line, 10), reason, detail, string(raw)}); err != nil {
		w.err = fmt.Errorf("writing rejects file: %w", err)
	}
	return w.err
}

// close flushes, syncs and closes the file.
func (w *rejectWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	w.closed = true
	w.w.Flush()
	if err := w.w.Error(); err != nil && w.err == nil {
		w.err = fmt.Errorf("writing rejects file: %w", err)
	}
	if err := w.f.Sync(); err != nil && w.err == nil {
		w.err = fmt.Errorf("syncing rejects file: %w", err)
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("closing rejects file: %w", err)
	}
	return w.err
}
