package integration

// Edge cases of recovery that an operator or the broker causes, not a
// crash: the group's offsets deleted, records deleted past the job's
// position, a savepoint started into a new group while the first attempt
// fails, a 2 MiB input line inside a zstd batch, and a checkpoint
// directory left over from an earlier incarnation of the input topic.
// Each test runs the real consumer binary against the chosen broker and
// checks exit codes, the log lines that explain the decision, and the
// committed output against synth.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/checkpoint"
)

const (
	edgeTopic    = "transactions"
	edgeGroup    = "txstream" // the consumer's default --group
	edgeProgress = "txstream-progress"
)

// TestEdgeGroupOffsetsDeleted: the group's committed offsets are deleted
// (as an administrator does, or as offsets.retention.minutes does to an
// empty group) while snapshots exist. The next run takes C from the
// progress topic and outputs only the input that arrived since. With the
// progress topic gone as well, the consumer refuses to start (exit 3)
// rather than output everything again.
func TestEdgeGroupOffsetsDeleted(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", edgeTopic)
	adm := edgeAdmin(t, broker.Addr)
	ctx := context.Background()

	a := genDataset(t, 4000, 100, 21)
	if err := produceRaw(ctx, broker.Addr, a.lines, 0); err != nil {
		t.Fatal(err)
	}
	runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	before := edgeGroupOffsets(t, adm, edgeGroup)
	if edgeSum(before) != int64(len(a.lines)) || len(before) != 3 {
		t.Fatalf("after the first run the group has offsets %v, want 3 partitions summing to %d", before, len(a.lines))
	}

	edgeDeleteGroupOffsets(t, adm, edgeGroup)
	if got := edgeGroupOffsets(t, adm, edgeGroup); len(got) != 0 {
		t.Fatalf("group offsets still there after DeleteOffsets: %v", got)
	}

	b := genDataset(t, 2000, 100, 22)
	edgeRetag(b.lines, "TY-")
	if err := produceRaw(ctx, broker.Addr, b.lines, 0); err != nil {
		t.Fatal(err)
	}
	both := combine(t, a, b)
	p := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	log := p.log.String()
	for part, c := range before {
		want := fmt.Sprintf("resuming at %d from the progress topic", c)
		if !edgeHas(log, func(l edgeLine) bool {
			return l.int("partition") == int64(part) && strings.Contains(l.str("msg"), want)
		}) {
			t.Errorf("partition %d: no warning %q; log:\n%s", part, want, grepLines(log, "progress", 10))
		}
		if !edgeHas(log, func(l edgeLine) bool {
			return l.str("msg") == "recovering partition" && l.int("partition") == int64(part) &&
				l.str("commit_point_from") == "progress" && l.int("resume_at") == c && strings.HasPrefix(l.str("from"), "snapshot ")
		}) {
			t.Errorf("partition %d: want recovery from a snapshot with the commit point %d from the progress topic; log:\n%s",
				part, c, grepLines(log, "recovering partition", 10))
		}
	}
	verifyOutput(t, broker.Addr, both.exp)
	if got := edgeSum(edgeGroupOffsets(t, adm, edgeGroup)); got != int64(len(a.lines)+len(b.lines)) {
		t.Errorf("after the second run the group's offsets sum to %d, want %d", got, len(a.lines)+len(b.lines))
	}
	if t.Failed() {
		return
	}

	// Neither the group's offsets nor the progress records: the snapshots
	// show the job processed the partitions, so it must refuse to start.
	edgeDeleteGroupOffsets(t, adm, edgeGroup)
	edgeDeleteTopics(t, adm, edgeProgress)
	p = startConsumer(t, bins, nil, append(consumerArgs(broker.Addr, dir, "c1"), "--exit-when-idle", "3s")...)
	if !p.wait(90 * time.Second) {
		t.Fatalf("consumer with no offsets anywhere still runs after 90 s (it must refuse to start); log:\n%s", tail(p.log.String(), 4000))
	}
	failed := edgeFailure(p.log.String())
	if p.code != 3 || !strings.Contains(failed, "committed offsets missing") || !strings.Contains(failed, "the progress topic no record") ||
		!strings.Contains(failed, "partition ") || !strings.Contains(failed, edgeProgress) {
		t.Errorf("with group offsets and progress topic deleted: exit %d, error %q; want exit 3 and an error naming the partition and the missing offsets; log:\n%s",
			p.code, failed, tail(p.log.String(), 3000))
	}
	if strings.Contains(p.log.String(), `"commit_point_from":"new"`) {
		t.Errorf("a partition was treated as new although snapshots exist:\n%s", grepLines(p.log.String(), "recovering partition", 5))
	}
	verifyOutput(t, broker.Addr, both.exp) // nothing output again
}

// TestEdgeDeleteRecordsPastPosition: while a consumer is stopped (SIGSTOP)
// at its commit point, new input arrives and DeleteRecords moves one
// partition's log start past that point. The consumer must fail (exit 3)
// with an error naming the partition, both when it continues and when it
// is started afresh, never reset silently; with --allow-state-loss it
// runs, and its aggregates then lack exactly the deleted records.
func TestEdgeDeleteRecordsPastPosition(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", edgeTopic)
	adm := edgeAdmin(t, broker.Addr)
	ctx := context.Background()
	const victim = int32(1)

	a := genDataset(t, 3000, 90, 31)
	if err := produceRaw(ctx, broker.Addr, a.lines, 0); err != nil {
		t.Fatal(err)
	}
	// A session long enough to outlast the stop: the member keeps its
	// partitions and sees the gap at its fetch position, not in recovery.
	args := consumerArgs(broker.Addr, dir, "c1", "--session-timeout", "30s")
	p := startConsumer(t, bins, nil, args...)
	if err := waitCommitted(broker.Addr, edgeGroup, int64(len(a.lines)), time.Minute, func() {}); err != nil {
		t.Fatalf("%v; log:\n%s", err, tail(p.log.String(), 3000))
	}
	committed := edgeGroupOffsets(t, adm, edgeGroup)
	c := committed[victim]
	// The snapshot at C makes the expectation exact: with state loss
	// allowed, the state is A's and only B's deleted records are missing.
	edgeWaitLog(t, p, 30*time.Second, "a snapshot of partition 1 at its commit point", func(l edgeLine) bool {
		return l.str("msg") == "snapshot published" && l.int("partition") == int64(victim) && l.int("offset") == c
	})
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The fetch the client has in flight is answered (empty) after
	// franz-go's default fetch max wait of 5 s; the stopped process sends
	// no other, so its next fetch, after SIGCONT, asks for C.
	time.Sleep(6 * time.Second)

	b := genDataset(t, 3000, 90, 32)
	edgeRetag(b.lines, "TY-")
	pos := edgeProduce(t, broker.Addr, edgeTopic, b.lines)
	inVictim := 0
	for _, ps := range pos {
		if ps.p == victim {
			inVictim++
		}
	}
	cut := c + int64(inVictim/2)
	resps, err := adm.DeleteRecords(ctx, kadm.Offsets{edgeTopic: {victim: {Topic: edgeTopic, Partition: victim, At: cut, LeaderEpoch: -1}}})
	if err == nil {
		if r, ok := resps.Lookup(edgeTopic, victim); !ok {
			err = errors.New("no response for the partition")
		} else if r.Err != nil {
			err = r.Err
		} else if r.LowWatermark != cut {
			err = fmt.Errorf("log start is now %d, want %d", r.LowWatermark, cut)
		}
	}
	if err != nil {
		t.Fatalf("DeleteRecords %s/%d before %d: %v", edgeTopic, victim, cut, err)
	}
	t.Logf("partition %d: committed %d, %d new records, log start moved to %d; consumer stopped for %v",
		victim, c, inVictim, cut, time.Since(stopped).Round(time.Millisecond))
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !p.wait(60 * time.Second) {
		t.Fatalf("consumer still runs 60 s after its position's records were deleted (it must fail); log:\n%s", tail(p.log.String(), 4000))
	}
	failed := edgeFailure(p.log.String())
	if p.code != 3 || !strings.Contains(failed, "partition 1") || !strings.Contains(failed, "state loss") ||
		!strings.Contains(failed, fmt.Sprint(c)) || !strings.Contains(failed, "--allow-state-loss") {
		t.Errorf("live consumer after DeleteRecords past its position: exit %d, error %q; want exit 3, naming partition 1, position %d and --allow-state-loss; log:\n%s",
			p.code, failed, c, tail(p.log.String(), 3000))
	}
	edgeNoSilentReset(t, p.log.String(), victim, cut)

	// A fresh start finds the gap in recovery.
	p = startConsumer(t, bins, nil, edgeWith(args, "--exit-when-idle", "3s")...)
	if !p.wait(60 * time.Second) {
		t.Fatalf("fresh consumer still runs 60 s after start (it must fail); log:\n%s", tail(p.log.String(), 4000))
	}
	failed = edgeFailure(p.log.String())
	gap := fmt.Sprintf("records %d..%d are gone", c, cut-1)
	if p.code != 3 || !strings.Contains(failed, "partition 1") || !strings.Contains(failed, gap) ||
		!strings.Contains(failed, "state loss") || !strings.Contains(failed, "--allow-state-loss") {
		t.Errorf("fresh start after DeleteRecords: exit %d, error %q; want exit 3 naming partition 1 and %q; log:\n%s",
			p.code, failed, gap, tail(p.log.String(), 3000))
	}
	edgeNoSilentReset(t, p.log.String(), victim, cut)

	// --allow-state-loss: runs to idle; the deleted records are missing
	// from the aggregates, everything else is output once.
	p = edgeRunToIdle(t, bins, 90*time.Second, edgeWith(args, "--allow-state-loss"))
	log := p.log.String()
	if !edgeHas(log, func(l edgeLine) bool {
		return l.int("partition") == int64(victim) && strings.HasPrefix(l.str("msg"), "STATE LOSS allowed") && strings.Contains(l.str("msg"), fmt.Sprint(cut))
	}) {
		t.Errorf("no STATE LOSS warning for partition 1; log:\n%s", grepLines(log, "STATE LOSS", 5))
	}
	var kept [][]byte
	kept = append(kept, a.lines...)
	for i, l := range b.lines {
		if pos[i].p != victim || pos[i].off >= cut {
			kept = append(kept, l)
		}
	}
	exp := expectRows(t, kept)
	t.Logf("expectation without the %d deleted records: %d valid transactions", len(a.lines)+len(b.lines)-len(kept), exp.Valid)
	verifyOutput(t, broker.Addr, exp)
}

// TestEdgeSavepointNewGroupFailFirstRecord: a savepoint is started into a
// new group whose first attempt fails at its first record; the in-process
// restart must restore the savepoint again (the new group still has no
// offsets). The output continues exactly after the savepoint's offsets,
// with running aggregates that continue from its state. A restart with
// --from-savepoint still set, once the group is past it, ignores it.
func TestEdgeSavepointNewGroupFailFirstRecord(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", edgeTopic)
	adm := edgeAdmin(t, broker.Addr)
	ctx := context.Background()

	a := genDataset(t, 4000, 100, 41)
	if err := produceRaw(ctx, broker.Addr, a.lines, 0); err != nil {
		t.Fatal(err)
	}
	spDir := stopWithSavepoint(t, bins, broker.Addr, dir, int64(len(a.lines)), time.Minute)
	sp, err := checkpoint.LoadSavepoint(spDir)
	if err != nil {
		t.Fatal(err)
	}
	spOff := map[int32]int64{}
	for _, part := range sp.Partitions {
		if part.Topic == edgeTopic {
			spOff[part.Partition] = part.Offset
		}
	}
	if len(spOff) != 3 || edgeSum(spOff) != int64(len(a.lines)) {
		t.Fatalf("savepoint %s has offsets %v, want 3 partitions summing to %d", sp.Name, spOff, len(a.lines))
	}

	b := genDataset(t, 2000, 100, 42)
	edgeRetag(b.lines, "TY-")
	if err := produceRaw(ctx, broker.Addr, b.lines, 0); err != nil {
		t.Fatal(err)
	}
	// A new group: no offsets, no progress records of its own. Same
	// checkpoint directory, as a job moved to a new group keeps it.
	args := consumerArgs(broker.Addr, dir, "g2", "--group", "g2", "--from-savepoint", spDir, "--fail-at-record", "1", "--fail-times", "1")
	p := edgeRunToIdle(t, bins, 90*time.Second, args)
	log := p.log.String()
	if n := strings.Count(log, "injected failure at record 1"); n == 0 {
		t.Errorf("the first attempt did not fail at its first record; log:\n%s", tail(log, 3000))
	}
	// Every recovery of this process, in both attempts, restores the
	// savepoint and resumes at its offset.
	perPart := map[int32]int{}
	for _, l := range edgeLines(log) {
		if l.str("msg") != "recovering partition" {
			continue
		}
		part := int32(l.int("partition"))
		if l.str("from") != "savepoint "+sp.Name || l.int("resume_at") != spOff[part] {
			t.Errorf("partition %d recovered from %q resuming at %d; want savepoint %s at %d (the failed attempt committed nothing)",
				part, l.str("from"), l.int("resume_at"), sp.Name, spOff[part])
		}
		perPart[part]++
	}
	for part := int32(0); part < 3; part++ {
		if perPart[part] < 2 {
			t.Errorf("partition %d was recovered %d times; want the savepoint restored in the failed attempt and again in the restart; log:\n%s",
				part, perPart[part], grepLines(log, "recovering partition", 10))
		}
	}
	verifyOutput(t, broker.Addr, combine(t, a, b).exp)
	g2 := edgeGroupOffsets(t, adm, "g2")
	if edgeSum(g2) != int64(len(a.lines)+len(b.lines)) {
		t.Errorf("group g2 committed %v, want the end of the input (%d records)", g2, len(a.lines)+len(b.lines))
	}
	if t.Failed() {
		return
	}

	// The same command line again, after more input: g2 is past the
	// savepoint on every partition, so it is ignored (also in the restart
	// after the injected failure) and recovery uses g2's snapshots.
	c := genDataset(t, 1000, 100, 43)
	edgeRetag(c.lines, "TZ-")
	if err := produceRaw(ctx, broker.Addr, c.lines, 0); err != nil {
		t.Fatal(err)
	}
	p = edgeRunToIdle(t, bins, 90*time.Second, args)
	log = p.log.String()
	for part := int32(0); part < 3; part++ {
		want := fmt.Sprintf("the group is at %d, past savepoint %s (offset %d): the savepoint was applied before and is ignored", g2[part], sp.Name, spOff[part])
		if !edgeHas(log, func(l edgeLine) bool {
			return l.int("partition") == int64(part) && strings.Contains(l.str("msg"), want)
		}) {
			t.Errorf("partition %d: no warning %q; log:\n%s", part, want, grepLines(log, "savepoint", 10))
		}
	}
	if edgeHas(log, func(l edgeLine) bool {
		return l.str("msg") == "recovering partition" && strings.HasPrefix(l.str("from"), "savepoint")
	}) {
		t.Errorf("the savepoint was restored although the group is past it:\n%s", grepLines(log, "recovering partition", 10))
	}
	all := append(append(append([][]byte{}, a.lines...), b.lines...), c.lines...)
	verifyOutput(t, broker.Addr, expectRows(t, all))
}

// TestEdgeHugeZstdLine: one 2 MiB (compressible) input line among normal
// rows, produced in a zstd batch that stays far below the broker's limits.
// The consumer must neither loop nor fail: the line becomes a truncated
// dead letter (reason line_too_long, the original size in a header), every
// other record is output once; a full replay over it (checkpoint directory
// removed) outputs nothing again.
func TestEdgeHugeZstdLine(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"))
	adm := edgeAdmin(t, broker.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"max.message.bytes": kadm.StringPtr(strconv.Itoa(8 << 20))}, edgeTopic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating %s with max.message.bytes 8 MiB: %v", edgeTopic, err)
	}

	ds := genDataset(t, 3000, 100, 51)
	acct := bytes.Split(ds.lines[0], []byte(","))[1]
	big := []byte("TX-HUGE-1," + string(acct) + ",1.00,")
	big = append(big, bytes.Repeat([]byte("7"), 2<<20-len(big))...)
	mid := len(ds.lines) / 2
	lines := append(append(append([][]byte{}, ds.lines[:mid]...), big), ds.lines[mid:]...)
	exp := expectRows(t, lines)
	if exp.BadByReason["line_too_long"] != 1 {
		t.Fatalf("synth counts %d line_too_long rows, want 1", exp.BadByReason["line_too_long"])
	}
	pos := edgeProduce(t, broker.Addr, edgeTopic, lines,
		kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.ProducerBatchMaxBytes(8<<20))
	bigAt := pos[mid]

	p := edgeRunToIdle(t, bins, 90*time.Second, consumerArgs(broker.Addr, dir, "c1"))
	log := p.log.String()
	if n := strings.Count(log, `"msg":"recovering partition"`); n != 3 {
		t.Errorf("%d partition recoveries, want 3 (one attempt, no restart); log:\n%s", n, grepLines(log, `"level":"error"`, 10))
	}
	verifyOutput(t, broker.Addr, exp)

	found := 0
	for _, r := range readTopics(t, broker.Addr, "transactions-dlq") {
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		if h["txstream-source-partition"] != fmt.Sprint(bigAt.p) || h["txstream-source-offset"] != fmt.Sprint(bigAt.off) {
			continue
		}
		found++
		if h["txstream-dlq-reason"] != "line_too_long" || h["txstream-dlq-truncated-from"] != strconv.Itoa(len(big)) ||
			len(r.Value) == 0 || len(r.Value) > 64<<10 || !bytes.HasPrefix(big, r.Value) {
			t.Errorf("dead letter of the 2 MiB line: reason %q, truncated-from %q (want %d), value %d bytes (want a prefix of at most 64 KiB)",
				h["txstream-dlq-reason"], h["txstream-dlq-truncated-from"], len(big), len(r.Value))
		}
	}
	if found != 1 {
		t.Errorf("%d dead letters for %s/%d@%d (the 2 MiB line), want 1", found, edgeTopic, bigAt.p, bigAt.off)
	}
	if t.Failed() {
		return
	}

	// A full replay over the huge record: no snapshots, replay from the
	// log start without output.
	if err := os.RemoveAll(filepath.Join(dir, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	p = edgeRunToIdle(t, bins, 90*time.Second, consumerArgs(broker.Addr, dir, "c1"))
	if !edgeHas(p.log.String(), func(l edgeLine) bool {
		return l.str("msg") == "partition recovered" && l.int("partition") == int64(bigAt.p) && l.int("replayed") > bigAt.off
	}) {
		t.Errorf("partition %d was not replayed over the 2 MiB record; log:\n%s", bigAt.p, grepLines(p.log.String(), "recover", 10))
	}
	verifyOutput(t, broker.Addr, exp)
}

// TestEdgeForeignSnapshotDir: the input topic is deleted and re-created
// (a new topic id) under a job whose checkpoint directory, progress
// records (and, where the broker keeps them, group offsets) describe the
// old incarnation. The old snapshots and progress records must be
// ignored, and the output equal a failure-free pass over the new data.
func TestEdgeForeignSnapshotDir(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", edgeTopic)
	adm := edgeAdmin(t, broker.Addr)
	ctx := context.Background()

	a := genDataset(t, 3000, 100, 61)
	if err := produceRaw(ctx, broker.Addr, a.lines, 0); err != nil {
		t.Fatal(err)
	}
	runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	oldID := edgeTopicID(t, adm, edgeTopic)
	snaps, _ := filepath.Glob(filepath.Join(dir, "checkpoints", "partitions", "*", "*", "MANIFEST-*"))
	if len(snaps) == 0 || oldID == "" {
		t.Fatalf("after the first run: %d snapshots, topic id %q; the test needs both", len(snaps), oldID)
	}

	// A new incarnation of the input; the output topics go too, so that
	// what is read back is this incarnation's output alone.
	edgeDeleteTopics(t, adm, edgeTopic, "transactions-out", "transactions-dlq")
	edgeCreateTopic(t, adm, edgeTopic, 3)
	newID := edgeTopicID(t, adm, edgeTopic)
	if newID == oldID || newID == "" {
		t.Fatalf("re-created topic has id %q, the old one %q", newID, oldID)
	}
	if left := edgeGroupOffsets(t, adm, edgeGroup); len(left) > 0 {
		// Kafka drops a deleted topic's offsets; other brokers may not.
		t.Logf("the group kept offsets %v of the deleted topic; deleting them", left)
		edgeDeleteGroupOffsets(t, adm, edgeGroup)
	}

	// Same transaction ids as before with other content, and more rows:
	// state or positions of the old incarnation would show up as
	// conflicts, skipped records or wrong aggregates.
	b := genDataset(t, 4500, 100, 62)
	if err := produceRaw(ctx, broker.Addr, b.lines, 0); err != nil {
		t.Fatal(err)
	}
	p := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "c1"))
	log := p.log.String()
	for part := int64(0); part < 3; part++ {
		if !edgeHas(log, func(l edgeLine) bool {
			m := l.str("msg")
			return l.int("partition") == part && strings.HasPrefix(m, "snapshot ") && strings.Contains(m, "topic id "+oldID) && strings.HasSuffix(m, "skipped")
		}) {
			t.Errorf("partition %d: no warning that the old incarnation's snapshots were skipped; log:\n%s", part, grepLines(log, "skipped", 10))
		}
		if !edgeHas(log, func(l edgeLine) bool {
			m := l.str("msg")
			return l.int("partition") == part && strings.HasPrefix(m, "progress record names topic id "+oldID) && strings.Contains(m, "ignored")
		}) {
			t.Errorf("partition %d: no warning that the old incarnation's progress record was ignored; log:\n%s", part, grepLines(log, "progress record", 10))
		}
		if !edgeHas(log, func(l edgeLine) bool {
			return l.str("msg") == "recovering partition" && l.int("partition") == part && l.str("from") == "empty" &&
				l.str("commit_point_from") == "new" && l.int("resume_at") == 0
		}) {
			t.Errorf("partition %d: want recovery from empty state as a new partition at offset 0; log:\n%s", part, grepLines(log, "recovering partition", 10))
		}
	}
	verifyOutput(t, broker.Addr, b.exp)
}

// --- helpers (prefixed edge: other files of the package are edited concurrently)

func edgeAdmin(t *testing.T, addr string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// edgeGroupOffsets returns the group's committed offsets for the input
// topic, by partition.
func edgeGroupOffsets(t *testing.T, adm *kadm.Client, group string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatalf("fetching offsets of group %s: %v", group, err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == edgeTopic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

func edgeSum(m map[int32]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

// edgeDeleteGroupOffsets deletes the group's offsets of the input topic.
// Kafka refuses while a member is subscribed to the topic: retried until
// the group is empty.
func edgeDeleteGroupOffsets(t *testing.T, adm *kadm.Client, group string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resps, err := adm.DeleteOffsets(ctx, group, kadm.TopicsSet{edgeTopic: {0: {}, 1: {}, 2: {}}})
		cancel()
		if err == nil {
			err = resps.Error()
		}
		if err == nil || errors.Is(err, kerr.GroupIDNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleting the offsets of group %s: %v", group, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// edgeDeleteTopics deletes topics and waits until the metadata no longer
// lists them.
func edgeDeleteTopics(t *testing.T, adm *kadm.Client, topics ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	resps, err := adm.DeleteTopics(ctx, topics...)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatalf("deleting topics %v: %v", topics, err)
	}
	for {
		details, err := adm.ListTopics(ctx, topics...)
		gone := err == nil
		for _, td := range details {
			if td.Err == nil {
				gone = false
			}
		}
		if gone {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("topics %v still listed 45 s after deletion (%v)", topics, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// edgeCreateTopic creates a topic, retrying while a deletion of the same
// name is still under way.
func edgeCreateTopic(t *testing.T, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for {
		resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("creating topic %s: %v", topic, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Wait until every partition has a leader.
	for {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if td, ok := details[topic]; ok && td.Err == nil && len(td.Partitions) == int(partitions) {
				ready := true
				for _, pd := range td.Partitions {
					if pd.Err != nil || pd.Leader < 0 {
						ready = false
					}
				}
				if ready {
					return
				}
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("topic %s not ready: %v", topic, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// edgeTopicID is the topic's id written as the consumer logs it (UUID
// form); "" if the broker has none.
func edgeTopicID(t *testing.T, adm *kadm.Client, topic string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	details, err := adm.ListTopics(ctx, topic)
	if err != nil || details[topic].Err != nil {
		t.Fatalf("describing %s: %v %v", topic, err, details[topic].Err)
	}
	id := details[topic].ID
	if id == (kadm.TopicID{}) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
}

// edgeRetag gives a dataset's transactions ids of their own (TX- → prefix).
func edgeRetag(lines [][]byte, prefix string) {
	for i, l := range lines {
		lines[i] = bytes.Replace(l, []byte("TX-"), []byte(prefix), 1)
	}
}

// edgeProduce publishes the rows to topic with extra client options
// (produceRows) and returns where each one landed.
func edgeProduce(t *testing.T, addr, topic string, lines [][]byte, opts ...kgo.Opt) []rowPos {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pos, err := produceRows(ctx, addr, lines, rowInput{topic: topic, opts: opts})
	if err != nil {
		t.Fatalf("producing to %s: %v", topic, err)
	}
	return pos
}

// edgeRunToIdle is runToIdle with a tighter bound: a consumer that loops
// on a record fails the test in d, not in minutes.
func edgeRunToIdle(t *testing.T, bins *Binaries, d time.Duration, args []string) *consumerProc {
	t.Helper()
	p := startConsumer(t, bins, nil, edgeWith(args, "--exit-when-idle", "3s")...)
	if !p.wait(d) {
		t.Fatalf("consumer did not finish within %v; log tail:\n%s", d, tail(p.log.String(), 4000))
	}
	if p.code != 0 {
		t.Fatalf("consumer exited %d; job state changes:\n%s\nlog tail:\n%s", p.code,
			grepLines(p.log.String(), `"logger":"job"`, 8), tail(p.log.String(), 3000))
	}
	return p
}

// edgeWith is args plus extra, in a new slice (args may be reused).
func edgeWith(args []string, extra ...string) []string {
	return append(append([]string{}, args...), extra...)
}

// edgeLine is one JSON log line of the consumer.
type edgeLine map[string]any

func (l edgeLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

func (l edgeLine) int(k string) int64 {
	if f, ok := l[k].(float64); ok {
		return int64(f)
	}
	return -1
}

func edgeLines(log string) []edgeLine {
	var out []edgeLine
	for _, s := range strings.Split(log, "\n") {
		var l edgeLine
		if strings.HasPrefix(s, "{") && json.Unmarshal([]byte(s), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func edgeHas(log string, match func(edgeLine) bool) bool {
	for _, l := range edgeLines(log) {
		if match(l) {
			return true
		}
	}
	return false
}

// edgeFailure is the error of the "job FAILED" line ("" if none).
func edgeFailure(log string) string {
	for _, l := range edgeLines(log) {
		if l.str("msg") == "job FAILED" {
			return l.str("error")
		}
	}
	return ""
}

// edgeWaitLog waits until a running consumer logs a matching line.
func edgeWaitLog(t *testing.T, p *consumerProc, d time.Duration, what string, match func(edgeLine) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !edgeHas(p.log.String(), match) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for %s within %v; log tail:\n%s", what, d, tail(p.log.String(), 3000))
		}
		select {
		case <-p.done:
			t.Fatalf("consumer exited %d before logging %s; log tail:\n%s", p.code, what, tail(p.log.String(), 3000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// edgeNoSilentReset checks that nothing processed the partition from its
// new log start: no epoch may commit past the gap without state loss
// allowed.
func edgeNoSilentReset(t *testing.T, log string, p int32, start int64) {
	t.Helper()
	var bad []string
	for _, l := range edgeLines(log) {
		if l.int("partition") == int64(p) && (l.str("msg") == "partition recovered" || l.str("msg") == "snapshot published") &&
			(l.int("resume_at") >= start || l.int("offset") >= start) {
			b, _ := json.Marshal(l)
			bad = append(bad, string(b))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("partition %d went on past the deleted records without --allow-state-loss:\n%s", p, strings.Join(bad, "\n"))
	}
}
