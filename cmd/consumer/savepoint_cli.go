package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/txstream/txstream/checkpoint"
	"github.com/txstream/txstream/settings"
)

const savepointUsage = `consumer savepoint: ask a running consumer for a savepoint.

A savepoint is a self-contained, portable copy of the state of every
partition the consumer owns, with their offsets and the job settings, under
<checkpoint-dir>/savepoints/<name>/ (a directory, or objects under that prefix on
object storage). It is taken at a committed boundary and
is never removed by retention. Start from it with --from-savepoint DIR.

The request goes to the consumer's HTTP API (POST /api/v1/savepoints); with
--checkpoint-dir the savepoint is then loaded and verified from disk.

Usage: consumer savepoint [--http 127.0.0.1:8081] [--name NAME] [--checkpoint-dir DIR]`

func runSavepoint(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("savepoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8081", "the consumer's --http address")
	token := fs.String("http-token", "", "bearer token, when the consumer listens off loopback (or TXSTREAM_HTTP_TOKEN)")
	name := fs.String("name", "", "savepoint name: letters, digits, '.', '_', '-' (default: generated from the time)")
	dir := fs.String("checkpoint-dir", "", "the consumer's --checkpoint-dir (a directory or s3://bucket/prefix): verify the savepoint there afterwards")
	var s3 checkpoint.S3Config
	s3.RegisterFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the savepoint to be written")
	fs.Usage = settings.Usage(fs, envPrefix, savepointUsage)
	if err := settings.Parse(fs, args, envPrefix, ""); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "consumer savepoint:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"name": *name})
	url := "http://" + strings.TrimPrefix(*addr, "http://") + "/api/v1/savepoints"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(stderr, "consumer savepoint:", err)
		return 2
	}
	req.Header.Set("Content-Type", "application/json")
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "consumer savepoint: is the consumer running with --http %s? %v\n", *addr, err)
		return 1
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "consumer savepoint: reading the answer (%s): %v\n", resp.Status, err)
		return 1
	}
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "consumer savepoint: %s: %s\n", resp.Status, strings.TrimSpace(string(out)))
		return 1
	}
	var answer struct {
		Savepoint checkpoint.SavepointMeta `json:"savepoint"`
	}
	if err := json.Unmarshal(out, &answer); err != nil || answer.Savepoint.Name == "" {
		fmt.Fprintln(stdout, strings.TrimSpace(string(out))) // an unexpected answer: show it as it is
	} else {
		sp := answer.Savepoint
		var parts []string
		for _, p := range sp.Partitions {
			parts = append(parts, fmt.Sprintf("%s/%d@%d", p.Topic, p.Partition, p.Offset))
		}
		fmt.Fprintf(stdout, "savepoint %s written: %s, %s\n", sp.Name, strings.Join(parts, " "), humanBytes(sp.Bytes()))
		fmt.Fprintf(stdout, "start from it with: consumer --from-savepoint <checkpoint-dir>/savepoints/%s\n", sp.Name)
	}
	if *dir != "" {
		got := struct{ Name string }{Name: answer.Savepoint.Name}
		if got.Name == "" {
			got.Name = *name
		}
		sp, err := checkpoint.LoadSavepointAt(ctx, strings.TrimSuffix(*dir, "/")+"/savepoints/"+got.Name, s3, nil)
		if err != nil {
			fmt.Fprintln(stderr, "consumer savepoint: written, but it does not verify on disk:", err)
			return 1
		}
		fmt.Fprintf(stdout, "verified %s: %d partition(s), %s\n", sp.Dir, len(sp.Partitions), humanBytes(sp.Bytes()))
	}
	return 0
}
