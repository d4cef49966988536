package producer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

type followed struct {
	t    *testing.T
	recs chan record
	errc chan error
}

// follow runs src.Next in a goroutine until ctx ends.
func follow(t *testing.T, ctx context.Context, src *source) *followed {
	f := &followed{t: t, recs: make(chan record, 100), errc: make(chan error, 1)}
	go func() {
		for {
			rec, err := src.Next(ctx)
			if err != nil {
				f.errc <- err
				return
			}
			rec.Data = append([]byte(nil), rec.Data...)
			f.recs <- rec
		}
	}()
	return f
}

// expect waits for the next record and checks its data and header flag.
func (f *followed) expect(data string, header bool) record {
	f.t.Helper()
	select {
	case rec := <-f.recs:
		if string(rec.Data) != data || rec.Header != header {
			f.t.Fatalf("got %q (header %v), want %q (header %v)", rec.Data, rec.Header, data, header)
		}
		return rec
	case err := <-f.errc:
		f.t.Fatalf("source ended waiting for %q: %v", data, err)
	case <-time.After(10 * time.Second):
		f.t.Fatalf("timed out waiting for %q", data)
	}
	return record{}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestSourceFollowGrowRotateTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "feed.csv")
	appendFile(t, path, "transaction_id,amount\nt1,1\n")
	src := &source{path: path, follow: true, poll: 5 * time.Millisecond, maxLen: 1000, log: zap.NewNop()}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := follow(t, ctx, src)

	f.expect("transaction_id,amount", true)
	f.expect("t1,1", false)

	// Growth, including a line written in two parts.
	appendFile(t, path, "t2,2\nt3,")
	f.expect("t2,2", false)
	appendFile(t, path, "3\n")
	if rec := f.expect("t3,3", false); rec.Line != 4 {
		t.Errorf("line %d, want 4", rec.Line)
	}

	// Rotation: the file is renamed and a new one (new header) created.
	// A last unterminated line of the old file still counts.
	appendFile(t, path, "t4,4")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "amount,transaction_id\n5.00,t5\n")
	f.expect("t4,4", false)
	f.expect("amount,transaction_id", true)
	if rec := f.expect("5.00,t5", false); rec.Line != 2 {
		t.Errorf("line numbers restart in a new file: %d", rec.Line)
	}
	if src.generation() != 2 {
		t.Errorf("generation %d after rotation", src.generation())
	}

	// Truncation (copytruncate): the file shrinks and is written again. (A
	// rewrite that reaches the old size before a poll is not detectable by
	// size, as with tail -F.)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "transaction_id,amount\nt6,6\n")
	f.expect("transaction_id,amount", true)
	f.expect("t6,6", false)
	if src.generation() != 3 {
		t.Errorf("generation %d after truncation", src.generation())
	}

	cancel()
	select {
	case err := <-f.errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after cancel")
	}
}

func TestSourceFollowWaitsForFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.csv")
	src := &source{path: path, follow: true, poll: 5 * time.Millisecond, maxLen: 1000, log: zap.NewNop()}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := follow(t, ctx, src)
	appendFile(t, path, "transaction_id,amount\nt1,1\n")
	f.expect("transaction_id,amount", true)
	f.expect("t1,1", false)
}

func TestSourceMissingFile(t *testing.T) {
	src := &source{path: filepath.Join(t.TempDir(), "nope.csv"), maxLen: 1000, log: zap.NewNop()}
	if _, err := src.Next(context.Background()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("err %v", err)
	}
	src = &source{path: t.TempDir(), maxLen: 1000, log: zap.NewNop()}
	if _, err := src.Next(context.Background()); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("err %v", err)
	}
}

func TestSourceSizeKnown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.csv")
	appendFile(t, path, "transaction_id,amount\nt1,1\n")
	src := &source{path: path, maxLen: 1000, log: zap.NewNop()}
	defer src.Close()
	for {
		if _, err := src.Next(context.Background()); err != nil {
			break
		}
	}
	if src.total.Load() != 27 || src.read.Load() != 27 || src.consumed.Load() != 27 {
		t.Errorf("total %d read %d consumed %d, want 27", src.total.Load(), src.read.Load(), src.consumed.Load())
	}
	// Following: the size is not a goal.
	fsrc := &source{path: path, follow: true, poll: time.Millisecond, maxLen: 1000, log: zap.NewNop()}
	defer fsrc.Close()
	fsrc.Next(context.Background())
	if fsrc.total.Load() != 0 {
		t.Errorf("follow: total %d", fsrc.total.Load())
	}
}

// After rotation without a header line (a writer that only appends rows),
// the previous columns stay in force.
func TestPublishKeepsColumnsWithoutHeaderAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "feed.csv")
	appendFile(t, path, "transaction_id,amount\nt1,1\n")
	src := &source{path: path, follow: true, poll: 5 * time.Millisecond, maxLen: 1000, log: zap.NewNop()}
	defer src.Close()
	fc := &fakeClient{}
	p, logs := newTestPublisher(publishOptions{}, fc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, src) }()
	waitFor(t, func() bool { return p.c.acked.Load() == 1 })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "t2,2\n")
	waitFor(t, func() bool { return p.c.acked.Load() == 2 })
	cancel()
	<-done
	if logs.FilterMessage("no header at the start of the reopened file; keeping the previous columns").Len() != 1 {
		t.Error("no warning about the missing header")
	}
	if string(fc.recs[1].Value) != "t2,2" || p.c.rejected.Load() != 0 {
		t.Errorf("second record %q, rejected %d", fc.recs[1].Value, p.c.rejected.Load())
	}
}

// waitFor polls cond (a condition on state, not a timing guess) for up to 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
