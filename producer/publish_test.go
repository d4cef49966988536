package producer

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/txstream/txstream/txcsv"
)

// fakeClient acknowledges records at once, or fails those whose value
// starts with failPrefix.
type fakeClient struct {
	mu         sync.Mutex
	recs       []*kgo.Record
	failPrefix string
	failErr    error
}

func (f *fakeClient) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	f.mu.Lock()
	f.recs = append(f.recs, r)
	f.mu.Unlock()
	if f.failPrefix != "" && strings.HasPrefix(string(r.Value), f.failPrefix) {
		promise(r, f.failErr)
		return
	}
	promise(r, nil)
}

func (f *fakeClient) Flush(context.Context) error { return nil }

func stringSource(in string) *source {
	return &source{path: "-", stdin: strings.NewReader(in), maxLen: 1 << 20, log: zap.NewNop(), poll: time.Millisecond}
}

func newTestPublisher(opt publishOptions, cl producerClient, rej *rejectWriter) (*publisher, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	if opt.LogRejects == 0 {
		opt.LogRejects = -1
	}
	return newPublisher(opt, zap.New(core), cl, rej), logs
}

func TestPublishKeysHeadersValues(t *testing.T) {
	cases := []struct {
		name, in, keyCol string
		keys             []string
		header           string
	}{
		{"default account", "transaction_id,account_id,amount,timestamp\nt1,A,1,\nt2,,2,\n", "", []string{"A", "t2"}, "transaction_id,account_id,amount,timestamp"},
		{"minimal shape", "transaction_id,amount\nt1,1\nt2,2\n", "", []string{"t1", "t2"}, "transaction_id,amount"},
		{"free order and extra column", "amount,channel,account_id,transaction_id\n1,web,B,t1\n", "", []string{"B"}, "amount,channel,account_id,transaction_id"},
		{"key column", "transaction_id,account_id,amount,channel\nt1,A,1,web\nt2,A,2,\n", "channel", []string{"web", "A"}, "transaction_id,account_id,amount,channel"},
		{"bom and spaces", "\ufefftransaction_id, amount\r\n t1 ,1\r\n", "", []string{"t1"}, "transaction_id,amount"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeClient{}
			p, _ := newTestPublisher(publishOptions{KeyColumn: tc.keyCol}, fc, nil)
			if err := p.run(context.Background(), stringSource(tc.in)); err != io.EOF {
				t.Fatalf("run: %v", err)
			}
			lines := strings.Split(strings.TrimRight(tc.in, "\r\n"), "\n")[1:]
			if len(fc.recs) != len(tc.keys) {
				t.Fatalf("%d records, want %d", len(fc.recs), len(tc.keys))
			}
			for i, r := range fc.recs {
				if string(r.Key) != tc.keys[i] {
					t.Errorf("record %d key %q, want %q", i, r.Key, tc.keys[i])
				}
				if want := strings.TrimSuffix(lines[i], "\r"); string(r.Value) != want {
					t.Errorf("record %d value %q, want the line %q", i, r.Value, want)
				}
				if len(r.Headers) != 1 || r.Headers[0].Key != txcsv.HeaderColumns || string(r.Headers[0].Value) != tc.header {
					t.Errorf("record %d headers %v", i, r.Headers)
				}
			}
			s := p.summary(time.Second)
			if s.Read != int64(len(tc.keys)) || s.Produced != s.Read || s.Rejected != 0 || s.Pending != 0 {
				t.Errorf("summary %+v", s)
			}
		})
	}
}

func TestPublishHeaderErrors(t *testing.T) {
	for in, want := range map[string]string{
		"account_id,amount\nA,1\n":          "required column \"transaction_id\"",
		"transaction_id,amount,amount\n":    "appears twice",
		"transaction_id,\"amount\n":         "unterminated",
		"transaction_id,amount\nt1,1\n":     "--key-column \"account_id\" is not a column",
		"":                                  "EOF",
		strings.Repeat("x", 2000) + "\nt,1": "longer than --max-line-bytes",
	} {
		opt := publishOptions{MaxLineBytes: 1000}
		if strings.HasPrefix(in, "transaction_id,amount\n") {
			opt.KeyColumn = "account_id"
		}
		p, _ := newTestPublisher(opt, &fakeClient{}, nil)
		src := stringSource(in)
		src.maxLen = 1000
		err := p.run(context.Background(), src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: error %v, want %q", in, err, want)
		}
		var he *headerError
		if want != "EOF" && (!errors.As(err, &he) || he.Line != 1) {
			t.Errorf("%.40q: not a header error of line 1: %v", in, err)
		}
	}
}

const mixedInput = "transaction_id,account_id,amount,timestamp\n" + // 1
	"t1,A,1.00,2024-01-01T00:00:00Z\n" + // 2
	",A,2.00,2024-01-01T00:00:00Z\n" + // 3 empty id
	"t3,A,,2024-01-01T00:00:00Z\n" + // 4 missing amount
	"t4,A,1.2.3,2024-01-01T00:00:00Z\n" + // 5 invalid amount
	"t5,A,5,never\n" + // 6 invalid timestamp
	"t6,A,6\n" + // 7 field count
	"t7,A\xff,7,\n" + // 8 invalid utf8
	"t8,A,8,\"x\"y\n" + // 9 csv syntax
	"t9,A,9,\"2024-01-01\n" + // 10 unterminated quote, runs to EOF
	"t10,A,10,\n" // 11 (inside the open quote)

func TestPublishRejects(t *testing.T) {
	dir := t.TempDir()
	rejPath := filepath.Join(dir, "rejects.csv")
	rej, err := openRejects(rejPath)
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeClient{}
	p, logs := newTestPublisher(publishOptions{LogRejects: 3}, fc, rej)
	if err := p.run(context.Background(), stringSource(mixedInput)); err != io.EOF {
		t.Fatal(err)
	}
	if err := rej.close(); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"3", "empty_transaction_id"}, {"4", "missing_amount"}, {"5", "invalid_amount"},
		{"6", "invalid_timestamp"}, {"7", "field_count"}, {"8", "invalid_utf8"}, {"9", "csv_syntax"},
		{"10", "csv_syntax"},
	}
	f, _ := os.Open(rejPath)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want)+1 || strings.Join(rows[0], ",") != "line,reason,detail,raw" {
		t.Fatalf("rejects file: %q", rows)
	}
	for i, w := range want {
		r := rows[i+1]
		if r[0] != w[0] || r[1] != w[1] {
			t.Errorf("reject %d: %q, want line %s reason %s", i, r, w[0], w[1])
		}
	}
	if rows[1][3] != ",A,2.00,2024-01-01T00:00:00Z" {
		t.Errorf("raw column %q", rows[1][3])
	}
	if !strings.Contains(rows[8][2], "not closed") || rows[8][3] != "t9,A,9,\"2024-01-01\nt10,A,10," {
		t.Errorf("unterminated reject: %q", rows[8])
	}
	if len(fc.recs) != 1 || string(fc.recs[0].Value) != "t1,A,1.00,2024-01-01T00:00:00Z" {
		t.Errorf("produced %d records", len(fc.recs))
	}
	s := p.summary(time.Second)
	if s.Read != 9 || s.Rejected != 8 || s.Produced != 1 {
		t.Errorf("summary %+v", s)
	}
	if s.Reasons != "csv_syntax=2 empty_transaction_id=1 field_count=1 invalid_amount=1 invalid_timestamp=1 invalid_utf8=1 missing_amount=1" {
		t.Errorf("reasons %q", s.Reasons)
	}
	// With a rejects file, only the first 3 are logged at warn, then a note.
	warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warns) != 4 || warns[0].ContextMap()["line"] != int64(3) || !strings.Contains(warns[3].Message, "more rows rejected") {
		t.Errorf("warn logs: %d %v", len(warns), warns)
	}
	if n := logs.FilterMessage("row rejected").Len(); n != 3+4 {
		t.Errorf("%d row rejected logs (warn+debug), want 7", n)
	}
}

// Without a rejects file every rejected row is logged at warn level.
func TestPublishLogsEveryRejectWithoutFile(t *testing.T) {
	p, logs := newTestPublisher(publishOptions{}, &fakeClient{}, nil)
	p.run(context.Background(), stringSource(mixedInput))
	if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessage("row rejected").Len(); n != 8 {
		t.Errorf("%d warn logs, want 8", n)
	}
}

func TestPublishStrict(t *testing.T) {
	fc := &fakeClient{}
	p, _ := newTestPublisher(publishOptions{Strict: true}, fc, nil)
	err := p.run(context.Background(), stringSource(mixedInput))
	var se *strictError
	if !errors.As(err, &se) || se.Line != 3 || se.Reason != txcsv.ReasonEmptyTransactionID {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(err.Error(), "line 3: empty_transaction_id") {
		t.Errorf("message %q", err.Error())
	}
	if len(fc.recs) != 1 || p.summary(0).Read != 2 {
		t.Errorf("rows before the bad one: %d produced, %d read", len(fc.recs), p.summary(0).Read)
	}
}

func TestPublishDeliveryFailure(t *testing.T) {
	fc := &fakeClient{failPrefix: "t3,", failErr: kerr.UnknownTopicOrPartition}
	p, logs := newTestPublisher(publishOptions{}, fc, nil)
	in := "transaction_id,amount\nt1,1\nt2,2\nt3,3\nt4,4\nt5,5\n"
	err := p.run(context.Background(), stringSource(in))
	if !errors.Is(err, errDeliveryFailed) {
		t.Fatalf("err %v", err)
	}
	ff := p.firstFailure()
	if ff == nil || ff.Line != 4 || !errors.Is(ff, kerr.UnknownTopicOrPartition) {
		t.Fatalf("first failure %+v", ff)
	}
	if msg := ff.Error(); !strings.Contains(msg, "line 4: delivery failed") || !strings.Contains(msg, "--create-topic-partitions") {
		t.Errorf("message %q", msg)
	}
	s := p.summary(0)
	if s.Failed != 1 || s.Produced != 2 || s.Read != 3 {
		// the loop stops before reading the next row
		t.Errorf("summary %+v", s)
	}
	if logs.FilterMessage("row not delivered").Len() != 1 {
		t.Error("failure not logged")
	}
}

func TestPublishDryRun(t *testing.T) {
	p, _ := newTestPublisher(publishOptions{DryRun: true}, nil, nil)
	if err := p.run(context.Background(), stringSource(mixedInput)); err != io.EOF {
		t.Fatal(err)
	}
	s := p.summary(time.Second)
	if s.Valid != 1 || s.Rejected != 8 || s.Sent != 0 || !strings.HasPrefix(s.String(), "dry run: read 9 rows: 1 valid, 8 rejected") {
		t.Errorf("%+v %s", s, s)
	}
}

func TestPublishStopsOnCancel(t *testing.T) {
	fc := &fakeClient{}
	p, _ := newTestPublisher(publishOptions{Rate: 1}, fc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, stringSource("transaction_id,amount\nt1,1\nt2,2\nt3,3\n")) }()
	// At 1 row/s the second row waits a second; cancel while it waits.
	deadline := time.Now().Add(5 * time.Second)
	for p.c.sent.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
	s := p.summary(0)
	if s.Sent != 1 || s.Produced != 1 || s.Valid != 1 {
		t.Errorf("summary after cancel %+v", s)
	}
}

func TestPacer(t *testing.T) {
	now := time.Unix(0, 0)
	p := newPacer(4)
	p.now = func() time.Time { return now }
	step := func(want time.Duration) {
		t.Helper()
		if got := p.delay(); got != want {
			t.Errorf("delay %v, want %v", got, want)
		}
	}
	step(0)
	step(250 * time.Millisecond)
	step(500 * time.Millisecond)
	now = now.Add(500 * time.Millisecond)
	step(250 * time.Millisecond) // 4th event due at 750ms
	now = now.Add(1200 * time.Millisecond)
	step(-700 * time.Millisecond) // behind by less than a second: catch up
	// After a long idle period the schedule restarts instead of bursting.
	now = now.Add(time.Hour)
	step(0)
	step(250 * time.Millisecond)
	if d := newPacer(0).delay(); d != 0 {
		t.Errorf("unlimited: %v", d)
	}
	// wait honours ctx.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.wait(ctx); err != context.Canceled {
		t.Errorf("wait with a cancelled ctx: %v", err)
	}
}

func TestPublishLineTooLong(t *testing.T) {
	rejPath := filepath.Join(t.TempDir(), "rejects.csv")
	rej, err := openRejects(rejPath)
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeClient{}
	p, _ := newTestPublisher(publishOptions{MaxLineBytes: 64}, fc, rej)
	long := "t1,1," + strings.Repeat("n", 5000)
	src := stringSource("transaction_id,amount,note\n" + long + "\r\nt2,2,ok\n")
	src.maxLen = 64
	if err := p.run(context.Background(), src); err != io.EOF {
		t.Fatal(err)
	}
	rej.close()
	f, _ := os.Open(rejPath)
	defer f.Close()
	rows, _ := csv.NewReader(f).ReadAll()
	if len(rows) != 2 || rows[1][0] != "2" || rows[1][1] != "line_too_long" ||
		!strings.Contains(rows[1][2], "5005 bytes, limit 64") || rows[1][3] != long[:rawClip] {
		t.Fatalf("rejects %q", rows)
	}
	if len(fc.recs) != 1 || string(fc.recs[0].Value) != "t2,2,ok" {
		t.Errorf("records %v", fc.recs)
	}
}
