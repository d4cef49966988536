// Package faults owns test-only fault injection: named crash points that a
// crash test arms through the environment to SIGKILL the process at an exact
// moment (between the sink commit and the state apply, in the middle of a
// snapshot copy, ...). Unarmed, a crash point costs one atomic load.
//
//	TXSTREAM_TEST_CRASH=after-sink-commit:3   # kill at the 3rd pass
//
// It is never set in production; the consumer logs a loud warning when it is.
package faults

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// EnvVar arms a crash point: NAME or NAME:N (the Nth pass, default 1).
const EnvVar = "TXSTREAM_TEST_CRASH"

// Known crash points.
const (
	BeforeSinkCommit = "before-sink-commit" // epoch processed, transaction not yet committed
	AfterSinkCommit  = "after-sink-commit"  // transaction committed, state not yet applied
	AfterStateApply  = "after-state-apply"  // state applied, no snapshot yet
	SnapshotCopy     = "snapshot-copy"      // in the middle of copying a snapshot's files
	SnapshotPublish  = "snapshot-publish"   // snapshot files written, metadata not yet
	PoolGC           = "pool-gc"            // while deleting unreferenced pool files
	SegmentAppend    = "segment-append"     // a change-log segment written, not yet under its name
)

var (
	armed  atomic.Bool
	point  string
	target int64
	hits   atomic.Int64
)

func init() {
	v := os.Getenv(EnvVar)
	if v == "" {
		return
	}
	name, n, _ := strings.Cut(v, ":")
	target = 1
	if n != "" {
		if t, err := strconv.ParseInt(n, 10, 64); err == nil && t > 0 {
			target = t
		}
	}
	point = name
	armed.Store(true)
}

// Armed returns the armed point, or "".
func Armed() string {
	if !armed.Load() {
		return ""
	}
	return fmt.Sprintf("%s:%d", point, target)
}

// Hit is a crash point: if armed for name, the Nth call kills the process
// with SIGKILL (no deferred functions, no flushing: a real crash).
func Hit(name string) {
	if !armed.Load() || name != point {
		return
	}
	if hits.Add(1) == target {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not catchable; never return
	}
}

// Kill ends the process at once with SIGKILL, as kill -9 would.
func Kill() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
