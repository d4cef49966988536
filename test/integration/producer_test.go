package integration

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
	"github.com/txstream/txstream/txcsv"
)

// readTopic reads every record of topic with a plain franz-go consumer: it
// lists the end offsets, then fetches until it has them all.
func readTopic(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		t.Fatalf("end offsets of %s: %v %v", topic, err, ends.Error())
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	got := map[int32]int64{}
	var recs []*kgo.Record
	complete := func() bool {
		for p, end := range want {
			if got[p] < end {
				return false
			}
		}
		return true
	}
	for !complete() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: have %v of %v", topic, got, want)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch partition %d: %v", p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			got[r.Partition] = r.Offset + 1
		})
	}
	return recs
}

// summaryOf returns the fields of the producer's JSON summary log line.
func summaryOf(t testing.TB, stderr string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && strings.HasPrefix(m["msg"].(string), "summary") {
			return m
		}
	}
	t.Fatalf("no summary line in:\n%s", tail(stderr, 3000))
	return nil
}

// validLines returns the data lines of a CSV file that are not in the
// producer's rejects file, by line number.
func validLines(t *testing.T, path, rejects string) map[int]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	out := map[int]string{}
	for i, l := range lines[1:] {
		out[i+2] = l
	}
	f, err := os.Open(rejects)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows[1:] {
		n, _ := strconv.Atoi(r[0])
		if out[n] != r[3] {
			t.Fatalf("rejects file: line %d is %q in the input, %q in the rejects", n, out[n], r[3])
		}
		delete(out, n)
	}
	return out
}

// checkExactlyOnce checks that the topic holds exactly the given lines, each
// as often as it occurs in want (duplicated input lines are published once
// per occurrence), with the right key and columns header, and every key on
// one partition.
func checkExactlyOnce(t *testing.T, recs []*kgo.Record, want map[int]string, header string) {
	t.Helper()
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	if len(recs) != len(want) {
		t.Errorf("topic holds %d records, want %d", len(recs), len(want))
	}
	schema := txcsv.MustSchema(strings.Split(header, ",")...)
	partOf := map[string]int32{}
	for _, r := range recs {
		v := string(r.Value)
		if count[v] == 0 {
			t.Fatalf("unexpected or duplicated record %q (partition %d offset %d)", v, r.Partition, r.Offset)
		}
		count[v]--
		row, err := schema.ParseLine(r.Value, 0)
		if err != nil {
			t.Fatalf("record %q: %v", v, err)
		}
		if string(r.Key) != row.Key() {
			t.Fatalf("record %q has key %q, want %q", v, r.Key, row.Key())
		}
		if len(r.Headers) != 1 || r.Headers[0].Key != txcsv.HeaderColumns || string(r.Headers[0].Value) != header {
			t.Fatalf("record %q has headers %v", v, r.Headers)
		}
		if p, ok := partOf[row.Key()]; ok && p != r.Partition {
			t.Fatalf("key %s on partitions %d and %d", row.Key(), p, r.Partition)
		}
		partOf[row.Key()] = r.Partition
	}
	for l, n := range count {
		if n > 0 {
			t.Errorf("line %q missing (%d times)", l, n)
		}
	}
}

func TestProducerSampleFile(t *testing.T) {
	bins := buildBinaries(t)
	broker := startBroker(t, "")
	input := bins.RepoPath("testdata/transactions.csv")
	rejects := filepath.Join(t.TempDir(), "rejects.csv")

	r := runBinary(t, 60*time.Second, bins.Path("producer"),
		"--brokers", broker.Addr, "--file", input, "--topic", "sample", "--rejects", rejects, "--log-format", "json")
	if r.Code != 0 {
		t.Fatalf("producer exit %d:\n%s", r.Code, tail(r.Stderr, 3000))
	}
	exp, err := synth.ExpectedFile(input)
	if err != nil {
		t.Fatal(err)
	}
	sum := summaryOf(t, r.Stderr)
	if sum["read"] != float64(exp.Rows) || sum["produced"] != float64(exp.Valid+exp.Duplicates) ||
		sum["rejected"] != float64(exp.Bad) || sum["failed"] != 0.0 || sum["not_acknowledged"] != 0.0 {
		t.Errorf("summary %v; expected rows %d valid+dup %d bad %d", sum, exp.Rows, exp.Valid+exp.Duplicates, exp.Bad)
	}
	want := validLines(t, input, rejects)
	if len(want) != exp.Valid+exp.Duplicates {
		t.Fatalf("%d lines not rejected, Expected says %d valid rows", len(want), exp.Valid+exp.Duplicates)
	}
	checkExactlyOnce(t, readTopic(t, broker.Addr, "sample"), want, synth.Header)
}

// Everything the producer reported as acknowledged survives a broker crash
// (SIGKILL) and restart on the same data directory.
func TestProducerAckedSurvivesBrokerKill(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"))
	input := filepath.Join(dir, "in.csv")
	rejects := filepath.Join(dir, "rejects.csv")
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed, cfg.BadFraction, cfg.DupFraction = 20000, 50, 7, 0.01, 0.02
	writeSynth(t, cfg, input)

	r := runBinary(t, 60*time.Second, bins.Path("producer"), "--brokers", broker.Addr, "--file", input,
		"--topic", "acked", "--create-topic-partitions", "4", "--rejects", rejects, "--log-format", "json")
	if r.Code != 0 {
		t.Fatalf("producer exit %d:\n%s", r.Code, tail(r.Stderr, 3000))
	}
	broker.Kill()
	broker.Restart()
	checkExactlyOnce(t, readTopic(t, broker.Addr, "acked"), validLines(t, input, rejects), synth.Header)
}

// The broker crashes while the producer is sending and comes back: the
// producer retries, exits 0, and the idempotent producer leaves every valid
// row exactly once in the topic.
func TestProducerBrokerKilledMidStream(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"))
	input := filepath.Join(dir, "in.csv")
	rejects := filepath.Join(dir, "rejects.csv")
	cfg := synth.DefaultConfig()
	cfg.Rows, cfg.Accounts, cfg.Seed, cfg.BadFraction, cfg.DupFraction = 6000, 20, 8, 0.01, 0.02
	writeSynth(t, cfg, input)

	// The topic exists before the producer starts, so that progress can be
	// watched from the first record.
	adm := newAdmin(t, broker.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := adm.adm.CreateTopic(ctx, 3, -1, nil, "midstream"); err != nil || resp.Err != nil {
		t.Fatalf("creating the topic: %v %v", err, resp.Err)
	}

	// Paced so that the crash happens mid-stream: about 3 s of sending.
	cmd := exec.Command(bins.Path("producer"), "--brokers", broker.Addr, "--file", input, "--topic", "midstream",
		"--rate", "2000", "--rejects", rejects, "--log-format", "json")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	// Wait until a good part is in the topic, then crash the broker.
	deadline := time.Now().Add(20 * time.Second)
	var atKill int64
	for atKill = endTotal(adm, "midstream"); atKill < 1000; atKill = endTotal(adm, "midstream") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress before the crash:\n%s", tail(stderr.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	adm.Close()
	if atKill > 4000 {
		t.Fatalf("the producer was too far (%d records) when the broker was killed: not mid-stream", atKill)
	}
	t.Logf("killing the broker with %d records written", atKill)
	broker.Kill()
	time.Sleep(500 * time.Millisecond) // the producer keeps reading and retrying meanwhile
	broker.Restart()

	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("producer: %v\n%s", err, tail(stderr.String(), 3000))
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("producer did not finish after the restart:\n%s", tail(stderr.String(), 3000))
	}
	sum := summaryOf(t, stderr.String())
	want := validLines(t, input, rejects)
	if sum["produced"] != float64(len(want)) {
		t.Errorf("summary %v, want %d produced", sum, len(want))
	}
	checkExactlyOnce(t, readTopic(t, broker.Addr, "midstream"), want, synth.Header)
}

func writeSynth(t testing.TB, cfg synth.Config, path string) synth.Stats {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := synth.Generate(cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type admin struct {
	cl  *kgo.Client
	adm *kadm.Client
}

func newAdmin(t *testing.T, addr string) *admin {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	return &admin{cl, kadm.NewClient(cl)}
}

func (a *admin) Close() { a.cl.Close() }

// endTotal is the sum of the topic's end offsets (-1 on error).
func endTotal(a *admin, topic string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ends, err := a.adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return -1
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	return total
}
