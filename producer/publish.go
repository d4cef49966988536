package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/txstream/txstream/txcsv"
)

// producerClient is the part of *kgo.Client the publisher uses; tests
// substitute fakes.
type producerClient interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Flush(ctx context.Context) error
}

// recordSource is where records come from (*source in the binary).
type recordSource interface {
	Next(ctx context.Context) (record, error)
	generation() int
}

// counters are read by the progress reporter while the publisher runs.
type counters struct {
	read     atomic.Int64 // data records read (header and empty lines excluded)
	valid    atomic.Int64 // records that passed validation
	sent     atomic.Int64 // records handed to the Kafka client
	acked    atomic.Int64 // records acknowledged by the brokers (acks=all)
	failed   atomic.Int64 // records whose delivery failed
	rejected atomic.Int64 // records that failed validation
}

// publishOptions are the publisher's settings.
type publishOptions struct {
	KeyColumn    string // "" = account_id when present, else transaction_id
	MaxLineBytes int
	Strict       bool
	DryRun       bool
	Rate         float64
	// LogRejects is how many rejected rows are logged individually at warn
	// level; the rest go to debug. < 0: all.
	LogRejects int
}

// publisher validates records and produces the valid ones.
type publisher struct {
	opt     publishOptions
	log     *zap.Logger
	cl      producerClient // nil in dry-run mode
	rejects *rejectWriter  // nil without --rejects
	pace    *pacer
	c       counters

	schema  *txcsv.Schema
	keyIdx  int // column index of the key, -1 = Row.Key()
	headers []kgo.RecordHeader

	reasonsMu sync.Mutex
	reasons   map[txcsv.Reason]int64

	failOnce  sync.Once
	failed    chan struct{} // closed on the first delivery failure
	failMu    sync.Mutex
	firstFail *deliveryError
	failLogs  int
}

func newPublisher(opt publishOptions, log *zap.Logger, cl producerClient, rejects *rejectWriter) *publisher {
	if opt.MaxLineBytes <= 0 {
		opt.MaxLineBytes = txcsv.DefaultMaxLineBytes
	}
	return &publisher{
		opt: opt, log: log, cl: cl, rejects: rejects,
		pace:    newPacer(opt.Rate),
		reasons: map[txcsv.Reason]int64{},
		failed:  make(chan struct{}),
	}
}

// deliveryError is a record the brokers did not acknowledge.
type deliveryError struct {
	Line int64
	Err  error
}

func (e *deliveryError) Error() string {
	msg := fmt.Sprintf("line %d: delivery failed: %v", e.Line, e.Err)
	if errors.Is(e.Err, kerr.UnknownTopicOrPartition) {
		msg += " (the topic does not exist and the brokers do not auto-create it: create it, or pass --create-topic-partitions N)"
	}
	return msg
}

func (e *deliveryError) Unwrap() error { return e.Err }

// strictError is the first bad row under --strict.
type strictError struct {
	Line   int64
	Reason txcsv.Reason
	Detail string
}

func (e *strictError) Error() string {
	s := fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s + " (--strict stops at the first bad row)"
}

// headerError is an unusable header line.
type headerError struct {
	Line int64
	Err  error
}

func (e *headerError) Error() string {
	return fmt.Sprintf("line %d: header: %v", e.Line, e.Err)
}

var errDeliveryFailed = errors.New("delivery failed")

// run reads records from src until it ends, ctx ends, a delivery fails or
// (with --strict) a row is bad. It does not flush the client.
func (p *publisher) run(ctx context.Context, src recordSource) error {
	for {
		select {
		case <-p.failed:
			return errDeliveryFailed
		default:
		}
		rec, err := src.Next(ctx)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			// Read after the interrupt (a blocking stdin read returned
			// late): not published, and not counted as read.
			return ctx.Err()
		}
		if rec.Header {
			isHeader, err := p.setHeader(rec, src.generation())
			if err != nil {
				return err
			}
			if isHeader {
				continue
			}
		}
		if err := p.handle(ctx, rec); err != nil {
			return err
		}
	}
}

// setHeader takes the columns from a header record. A file that reappears
// after rotation or truncation without a header (copytruncate) keeps the
// previous columns: the record is then data (isHeader false).
func (p *publisher) setHeader(rec record, gen int) (isHeader bool, err error) {
	line := bytes.TrimPrefix(rec.Data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	var schema *txcsv.Schema
	switch {
	case rec.TooLong:
		err = fmt.Errorf("longer than --max-line-bytes %d", p.opt.MaxLineBytes)
	case rec.Unterminated:
		err = errors.New("unterminated quoted field")
	default:
		var cols []string
		if cols, err = txcsv.SplitLine(line); err == nil {
			schema, err = txcsv.NewSchema(cols)
		}
	}
	if err != nil {
		if p.schema != nil && gen > 1 {
			p.log.Warn("no header at the start of the reopened file; keeping the previous columns",
				zap.Int64("line", rec.Line), zap.String("columns", p.schema.Header()), zap.NamedError("header_error", err))
			return false, nil
		}
		return false, &headerError{Line: rec.Line, Err: err}
	}
	keyIdx := -1
	if p.opt.KeyColumn != "" {
		if keyIdx = schema.Index(p.opt.KeyColumn); keyIdx < 0 {
			return false, &headerError{Line: rec.Line, Err: fmt.Errorf("--key-column %q is not a column (columns: %s)", p.opt.KeyColumn, schema.Header())}
		}
	}
	if p.schema != nil && p.schema.Header() != schema.Header() {
		p.log.Info("columns changed", zap.String("from", p.schema.Header()), zap.String("to", schema.Header()))
	}
	p.schema, p.keyIdx = schema, keyIdx
	p.headers = []kgo.RecordHeader{{Key: txcsv.HeaderColumns, Value: []byte(schema.Header())}}
	key := p.opt.KeyColumn
	if key == "" {
		key = txcsv.ColTransactionID
		if schema.HasAccount() {
			key = txcsv.ColAccountID + " (" + txcsv.ColTransactionID + " when empty)"
		}
	}
	p.log.Debug("header", zap.Int64("line", rec.Line), zap.String("columns", schema.Header()), zap.String("key", key))
	return true, nil
}

func (p *publisher) handle(ctx context.Context, rec record) error {
	p.c.read.Add(1)
	switch {
	case rec.TooLong:
		return p.reject(rec, txcsv.ReasonLineTooLong,
			fmt.Sprintf("%d bytes, limit %d (--max-line-bytes); raw column holds at most the first %d bytes", rec.Size, p.opt.MaxLineBytes, rawClip))
	case rec.Unterminated:
		return p.reject(rec, txcsv.ReasonCSVSyntax,
			fmt.Sprintf("quoted field opened on line %d is not closed at the end of the input", rec.Line))
	}
	row, err := p.schema.ParseLine(rec.Data, p.opt.MaxLineBytes)
	if err != nil {
		var re *txcsv.RowError
		if !errors.As(err, &re) {
			re = &txcsv.RowError{Reason: txcsv.ReasonCSVSyntax, Detail: err.Error()}
		}
		return p.reject(rec, re.Reason, re.Detail)
	}
	p.c.valid.Add(1)
	if p.opt.DryRun {
		return nil
	}
	key := row.Key()
	if p.keyIdx >= 0 {
		if k := strings.TrimSpace(row.Fields[p.keyIdx]); k != "" {
			key = k
		}
	}
	r := &kgo.Record{
		Key:     []byte(key),
		Value:   bytes.Clone(rec.Data),
		Headers: p.headers, // shared and never modified
	}
	if err := p.pace.wait(ctx); err != nil {
		p.c.valid.Add(-1) // read but not sent: counted as read only
		return err
	}
	line := rec.Line
	p.c.sent.Add(1)
	// context.Background: an interrupt stops reading but lets what was
	// handed to the client be delivered; a blocked Produce (buffer full)
	// waits for deliveries to make room.
	p.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
		if err == nil {
			p.c.acked.Add(1)
			return
		}
		p.c.failed.Add(1)
		p.noteFailure(line, err)
	})
	return nil
}

func (p *publisher) noteFailure(line int64, err error) {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	de := &deliveryError{Line: line, Err: err}
	if p.firstFail == nil || line < p.firstFail.Line {
		p.firstFail = de
	}
	if p.failLogs < 10 {
		p.failLogs++
		p.log.Error("row not delivered", zap.Int64("line", line), zap.Error(err))
	} else if p.failLogs == 10 {
		p.failLogs++
		p.log.Error("more rows not delivered; see the summary")
	}
	p.failOnce.Do(func() { close(p.failed) })
}

// firstFailure returns the delivery failure of the lowest line number.
func (p *publisher) firstFailure() *deliveryError {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	return p.firstFail
}

func (p *publisher) reject(rec record, reason txcsv.Reason, detail string) error {
	n := p.c.rejected.Add(1)
	p.reasonsMu.Lock()
	p.reasons[reason]++
	p.reasonsMu.Unlock()
	fields := []zap.Field{zap.Int64("line", rec.Line), zap.String("reason", string(reason)), zap.String("detail", detail)}
	if rec.EndLine > rec.Line {
		fields = append(fields, zap.Int64("end_line", rec.EndLine))
	}
	switch {
	case p.opt.LogRejects < 0 || n <= int64(p.opt.LogRejects):
		p.log.Warn("row rejected", fields...)
	case n == int64(p.opt.LogRejects)+1:
		p.log.Warn("more rows rejected: logged at debug level only, all are in the rejects file", fields...)
	default:
		p.log.Debug("row rejected", fields...)
	}
	if p.rejects != nil {
		if err := p.rejects.write(rec.Line, string(reason), detail, rec.Data); err != nil {
			return err
		}
	}
	if p.opt.Strict {
		return &strictError{Line: rec.Line, Reason: reason, Detail: detail}
	}
	return nil
}

// reasonSummary renders the reject counts by reason: "field_count=2 invalid_amount=1".
func (p *publisher) reasonSummary() string {
	p.reasonsMu.Lock()
	defer p.reasonsMu.Unlock()
	keys := make([]string, 0, len(p.reasons))
	for r := range p.reasons {
		keys = append(keys, string(r))
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, p.reasons[txcsv.Reason(k)])
	}
	return strings.Join(parts, " ")
}

// summary is the end-of-run report.
type summary struct {
	Read, Valid, Sent, Produced, Rejected, Failed, Pending int64
	Blank                                                  int64 // empty lines skipped
	Reasons                                                string
	Duration                                               time.Duration
	DryRun                                                 bool
}

func (p *publisher) summary(d time.Duration) summary {
	s := summary{
		Read: p.c.read.Load(), Valid: p.c.valid.Load(), Sent: p.c.sent.Load(),
		Produced: p.c.acked.Load(), Rejected: p.c.rejected.Load(), Failed: p.c.failed.Load(),
		Reasons: p.reasonSummary(), Duration: d, DryRun: p.opt.DryRun,
	}
	s.Pending = s.Sent - s.Produced - s.Failed
	return s
}

// RowsPerSec is produced rows per second (read rows in a dry run).
func (s summary) RowsPerSec() float64 {
	n := s.Produced
	if s.DryRun {
		n = s.Read
	}
	if s.Duration <= 0 {
		return 0
	}
	return float64(n) / s.Duration.Seconds()
}

func (s summary) String() string {
	var b strings.Builder
	if s.DryRun {
		fmt.Fprintf(&b, "dry run: read %d rows: %d valid, %d rejected", s.Read, s.Valid, s.Rejected)
	} else {
		fmt.Fprintf(&b, "read %d rows: %d produced, %d rejected", s.Read, s.Produced, s.Rejected)
	}
	if s.Reasons != "" {
		fmt.Fprintf(&b, " (%s)", s.Reasons)
	}
	if s.Failed > 0 {
		fmt.Fprintf(&b, ", %d delivery failed", s.Failed)
	}
	if s.Pending > 0 {
		fmt.Fprintf(&b, ", %d not acknowledged", s.Pending)
	}
	if s.Blank > 0 {
		fmt.Fprintf(&b, ", %d empty lines skipped", s.Blank)
	}
	fmt.Fprintf(&b, " in %s (%.0f rows/s)", s.Duration.Round(time.Millisecond), s.RowsPerSec())
	return b.String()
}

func (s summary) fields() []zap.Field {
	f := []zap.Field{
		zap.Int64("read", s.Read), zap.Int64("valid", s.Valid), zap.Int64("produced", s.Produced),
		zap.Int64("rejected", s.Rejected), zap.Int64("failed", s.Failed), zap.Int64("not_acknowledged", s.Pending),
		zap.Duration("duration", s.Duration), zap.Float64("rows_per_sec", float64(int64(s.RowsPerSec()*10))/10),
	}
	if s.Reasons != "" {
		f = append(f, zap.String("rejects_by_reason", s.Reasons))
	}
	if s.Blank > 0 {
		f = append(f, zap.Int64("empty_lines", s.Blank))
	}
	if s.DryRun {
		f = append(f, zap.Bool("dry_run", true))
	}
	return f
}
