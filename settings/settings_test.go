package settings

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFS() (*flag.FlagSet, *string, *int, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg := fs.String("config", "", "")
	n := fs.Int("batch-size", 1, "")
	s := fs.String("topic", "default", "")
	return fs, cfg, n, s
}

// flag > environment > config file > default.
func TestPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("batch-size: 3\ntopic: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("X_TOPIC", "from-env")

	fs, _, n, s := newFS()
	if err := Parse(fs, []string{"--config", path}, "X_", "config"); err != nil {
		t.Fatal(err)
	}
	if *n != 3 || *s != "from-env" {
		t.Fatalf("file+env: batch-size %d topic %q, want 3 from the file and the topic from the environment", *n, *s)
	}

	fs, _, n, s = newFS()
	if err := Parse(fs, []string{"--config", path, "--topic", "from-flag", "--batch-size", "9"}, "X_", "config"); err != nil {
		t.Fatal(err)
	}
	if *n != 9 || *s != "from-flag" {
		t.Fatalf("flags: batch-size %d topic %q", *n, *s)
	}

	fs, _, n, s = newFS()
	if err := Parse(fs, nil, "Y_", "config"); err != nil {
		t.Fatal(err)
	}
	if *n != 1 || *s != "default" {
		t.Fatalf("defaults: %d %q", *n, *s)
	}
}

func TestErrorsAreClear(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		file, env, want string
	}{
		"unknown key":     {file: "topik: x\n", want: `unknown setting "topik"`},
		"bad value":       {file: "batch-size: many\n", want: "batch-size"},
		"not yaml":        {file: "[unclosed\n", want: "not valid YAML"},
		"nested value":    {file: "topic:\n  a: b\n", want: "want a single value"},
		"list value":      {file: "topic: [a, b]\n", want: "want a single value"},
		"not a mapping":   {file: "- topic\n", want: "want a mapping"},
		"set twice":       {file: "topic: a\ntopic: b\n", want: "set twice"},
		"bad environment": {file: "", env: "lots", want: "X_BATCH_SIZE"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.env != "" {
				t.Setenv("X_BATCH_SIZE", tc.env)
			}
			fs, _, _, _ := newFS()
			err := Parse(fs, []string{"--config", path}, "X_", "config")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	fs, _, _, _ := newFS()
	if err := Parse(fs, []string{"--config", filepath.Join(dir, "missing.yaml")}, "X_", "config"); err == nil {
		t.Fatal("a missing config file must be an error")
	}
}

// A value in the file is the text written there, as a flag would give it:
// YAML's guesses (octal, hex, underscores, dates, quoted or not) do not
// rewrite it.
func TestFileValuesAreText(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"0123", "0123"}, {"0x10", "0x10"}, {"1_000", "1_000"}, {"2024-01-02", "2024-01-02"},
		{"'0123'", "0123"}, {`"a: b"`, "a: b"}, {"1e3", "1e3"}, {"true", "true"}, {"~", ""}, {"", ""},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte("topic: "+c.yaml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fs, _, _, s := newFS()
		if err := Parse(fs, []string{"--config", path}, "X_", "config"); err != nil {
			t.Fatalf("topic: %s: %v", c.yaml, err)
		}
		if *s != c.want {
			t.Errorf("topic: %s gave %q, want %q", c.yaml, *s, c.want)
		}
	}
	// Anchors and aliases, and an empty file.
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("topic: &t 007\nbatch-size: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, _, n, s := newFS()
	if err := Parse(fs, []string{"--config", path}, "X_", "config"); err != nil || *s != "007" || *n != 4 {
		t.Fatalf("anchored value: %q %d %v", *s, *n, err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fs, _, _, s = newFS()
	if err := Parse(fs, []string{"--config", path}, "X_", "config"); err != nil || *s != "default" {
		t.Fatalf("empty file: %q %v", *s, err)
	}
}
