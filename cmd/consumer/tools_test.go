package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/txstream/txstream/checkpoint"
)

// A savepoint whose metadata cannot be read is a failure for verify (a
// restore could not use it) and a warning for list, never silence; words
// the command does not read are refused instead of ignored.
func TestCheckpointToolsBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ck")
	if _, err := checkpoint.Open(dir, checkpoint.Options{Mode: checkpoint.ModeIncremental}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runCheckpoints(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errs := run("verify", dir); code != 0 || !strings.Contains(out, "0 checked, 0 failed") {
		t.Fatalf("verify of an empty directory: %d\n%s%s", code, out, errs)
	}
	sp := filepath.Join(dir, "savepoints", "before-upgrade")
	if err := os.MkdirAll(sp, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sp, "_savepoint.json"), []byte(`{"format":1,`), 0o640); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run("verify", dir)
	if code != 1 || !strings.Contains(out, "1 checked, 1 failed") || !strings.Contains(errs, "before-upgrade") {
		t.Errorf("verify with a corrupt savepoint: exit %d, want 1 naming it\nstdout:\n%sstderr:\n%s", code, out, errs)
	}
	if code, out, errs := run("list", dir); code != 0 || !strings.Contains(errs, "before-upgrade") {
		t.Errorf("list with a corrupt savepoint: exit %d, want a warning naming it\nstdout:\n%sstderr:\n%s", code, out, errs)
	}
	for _, args := range [][]string{
		{"gc", dir, "apply"},
		{"list", dir, "other", "--json"},
		{"inspect", dir, "--partition", "4294967296", "--key", "A"},
	} {
		if code, out, errs := run(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
	if code, out, errs := run("gc", dir, "--apply"); code != 0 {
		t.Errorf("gc DIR --apply: exit %d\n%s%s", code, out, errs)
	}
}
