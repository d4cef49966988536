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
