package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/txstream/txstream/synth"
)

// TestSavepointUpgradeAndReprocess: a job stops with a savepoint, a new
// process starts from it with more input (no duplicate output), then the
// group is rewound to the savepoint with --reprocess (everything after it
// is output again, and the state still counts each transaction once). The
// offline tools are checked on the checkpoint directory that results.
func TestSavepointUpgradeAndReprocess(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", "transactions")
	ctx := context.Background()

	a := genDataset(t, 20_000, 200, 11)
	if err := produceRaw(ctx, broker.Addr, a.lines, 0); err != nil {
		t.Fatal(err)
	}
	// 1. Run until everything is committed, then SIGINT: drain, final
	// snapshot, savepoint, leave the group.
	sp := stopWithSavepoint(t, bins, broker.Addr, dir, int64(len(a.lines)), 2*time.Minute)

	// 2. Upgrade: a new process (another data dir) starts from the
	// savepoint while more input arrives. Output stays exactly-once.
	b := genDataset(t, 5000, 200, 12)
	for i, l := range b.lines {
		b.lines[i] = bytes.Replace(l, []byte("TX-"), []byte("TY-"), 1)
	}
	if err := produceRaw(ctx, broker.Addr, b.lines, 0); err != nil {
		t.Fatal(err)
	}
	both := combine(t, a, b)
	v2 := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "v2", "--from-savepoint", sp))
	if !strings.Contains(v2.log.String(), `"from":"savepoint `) {
		t.Errorf("v2 did not restore from the savepoint:\n%s", grepLines(v2.log.String(), "recovering", 5))
	}
	verifyOutput(t, broker.Addr, both.exp)

	// 3. Reprocess: rewind the group to the savepoint; B's transactions
	// are output a second time, A's are not, and the final aggregates
	// are still those of A+B once each.
	v3 := runToIdle(t, bins, consumerArgs(broker.Addr, dir, "v3", "--from-savepoint", sp, "--reprocess"))
	if !strings.Contains(v3.log.String(), "REPROCESSING") {
		t.Errorf("--reprocess did not say so loudly:\n%s", tail(v3.log.String(), 2000))
	}
	out := readOutput(t, broker.Addr)
	rep := out.Check(both.exp, synth.CheckOptions{})
	if len(rep.Unexpected) > 0 || rep.Undecodable > 0 {
		t.Errorf("after reprocessing: %d unknown transaction ids (%v), %d undecodable records", len(rep.Unexpected), rep.Unexpected, rep.Undecodable)
	}
	twice, once := 0, 0
	for id := range both.exp.Running {
		switch n := out.Count(id); {
		case strings.HasPrefix(id, "TY-") && n == 2:
			twice++
		case strings.HasPrefix(id, "TX-") && n == 1:
			once++
		default:
			t.Errorf("transaction %s output %d times after reprocessing", id, n)
		}
	}
	if twice != b.exp.Valid || once != a.exp.Valid {
		t.Errorf("after --reprocess: %d B transactions twice (want %d), %d A transactions once (want %d)", twice, b.exp.Valid, once, a.exp.Valid)
	}
	for _, acc := range rep.Accounts {
		if acc.Count != acc.WantCount {
			t.Errorf("account %s: last count %d, want %d", acc.Account, acc.Count, acc.WantCount)
			break
		}
	}

	checkTools(t, bins, filepath.Join(dir, "checkpoints"), both)
}

// stopWithSavepoint runs a consumer (instance v1, --savepoint-on-stop)
// until the group has committed n input records (within d), stops it
// gracefully with SIGINT (drain, final snapshot, savepoint, leave the
// group), and returns the directory of the one stop-* savepoint.
func stopWithSavepoint(t *testing.T, bins *Binaries, broker, dir string, n int64, d time.Duration) string {
	t.Helper()
	p := startConsumer(t, bins, nil, consumerArgs(broker, dir, "v1", "--savepoint-on-stop")...)
	if err := waitCommitted(broker, "txstream", n, d, func() {}); err != nil {
		t.Fatalf("%v; log:\n%s", err, tail(p.log.String(), 3000))
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	if !p.wait(time.Minute) || p.code != 0 {
		t.Fatalf("graceful stop: exit %d; log:\n%s", p.code, tail(p.log.String(), 3000))
	}
	sps, _ := filepath.Glob(filepath.Join(dir, "checkpoints", "savepoints", "stop-*"))
	if len(sps) != 1 {
		t.Fatalf("want one stop-* savepoint, got %v; log:\n%s", sps, grepLines(p.log.String(), "savepoint", 5))
	}
	return sps[0]
}

// checkTools runs the offline checkpoint tools on a real directory.
func checkTools(t *testing.T, bins *Binaries, ck string, ds *dataset) {
	t.Helper()
	consumer := bins.Path("consumer")
	r := runBinary(t, time.Minute, consumer, "checkpoints", "list", ck)
	if r.Code != 0 || !strings.Contains(r.Stdout, "snapshot") || !strings.Contains(r.Stdout, "savepoint") {
		t.Errorf("list: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r = runBinary(t, time.Minute, consumer, "checkpoints", "verify", ck)
	if r.Code != 0 || !strings.Contains(r.Stdout, " 0 failed") {
		t.Errorf("verify: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// inspect: the newest snapshot of each partition holds the final state;
	// the account is in exactly one partition.
	var acc string
	for k := range ds.exp.Accounts {
		acc = k
		break
	}
	found := 0
	for p := 0; p < 3; p++ {
		r = runBinary(t, time.Minute, consumer, "checkpoints", "inspect", ck, "--partition", string(rune('0'+p)), "--key", acc)
		var got struct {
			Found bool   `json:"found"`
			Count int64  `json:"count"`
			Total string `json:"total"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil {
			t.Errorf("inspect partition %d: not JSON: %v\n%s%s", p, err, r.Stdout, r.Stderr)
			continue
		}
		if got.Found {
			found++
			if want := ds.exp.Accounts[acc]; got.Count != want.Count || got.Total != want.Total.Text('f') {
				t.Errorf("inspect %s: count %d total %s, want %d %s", acc, got.Count, got.Total, want.Count, want.Total.Text('f'))
			}
			if r.Code != 0 {
				t.Errorf("inspect found the account but exited %d", r.Code)
			}
		} else if r.Code == 0 {
			t.Errorf("inspect of a missing account exited 0")
		}
	}
	if found != 1 {
		t.Errorf("account %s found in %d partitions' snapshots, want 1", acc, found)
	}
	r = runBinary(t, time.Minute, consumer, "checkpoints", "gc", ck)
	if r.Code != 0 || !strings.Contains(r.Stdout, "would remove") {
		t.Errorf("gc dry run: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	// Errors: not a checkpoint dir, usage, and a corrupt file.
	r = runBinary(t, time.Minute, consumer, "checkpoints", "list", t.TempDir()+"/nope")
	if r.Code != 1 || !strings.Contains(r.Stderr, "checkpoint") {
		t.Errorf("list of a missing dir: exit %d, stderr %q", r.Code, r.Stderr)
	}
	r = runBinary(t, time.Minute, consumer, "checkpoints", "inspect", ck)
	if r.Code != 2 {
		t.Errorf("inspect without --partition/--key: exit %d, want 2", r.Code)
	}
	snaps, _ := filepath.Glob(filepath.Join(ck, "partitions", "*", "*", "MANIFEST-*"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot MANIFEST to corrupt")
	}
	victim := snaps[0]
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(victim, data, 0o640); err != nil {
		t.Fatal(err)
	}
	r = runBinary(t, time.Minute, consumer, "checkpoints", "verify", ck)
	if r.Code != 1 || !strings.Contains(r.Stdout, "FAIL") || !strings.Contains(r.Stdout, filepath.Base(victim)) {
		t.Errorf("verify after corrupting %s: exit %d\n%s", victim, r.Code, r.Stdout)
	}
}
