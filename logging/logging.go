// Package logging builds the zap loggers of txstream's binaries: JSON lines
// for services (systemd, containers), a coloured console encoder for people.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// New returns a logger at level ("debug", "info", "warn", "error") writing
// to stderr. json forces JSON output; otherwise a terminal gets the console
// encoder and anything else (a pipe, journald, a container log) gets JSON.
func New(level string, json bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	var enc zapcore.Encoder
	if !json && term.IsTerminal(int(os.Stderr.Fd())) {
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)
	// Stack traces only for panics: expected failures are errors with causes.
	return zap.New(core, zap.AddStacktrace(zapcore.DPanicLevel)), nil
}

// Format selects the encoder: "auto", "json" or "console".
func NewFormat(level, format string) (*zap.Logger, error) {
	switch format {
	case "", "auto":
		return New(level, false)
	case "json":
		return New(level, true)
	case "console":
		lvl, err := zapcore.ParseLevel(level)
		if err != nil {
			return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
		}
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.Lock(os.Stderr), lvl)), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, json or console", format)
}
