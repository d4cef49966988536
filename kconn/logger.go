package kconn

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Client log sampling: per message text and level, the first
// clientLogFirst lines of each second are written, then every
// clientLogThereafter-th. A broker that keeps answering one request with the
// same retriable error (Kafka 3.9 answers AddPartitionsToTxn with
// CONCURRENT_TRANSACTIONS while the previous transaction's markers are
// written, and the client retries every few milliseconds) would otherwise
// write thousands of identical warnings a minute.
const (
	clientLogFirst      = 5
	clientLogThereafter = 200
)

// ClientLogger is the franz-go logger for a txstream client: the client's
// lines at level and above go to log, sampled so that a repeated warning
// stays readable.
func ClientLogger(log *zap.Logger, level kgo.LogLevel) kgo.Logger {
	sampled := log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, clientLogFirst, clientLogThereafter)
	}))
	return kzap.New(sampled, kzap.Level(level))
}
