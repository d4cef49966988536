// Command consumer is the txstream daemon: an exactly-once stateful Kafka
// consumer with Flink-style checkpoints. See `consumer --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"go.uber.org/zap"

	"github.com/txstream/txstream/job"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "checkpoints":
			return checkpointsCmd(args[1:])
		case "savepoint":
			return savepointCmd(args[1:])
		case "version":
			fmt.Println(version)
			return 0
		}
	}
	// TXSTREAM_CPUPROFILE=FILE writes a CPU profile of the whole run (for
	// performance work; see docs/BENCHMARKS.md).
	if path := os.Getenv("TXSTREAM_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	cfg, err := parseConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		fmt.Fprintln(os.Stderr, "run 'consumer --help' for the settings")
		return job.ExitConfig
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && cfg.memLimit > 0 {
		debug.SetMemoryLimit(cfg.memLimit)
	}
	log, err := cfg.logger()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return job.ExitConfig
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := newDaemon(cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return job.ExitConfig
	}
	defer d.close()
	state, err := d.run(ctx)
	code := job.ExitCode(state)
	if err != nil && state == job.Failed {
		log.Error("job FAILED", zap.Error(err), zap.Int("exit_code", code))
	} else {
		log.Info("job ended", zap.String("state", state.String()), zap.Int("exit_code", code))
	}
	return code
}
