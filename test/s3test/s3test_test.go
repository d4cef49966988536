package s3test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestServer builds versitygw (once; .ci/run runs this test first so that
// the build is not counted in other tests' time), starts it, writes and
// reads an object, and checks that the conditional write the checkpoint
// storage relies on (If-None-Match: *) refuses to overwrite; then kills and
// restarts it and reads the object again from its POSIX back end.
func TestServer(t *testing.T) {
	srv := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := srv.Client()
	body := []byte("snapshot metadata")
	put := func(opts minio.PutObjectOptions) error {
		_, err := cl.PutObject(ctx, srv.Bucket, "ck/_meta.json", bytes.NewReader(body), int64(len(body)), opts)
		return err
	}
	if err := put(minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	var once minio.PutObjectOptions
	once.SetMatchETagExcept("*")
	if err := put(once); err == nil {
		t.Fatal("a put with If-None-Match: * over an existing object succeeded; the checkpoint storage needs it refused")
	}
	read := func() []byte {
		obj, err := cl.GetObject(ctx, srv.Bucket, "ck/_meta.json", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		got, err := io.ReadAll(obj)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		return got
	}
	if got := read(); !bytes.Equal(got, body) {
		t.Fatalf("read back %q, want %q", got, body)
	}
	srv.Kill()
	srv.Restart()
	if got := read(); !bytes.Equal(got, body) {
		t.Fatalf("after a restart read back %q, want %q", got, body)
	}
}
