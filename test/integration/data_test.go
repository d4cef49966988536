package integration

// The input of a test and the check of its output. The input is synth's
// CSV, published row by row as an independent client such as kcat would;
// the output is read read_committed, as a downstream consumer would, and
// checked by synth.OutputChecker against synth's own computation of what
// the CSV gives. Neither side shares code with the consumer.

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

// dataset is generated CSV rows and their independently computed
// expectation.
type dataset struct {
	lines [][]byte      // data rows, header excluded
	exp   *synth.Result // what a correct consumer outputs for them
}

// genDataset generates rows data rows over accounts accounts, with bad
// rows and exact duplicates among them (the test fails if the seed gives
// none of either).
func genDataset(t *testing.T, rows, accounts int, seed uint64) *dataset {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed = rows, accounts, seed
	cfg.BadFraction, cfg.DupFraction = 0.003, 0.01
	var buf bytes.Buffer
	if _, err := synth.Generate(cfg, &buf); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(buf.Bytes(), "\n"), []byte("\n"))[1:]
	ds := &dataset{lines: lines, exp: expectRows(t, lines)}
	if ds.exp.Bad == 0 || ds.exp.Duplicates == 0 {
		t.Fatalf("dataset has %d bad rows and %d duplicates; the test needs both", ds.exp.Bad, ds.exp.Duplicates)
	}
	return ds
}

// combine is two datasets produced one after the other (the second's ids
// may repeat the first's exactly: seeds differ, so they are different
// transactions only if their content differs).
func combine(t *testing.T, a, b *dataset) *dataset {
	t.Helper()
	lines := append(append([][]byte{}, a.lines...), b.lines...)
	return &dataset{lines: lines, exp: expectRows(t, lines)}
}

// expectRows is synth's expectation of data rows produced in this order.
func expectRows(t testing.TB, lines [][]byte) *synth.Result {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(synth.Header + "\n")
	for _, l := range lines {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	exp, err := synth.Expected(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

// rowPos is where a produced row landed.
type rowPos struct {
	p   int32
	off int64
}

// rowInput says how produceRows publishes. The zero value publishes to
// the input topic as fast as it can.
type rowInput struct {
	topic string        // "" = "transactions"
	rate  int           // rows per second; 0 = as fast as possible
	acked *atomic.Int64 // if not nil, counts the rows the brokers acknowledged
	opts  []kgo.Opt     // added to the client's options
}

// produceRows publishes every data row as a bare CSV line keyed by its
// account (the second field), as an independent client such as kcat
// would: bad rows reach the topic too, so the consumer's dead-letter path
// is exercised. The client is a producer of record: acks=all and
// idempotent (franz-go's default), so each partition keeps its keys' order
// across retries and leader changes. brokers are comma-separated seeds.
// A rate is kept in steps of about 10 ms, so that input arrives
// continuously rather than in bursts. It returns where each row landed,
// or the first error.
func produceRows(ctx context.Context, brokers string, lines [][]byte, in rowInput) ([]rowPos, error) {
	topic := in.topic
	if topic == "" {
		topic = "transactions"
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.MaxBufferedRecords(20000), kgo.ProducerLinger(5 * time.Millisecond)}, in.opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	step := max(1, in.rate/100)
	pos := make([]rowPos, len(lines))
	var mu sync.Mutex
	var perr error
	start := time.Now()
	for i, l := range lines {
		var key []byte
		if f := bytes.SplitN(l, []byte(","), 3); len(f) > 1 {
			key = f[1]
		}
		cl.Produce(ctx, &kgo.Record{Key: key, Value: l}, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if perr == nil {
					perr = err
				}
				return
			}
			pos[i] = rowPos{r.Partition, r.Offset}
			if in.acked != nil {
				in.acked.Add(1)
			}
		})
		if in.rate > 0 && i%step == step-1 {
			due := start.Add(time.Duration(i+1) * time.Second / time.Duration(in.rate))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(d):
				}
			}
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if perr != nil {
		return nil, perr
	}
	return pos, nil
}

// produceRaw publishes the rows to the input topic at rate rows per
// second (0: as fast as possible); see produceRows.
func produceRaw(ctx context.Context, broker string, lines [][]byte, rate int) error {
	_, err := produceRows(ctx, broker, lines, rowInput{rate: rate})
	return err
}

// readTopics reads topics read_committed from the start, as a downstream
// consumer would, until they have been quiet for 3 s (at most 2 minutes).
func readTopics(t testing.TB, broker string, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []*kgo.Record
	for quiet := 0; quiet < 3; {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			t.Fatalf("reading %v took more than 2 minutes", topics)
		}
		n := len(out)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
		if len(out) == n {
			quiet++
		} else {
			quiet = 0
		}
	}
	return out
}

// readOutput reads transactions-out and transactions-dlq (readTopics)
// into synth's output checker. A dead letter's source is its
// txstream-source-{topic,partition,offset} headers, joined by "/".
func readOutput(t *testing.T, broker string) *synth.OutputChecker {
	t.Helper()
	return readOutputTopics(t, broker, "transactions-out", "transactions-dlq")
}

// readOutputTopics is readOutput of other output and dead-letter topics.
func readOutputTopics(t testing.TB, broker, out, dlq string) *synth.OutputChecker {
	t.Helper()
	c := synth.NewOutputChecker()
	for _, r := range readTopics(t, broker, out, dlq) {
		if r.Topic == dlq {
			var src []string
			for _, h := range r.Headers {
				if strings.HasPrefix(h.Key, "txstream-source-") {
					src = append(src, string(h.Value))
				}
			}
			c.AddDeadLetter(strings.Join(src, "/"))
			continue
		}
		_ = c.AddOutput(r.Value) // counted; Check reports it
	}
	return c
}

// verifyOutput reads the output (readOutput) and checks it against exp,
// the rows given to the consumer unfiltered: every valid transaction
// exactly once, every output record carrying the running aggregate of a
// failure-free pass, every bad row and conflicting duplicate a dead letter
// once, the final aggregate of every account. Each problem is a test
// error.
func verifyOutput(t *testing.T, broker string, exp *synth.Result) (*synth.OutputChecker, *synth.Report) {
	t.Helper()
	out := readOutput(t, broker)
	rep := out.Check(exp, synth.CheckOptions{})
	for _, p := range rep.Problems {
		t.Error(p)
	}
	return out, rep
}
