package kconn

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestClientLoggerSamplesRepeatedLines(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := ClientLogger(zap.New(core), kgo.LogLevelWarn)
	if l.Level() != kgo.LogLevelWarn {
		t.Fatalf("level %v, want warn", l.Level())
	}
	const n = 1000
	for i := 0; i < n; i++ {
		l.Log(kgo.LogLevelWarn, "unable to add partitions to transaction", "err", "CONCURRENT_TRANSACTIONS")
	}
	l.Log(kgo.LogLevelError, "a different line")

	repeated := logs.FilterMessage("unable to add partitions to transaction").Len()
	// All n lines fall in one sampling second unless the machine stalls
	// for a second; allow one more second's first lines for that.
	if max := 2*clientLogFirst + n/clientLogThereafter; repeated < clientLogFirst || repeated > max {
		t.Errorf("%d of %d identical warnings written, want between %d and %d", repeated, n, clientLogFirst, max)
	}
	if logs.FilterMessage("a different line").Len() != 1 {
		t.Error("a different message was sampled away")
	}
}
