package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/settings"
)

const checkpointsUsage = `consumer checkpoints: offline tools for checkpoint storage (no broker needed).

DIR is a checkpoint directory or s3://bucket/prefix (object storage: the --s3-* flags
of the consumer, credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a
credentials file).

Usage:
  consumer checkpoints list DIR [--json]            snapshots (changelog mode: bases and their change-log segments)
                                                    and savepoints: id, partition, topic id, cluster id, offset, mode,
                                                    files, bytes, age (ids shortened; --json: full)
  consumer checkpoints verify DIR                   check every file's size and CRC32C, every segment's checksum
                                                    and sequence, and every savepoint's metadata; exit 1 on any failure
  consumer checkpoints inspect DIR --partition P --key ACCOUNT [--topic T] [--id ID]
                                                    read an account's aggregate from a snapshot (newest by default;
                                                    a base with its change log applied)
  consumer checkpoints gc DIR [--apply]             show (default) or delete what garbage collection removes: torn
                                                    snapshots, temporary files, unreferenced pool files (retention,
                                                    --checkpoint-retain, is the daemon's)

Exit codes: 0 ok, 1 verification failed or an operation failed, 2 usage.`

// checkpointsCmd is the offline checkpoint tooling.
func checkpointsCmd(args []string) int {
	return runCheckpoints(args, os.Stdout, os.Stderr)
}

func runCheckpoints(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, checkpointsUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("checkpoints "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	topic := fs.String("topic", "transactions", "input topic (inspect)")
	partition := fs.Int("partition", -1, "partition (inspect)")
	key := fs.String("key", "", "account id (inspect)")
	id := fs.String("id", "", "snapshot id (inspect; default the newest)")
	apply := fs.Bool("apply", false, "really delete (gc); without it gc only reports")
	asJSON := fs.Bool("json", false, "JSON output (list)")
	var s3 checkpoint.S3Config
	s3.RegisterFlags(fs)
	fs.Usage = func() { fmt.Fprintln(stderr, checkpointsUsage) }
	// The directory may come before or after the flags.
	var dir string
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		dir, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	// The object storage settings also come from the consumer's
	// environment variables (TXSTREAM_S3_ENDPOINT, ...), as for the daemon.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"s3-endpoint", "s3-region", "s3-path-style", "s3-credentials-file", "s3-profile", "s3-concurrency", "s3-timeout"} {
		if v, ok := os.LookupEnv(settings.EnvName(envPrefix, name)); ok && !set[name] {
			if err := fs.Set(name, v); err != nil {
				fmt.Fprintf(stderr, "consumer checkpoints %s: environment %s: %v\n", sub, settings.EnvName(envPrefix, name), err)
				return 2
			}
		}
	}
	extra := fs.Args()
	if dir == "" && len(extra) > 0 {
		dir, extra = extra[0], extra[1:]
	}
	if dir == "" {
		fmt.Fprintln(stderr, "consumer checkpoints "+sub+": missing the checkpoint directory")
		return 2
	}
	if len(extra) > 0 {
		// Flags go before the directory or right after it: anything
		// after a second word (gc DIR apply, list A B --json) was not
		// read, so nothing is done on a guess.
		fmt.Fprintf(stderr, "consumer checkpoints %s: unexpected arguments %q (one directory; flags such as --apply before or right after it)\n", sub, extra)
		return 2
	}
	if *partition > math.MaxInt32 {
		fmt.Fprintf(stderr, "consumer checkpoints %s: --partition %d is not a partition number\n", sub, *partition)
		return 2
	}
	// What the storage skips (an unreadable savepoint, a stray
	// directory) it says in a warning: shown on stderr, and counted, so
	// that verify fails on it.
	var warned atomic.Int64
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zap.WarnLevel),
		zap.Hooks(func(zapcore.Entry) error { warned.Add(1); return nil }))
	ctx := context.Background()
	store, err := checkpoint.OpenExistingStorage(ctx, dir, s3, log)
	if err != nil {
		fmt.Fprintf(stderr, "consumer checkpoints %s: %v\n", sub, err)
		return 1
	}
	switch sub {
	case "list":
		err = listCheckpoints(store, stdout, *asJSON)
	case "verify":
		return verifyCheckpoints(ctx, store, stdout, stderr, warned.Load)
	case "inspect":
		if *partition < 0 || *key == "" {
			fmt.Fprintln(stderr, "consumer checkpoints inspect: --partition and --key are required")
			return 2
		}
		err = inspectCheckpoint(ctx, store, *topic, int32(*partition), *id, *key, stdout, stderr)
	case "gc":
		err = gcCheckpoints(ctx, store, !*apply, stdout)
	default:
		fmt.Fprintf(stderr, "consumer checkpoints: unknown command %q\n\n%s\n", sub, checkpointsUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "consumer checkpoints %s: %v\n", sub, err)
		return 1
	}
	return 0
}

type listRow struct {
	Kind      string    `json:"kind"`
	ID        string    `json:"id"`
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	TopicID   string    `json:"topic_id,omitempty"`
	ClusterID string    `json:"cluster_id,omitempty"`
	Offset    int64     `json:"offset"`
	Mode      string    `json:"mode"`
	Files     int       `json:"files"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Segments of a change log: the base they follow, their sequence
	// and the offset they start from (Offset is where they end).
	Base  string `json:"base,omitempty"`
	Seq   int64  `json:"seq,omitempty"`
	First int64  `json:"first_offset,omitempty"`
}

func collectRows(store checkpoint.Storage) ([]listRow, error) {
	var rows []listRow
	parts, err := store.Partitions()
	if err != nil {
		return nil, err
	}
	for _, tp := range parts {
		metas, err := store.List(tp.Topic, tp.Partition)
		if err != nil {
			return nil, err
		}
		for _, m := range metas {
			kind := "snapshot"
			if m.Mode == checkpoint.ModeChangelog {
				kind = "base"
			}
			rows = append(rows, listRow{Kind: kind, ID: m.ID, Topic: m.Topic, Partition: m.Partition,
				TopicID: m.TopicID, ClusterID: m.ClusterID, Offset: m.Offset,
				Mode: string(m.Mode), Files: len(m.Files), Bytes: m.Bytes(), CreatedAt: m.CreatedAt})
			if m.Mode != checkpoint.ModeChangelog {
				continue
			}
			// The base's change log: one row per segment, offset = where
			// it ends (its name; contents are read by verify).
			segs, err := store.Segments(m.Topic, m.Partition, m.ID)
			if err != nil {
				return nil, err
			}
			for _, g := range segs {
				rows = append(rows, listRow{Kind: "segment", ID: m.ID + "/" + g.Name(), Topic: m.Topic, Partition: m.Partition,
					TopicID: m.TopicID, ClusterID: m.ClusterID, Offset: g.Last, Mode: string(m.Mode), Files: 1, Bytes: g.Size,
					Base: m.ID, Seq: g.Seq, First: g.First})
			}
		}
	}
	sps, err := store.ListSavepoints()
	if err != nil {
		return nil, err
	}
	for _, sp := range sps {
		for _, p := range sp.Partitions {
			rows = append(rows, listRow{Kind: "savepoint", ID: sp.Name, Topic: p.Topic, Partition: p.Partition,
				TopicID: p.TopicID, ClusterID: p.ClusterID, Offset: p.Offset,
				Mode: "savepoint", Files: len(p.Files), Bytes: p.Bytes(), CreatedAt: sp.CreatedAt})
		}
	}
	return rows, nil
}

func listCheckpoints(store checkpoint.Storage, w io.Writer, asJSON bool) error {
	rows, err := collectRows(store)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "%s: no snapshots or savepoints yet\n", store.Location())
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tID\tTOPIC\tPARTITION\tTOPIC_ID\tCLUSTER_ID\tOFFSET\tMODE\tFILES\tBYTES\tAGE")
	for _, r := range rows {
		age := "-"
		if !r.CreatedAt.IsZero() {
			age = time.Since(r.CreatedAt).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", r.Kind, r.ID, r.Topic, r.Partition,
			shortID(r.TopicID), shortID(r.ClusterID), r.Offset, r.Mode, r.Files,
			humanBytes(r.Bytes), age)
	}
	return tw.Flush()
}

// shortID abbreviates a topic or cluster id for a table: its first 8
// characters ("-" when the snapshot predates recorded ids).
func shortID(id string) string {
	switch {
	case id == "":
		return "-"
	case len(id) > 8:
		return id[:8]
	}
	return id
}

func verifyCheckpoints(ctx context.Context, store checkpoint.Storage, stdout, stderr io.Writer, warnings func() int64) int {
	parts, err := store.Partitions()
	if err != nil {
		fmt.Fprintln(stderr, "consumer checkpoints verify:", err)
		return 1
	}
	bad, n := 0, 0
	for _, tp := range parts {
		metas, err := store.List(tp.Topic, tp.Partition)
		if err != nil {
			fmt.Fprintf(stdout, "FAIL  %s: %v\n", tp, err)
			bad++
			continue
		}
		for _, m := range metas {
			n++
			if err := store.Verify(ctx, m); err != nil {
				fmt.Fprintf(stdout, "FAIL  %s/%d %s: %v\n", m.Topic, m.Partition, m.ID, err)
				bad++
				continue
			}
			fmt.Fprintf(stdout, "ok    %s/%d %s (%d files, %s)\n", m.Topic, m.Partition, m.ID, len(m.Files), humanBytes(m.Bytes()))
			if m.Mode == checkpoint.ModeChangelog {
				c, b := verifyChangelog(ctx, store, m, stdout)
				n += c
				bad += b
			}
		}
	}
	before := warnings()
	sps, err := store.ListSavepoints()
	if err != nil {
		fmt.Fprintln(stdout, "FAIL  savepoints:", err)
		bad++
	}
	if skipped := warnings() - before; skipped > 0 {
		// Each is a savepoint whose metadata cannot be read (the warning
		// on stderr names it): no restore could use it.
		fmt.Fprintf(stdout, "FAIL  %d savepoint(s) with unreadable metadata (named above)\n", skipped)
		n += int(skipped)
		bad += int(skipped)
	}
	for _, sp := range sps {
		n++
		if _, err := store.LoadSavepoint(ctx, sp.Name); err != nil {
			fmt.Fprintf(stdout, "FAIL  savepoint %s: %v\n", sp.Name, err)
			bad++
			continue
		}
		fmt.Fprintf(stdout, "ok    savepoint %s (%d partitions, %s)\n", sp.Name, len(sp.Partitions), humanBytes(sp.Bytes()))
	}
	fmt.Fprintf(stdout, "%d checked, %d failed\n", n, bad)
	if bad > 0 {
		return 1
	}
	return 0
}

// verifyChangelog reads and verifies every segment of base m's change
// log and checks that they continue the base contiguously (a gap makes
// every later segment unusable: reported as a failure).
func verifyChangelog(ctx context.Context, store checkpoint.Storage, m checkpoint.Meta, w io.Writer) (checked, bad int) {
	segs, err := store.Segments(m.Topic, m.Partition, m.ID)
	if err != nil {
		fmt.Fprintf(w, "FAIL  %s/%d %s change log: %v\n", m.Topic, m.Partition, m.ID, err)
		return 1, 1
	}
	chain := len(checkpoint.Chain(m.Offset, segs))
	for i, g := range segs {
		checked++
		what := fmt.Sprintf("%s/%d %s/%s", m.Topic, m.Partition, m.ID, g.Name())
		d, err := store.ReadSegment(ctx, g)
		switch {
		case err != nil:
			fmt.Fprintf(w, "FAIL  %s: %v\n", what, err)
			bad++
		case i >= chain:
			fmt.Fprintf(w, "FAIL  %s: does not continue the change log (a segment before it is missing)\n", what)
			bad++
		default:
			fmt.Fprintf(w, "ok    %s (%d epochs, %d changes, %s)\n", what, d.Epochs, d.Changes, humanBytes(g.Size))
		}
	}
	return checked, bad
}

// inspectCheckpoint restores a snapshot into a temporary directory (which
// verifies every checksum) and reads one account's committed aggregate.
func inspectCheckpoint(ctx context.Context, store checkpoint.Storage, topic string, p int32, id, key string, w, errw io.Writer) error {
	metas, err := store.List(topic, p)
	if err != nil {
		return err
	}
	if len(metas) == 0 {
		return fmt.Errorf("no snapshot of %s/%d in %s", topic, p, store.Location())
	}
	chosen := metas[0]
	if id != "" {
		found := false
		for _, m := range metas {
			if m.ID == id {
				chosen, found = m, true
			}
		}
		if !found {
			return fmt.Errorf("no snapshot %q of %s/%d", id, topic, p)
		}
	}
	tmp, err := os.MkdirTemp("", "txstream-inspect-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "store")
	// The chosen snapshot's ids: if it does not verify, the fallback stays
	// within the same topic incarnation and cluster. A base's change log
	// brings the state to where it ends.
	st, m, segs, offset, err := pipeline.Restore(ctx, store, checkpoint.Want{Topic: topic, Partition: p, TopicID: chosen.TopicID,
		ClusterID: chosen.ClusterID, MaxOffset: chosen.Offset}, dst, pipeline.StoreOptions{}, math.MaxInt64)
	if st == nil {
		return err
	}
	defer st.Close()
	if id != "" && m.ID != id {
		return fmt.Errorf("snapshot %s does not verify; the newest usable one at or below its offset is %s", id, m.ID)
	}
	if err != nil {
		fmt.Fprintf(errw, "consumer checkpoints inspect: the change log of %s stops at offset %d: %v\n", m.ID, offset, err)
	}
	v, ok, err := st.Get(aggregate.AccountKey(nil, key))
	if err != nil {
		return err
	}
	out := map[string]any{"snapshot": m.ID, "topic": topic, "partition": p, "topic_id": m.TopicID, "cluster_id": m.ClusterID,
		"offset": offset, "account_id": key, "found": ok}
	if m.Mode == checkpoint.ModeChangelog {
		out["segments"] = segs
	}
	if ok {
		var a aggregate.AccountState
		if err := a.Decode(v); err != nil {
			return fmt.Errorf("account %q in snapshot %s: %w", key, m.ID, err)
		}
		out["count"] = a.Count
		out["total"] = a.Total.Text('f')
		out["min"] = a.Min.Text('f')
		out["max"] = a.Max.Text('f')
		out["first"] = a.First
		out["last"] = a.Last
		out["last_offset"] = a.LastOffset
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("account %q not found in %s/%d at offset %d (another partition may own it)", key, topic, p, offset)
	}
	return nil
}

func gcCheckpoints(ctx context.Context, store checkpoint.Storage, dryRun bool, w io.Writer) error {
	rep, err := store.GC(ctx, dryRun)
	if err != nil {
		return err
	}
	verb := "would remove"
	if !dryRun {
		verb = "removed"
	}
	for _, it := range rep.Removed {
		fmt.Fprintf(w, "%s %-9s %s (%s)\n", verb, it.Kind, it.Path, humanBytes(it.Bytes))
	}
	fmt.Fprintf(w, "%s %d item(s), %s; %d pool file(s) referenced, %d too recent to judge\n",
		verb, len(rep.Removed), humanBytes(rep.BytesFreed), rep.PoolReferenced, rep.SkippedRecent)
	if dryRun && len(rep.Removed) > 0 {
		fmt.Fprintln(w, "(dry run: rerun with --apply to delete)")
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// savepointCmd triggers a savepoint on a running daemon through its HTTP API.
func savepointCmd(args []string) int {
	return runSavepoint(args, os.Stdout, os.Stderr)
}
