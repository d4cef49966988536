package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"
	"github.com/cockroachdb/pebble/v2"
	"github.com/minio/minio-go/v7"

	"github.com/txstream/txstream/aggregate"
	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/pipeline"
	"github.com/txstream/txstream/test/s3test"
)

// TestS3Settings: an s3:// --checkpoint-dir is accepted with the --s3-*
// settings, and neither the start-up settings nor the status API's view
// show the secret key.
func TestS3Settings(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY123")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
	c, err := parseConfig([]string{"--checkpoint-dir", "s3://ck-bucket/prod/txstream", "--s3-endpoint", "http://127.0.0.1:9000", "--s3-path-style"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c.statusSettings())
	if err != nil {
		t.Fatal(err)
	}
	view := string(b)
	if strings.Contains(view, "very-secret-value") || strings.Contains(view, "AKIATESTKEY123") {
		t.Fatalf("status settings show a credential: %s", view)
	}
	for _, want := range []string{`"endpoint":"http://127.0.0.1:9000"`, `"path_style":true`, `"checkpoint_dir":"s3://ck-bucket/prod/txstream"`} {
		if !strings.Contains(view, want) {
			t.Fatalf("status settings lack %s: %s", want, view)
		}
	}
	for _, bad := range [][]string{
		{"--checkpoint-dir", "s3://key:secret@bucket/x"},
		{"--checkpoint-dir", "s3://b/x"},
		{"--checkpoint-dir", "s3://bucket/x", "--s3-endpoint", "ftp://host"},
		{"--checkpoint-dir", "s3://bucket/x", "--s3-concurrency", "-1"},
	} {
		if _, err := parseConfig(bad); err == nil {
			t.Fatalf("parseConfig(%q) accepted", bad)
		}
	}
}

// TestCheckpointToolsS3: list, verify, inspect and gc work on object
// storage as on a directory.
func TestCheckpointToolsS3(t *testing.T) {
	srv := s3test.Start(t)
	tmp := t.TempDir()
	ctx := context.Background()
	cfg := checkpoint.S3Config{Endpoint: "http://" + srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
	loc := srv.Location("tools")
	st, err := checkpoint.OpenStorage(ctx, loc, checkpoint.Options{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A store holding one account's aggregate.
	store, err := pipeline.OpenStore(filepath.Join(tmp, "live"), pipeline.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var a aggregate.AccountState
	a.Count = 3
	if _, _, err := a.Total.SetString("12.50"); err != nil {
		t.Fatal(err)
	}
	a.Min, a.Max = *apd.New(1, 0), *apd.New(9, 0)
	if err := store.DB().Set(aggregate.AccountKey(nil, "acc-1"), a.Encode(nil), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := store.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(tmp, "staging")
	if err := store.Checkpoint(staging); err != nil {
		t.Fatal(err)
	}
	_ = store.Close()
	m, _, err := st.PublishFrom(ctx, checkpoint.Source{Topic: "transactions", Partition: 2}, 42, staging, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Savepoint(ctx, "sp1", []checkpoint.SavepointPart{{Topic: "transactions", Partition: 2, Offset: 42, SrcDir: staging}}, nil); err != nil {
		t.Fatal(err)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("TXSTREAM_S3_ENDPOINT", "http://"+srv.Endpoint) // the consumer's environment works for the tools too
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runCheckpoints(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("list", loc, "--s3-path-style", "--json")
	if code != 0 || !strings.Contains(out, m.ID) || !strings.Contains(out, `"sp1"`) {
		t.Fatalf("list: %d %s %s", code, out, errs)
	}
	code, out, errs = run("verify", loc, "--s3-path-style")
	if code != 0 || !strings.Contains(out, "2 checked, 0 failed") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	code, out, errs = run("inspect", loc, "--s3-path-style", "--partition", "2", "--key", "acc-1")
	if code != 0 || !strings.Contains(out, `"count": 3`) || !strings.Contains(out, `"total": "12.50"`) {
		t.Fatalf("inspect: %d %s %s", code, out, errs)
	}
	code, out, errs = run("gc", loc, "--s3-path-style")
	if code != 0 || !strings.Contains(out, "would remove 0 item(s)") {
		t.Fatalf("gc: %d %s %s", code, out, errs)
	}
	// A corrupt object fails verify, naming the file.
	var f checkpoint.FileInfo
	for _, x := range m.Files {
		if strings.HasSuffix(x.Name, ".sst") {
			f = x
		}
	}
	if f.Pool == "" {
		t.Fatalf("no SST in the pool: %+v", m.Files)
	}
	if err := srv.Client().RemoveObject(ctx, srv.Bucket, "tools/"+f.Pool, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run("verify", loc, "--s3-path-style")
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, f.Name) {
		t.Fatalf("verify with a missing object: %d %s", code, out)
	}
}
