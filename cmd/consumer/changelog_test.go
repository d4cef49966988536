package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"
	"github.com/cockroachdb/pebble/v2"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
)

// TestCheckpointToolsChangelog: list shows a base and its segments,
// verify reads the segments, inspect applies the change log; a damaged
// segment fails verify and inspect falls back to the base.
func TestCheckpointToolsChangelog(t *testing.T) {
	tmp := t.TempDir()
	ctx := context.Background()
	dir := filepath.Join(tmp, "ck")
	st, err := checkpoint.Open(dir, checkpoint.Options{Mode: checkpoint.ModeChangelog})
	if err != nil {
		t.Fatal(err)
	}
	account := func(count int64) []byte {
		var a aggregate.AccountState
		a.Count = count
		a.Total, a.Min, a.Max = *apd.New(count, 0), *apd.New(1, 0), *apd.New(1, 0)
		return a.Encode(nil)
	}
	store, err := pipeline.OpenStore(filepath.Join(tmp, "live"), pipeline.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.DB().Set(aggregate.AccountKey(nil, "acc-1"), account(3), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(tmp, "staging")
	if err := store.Checkpoint(staging); err != nil {
		t.Fatal(err)
	}
	_ = store.Close()
	base, _, err := st.PublishFrom(ctx, checkpoint.Source{Topic: "transactions", Partition: 2}, 42, staging, nil)
	if err != nil {
		t.Fatal(err)
	}
	var body checkpoint.ChangeBuffer
	body.Set(aggregate.AccountKey(nil, "acc-1"), account(4))
	body.EndEpoch(50)
	data, _, err := checkpoint.EncodeSegment(checkpoint.Segment{Topic: "transactions", Partition: 2, Base: base.ID, Seq: 1, First: 42}, &body)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := st.AppendSegment(ctx, data)
	if err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runCheckpoints(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("list", dir)
	if code != 0 || !strings.Contains(out, "base ") || !strings.Contains(out, "segment ") || !strings.Contains(out, seg.Name()) {
		t.Fatalf("list: %d\n%s%s", code, out, errs)
	}
	code, out, errs = run("verify", dir)
	if code != 0 || !strings.Contains(out, "2 checked, 0 failed") || !strings.Contains(out, "1 epochs, 1 changes") {
		t.Fatalf("verify: %d\n%s%s", code, out, errs)
	}
	code, out, errs = run("inspect", dir, "--partition", "2", "--key", "acc-1")
	if code != 0 || !strings.Contains(out, `"count": 4`) || !strings.Contains(out, `"offset": 50`) || !strings.Contains(out, `"segments": 1`) {
		t.Fatalf("inspect: %d\n%s%s", code, out, errs)
	}

	p := filepath.Join(dir, filepath.FromSlash(seg.Path))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run("verify", dir)
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, seg.Name()) {
		t.Fatalf("verify with a damaged segment: %d\n%s", code, out)
	}
	code, out, errs = run("inspect", dir, "--partition", "2", "--key", "acc-1")
	if code != 0 || !strings.Contains(out, `"count": 3`) || !strings.Contains(out, `"offset": 42`) || !strings.Contains(errs, "stops at offset 42") {
		t.Fatalf("inspect with a damaged segment: %d\n%s%s", code, out, errs)
	}
}
