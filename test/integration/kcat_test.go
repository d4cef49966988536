package integration

// Interop with an independent Kafka client: kcat (librdkafka) produces bare
// CSV lines, keyed by account, compressed with lz4 and zstd; the consumer
// processes them with its default column order; kcat reads the output
// topic read_committed and the counts and totals match the oracle's.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

func TestKcatInterop(t *testing.T) {
	bins := buildBinaries(t)
	kcat := needTool(t, "kcat", "kcat")
	consumer := bins.Path("consumer")
	b := startBroker(t, "")
	dir := t.TempDir()
	csv, exp := depGenerate(t, dir, synth.Config{Rows: 4000, Accounts: 25, ZipfS: 1.1, Seed: 5,
		BadFraction: 0.01, DupFraction: 0.01, Epoch: synth.DefaultEpoch, Interval: time.Second})

	data, err := os.ReadFile(csv)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if lines[0] != synth.Header {
		t.Fatalf("unexpected header %q", lines[0])
	}
	lines = lines[1:] // kcat sends bare lines: the consumer's --columns default applies
	// key|value, keyed by account so that an account (and the duplicates
	// of its transactions) stays in one partition.
	keyed := make([]string, len(lines))
	for i, l := range lines {
		if strings.Contains(l, "|") {
			t.Fatalf("line %d contains the key delimiter: %q", i+2, l)
		}
		f := strings.Split(l, ",")
		key := ""
		if len(f) > 1 {
			key = strings.TrimSpace(f[1])
		}
		keyed[i] = key + "|" + l
	}
	// Created up front: librdkafka waits a few seconds for an
	// auto-created topic's metadata.
	depCreateTopics(t, b.Addr, 3, "kc-in")
	half := len(keyed) / 2
	for _, part := range []struct {
		codec string
		lines []string
	}{{"lz4", keyed[:half]}, {"zstd", keyed[half:]}} {
		runKcat(t, kcat, strings.Join(part.lines, "\n")+"\n",
			"-P", "-b", b.Addr, "-t", "kc-in", "-K", "|", "-X", "compression.codec="+part.codec)
		t.Logf("kcat produced %d lines with %s", len(part.lines), part.codec)
	}

	args := append(depConsumerArgs(b.Addr, t.TempDir(), "kc-in", "kc-out", "kc-dlq", "kc"), "--exit-when-idle", "2s")
	p := depStart(t, "consumer", consumer, depEnv(), args...)
	if code := p.Wait(120 * time.Second); code != 0 {
		t.Fatalf("consumer exited %d", code)
	}

	out := runKcat(t, kcat, "", "-C", "-b", b.Addr, "-t", "kc-out", "-e", "-o", "beginning", "-q",
		"-X", "isolation.level=read_committed", "-f", "%s\n")
	got := newDepOutput()
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			got.add([]byte(l))
		}
	}
	depCheckOutput(t, got, exp)

	// The dead-letter topic holds the bad rows (read with kcat as well).
	dlq := runKcat(t, kcat, "", "-C", "-b", b.Addr, "-t", "kc-dlq", "-e", "-o", "beginning", "-q",
		"-X", "isolation.level=read_committed", "-f", "%s\n")
	if n := strings.Count(dlq, "\n"); n != exp.Bad {
		t.Errorf("dead-letter topic: %d records, want %d bad rows", n, exp.Bad)
	}
}

// depCreateTopics creates topics with n partitions.
func depCreateTopics(t *testing.T, addr string, n int32, topics ...string) {
	t.Helper()
	createTopicsOpts(t, []kgo.Opt{kgo.SeedBrokers(addr)}, n, topics...)
}

func runKcat(t *testing.T, kcat, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\n%s", strings.Join(args, " "), err, tail(errb.String(), 2000))
	}
	if s := strings.TrimSpace(errb.String()); s != "" {
		t.Logf("kcat %s: %s", args[0], tail(s, 500))
	}
	return out.String()
}
