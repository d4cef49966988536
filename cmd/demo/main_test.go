package main

import (
	"os"
	"path/filepath"
	"testing"
)

// The working directory is recreated only when it is the demo's own: a
// directory -work names by mistake keeps its files.
func TestRecreateWork(t *testing.T) {
	root := t.TempDir()

	other := filepath.Join(root, "other")
	if err := os.MkdirAll(other, 0o750); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(other, "important.txt")
	if err := os.WriteFile(keep, []byte("keep"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := recreateWork(other); err == nil {
		t.Fatal("a non-empty directory without the marker was accepted")
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep" {
		t.Fatalf("its file was touched: %q %v", b, err)
	}

	for _, dir := range []string{filepath.Join(root, "absent"), filepath.Join(root, "empty")} {
		if dir == filepath.Join(root, "empty") {
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
		}
		if err := recreateWork(dir); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		// Its own directory, with a previous run's files, is recreated.
		if err := os.WriteFile(filepath.Join(dir, "broker.log"), []byte("old"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := recreateWork(dir); err != nil {
			t.Fatalf("%s, second run: %v", dir, err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 || ents[0].Name() != workMarker {
			t.Fatalf("%s after the second run: %v %v", dir, ents, err)
		}
	}
}
