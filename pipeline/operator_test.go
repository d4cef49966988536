package pipeline

import (
	"maps"
	"testing"
)

// plainOp has no compatibility settings beyond its name.
type plainOp struct{}

func (plainOp) Name() string                          { return "test/v1" }
func (plainOp) Process(*Record, State, Emitter) error { return nil }

// settingsOp supplies its own settings.
type settingsOp struct {
	plainOp
	m map[string]string
}

func (o settingsOp) StateSettings() map[string]string { return o.m }

func TestStateSettings(t *testing.T) {
	shared := map[string]string{"operator": "test/v2", "window": "1h"}
	for _, c := range []struct {
		op   Operator
		want map[string]string
	}{
		{plainOp{}, map[string]string{"operator": "test/v1"}},
		{settingsOp{m: shared}, map[string]string{"operator": "test/v2", "window": "1h"}},
		{settingsOp{m: map[string]string{"window": "1h"}}, map[string]string{"operator": "test/v1", "window": "1h"}},
		{settingsOp{}, map[string]string{"operator": "test/v1"}},
	} {
		got := StateSettings(c.op)
		if !maps.Equal(got, c.want) {
			t.Errorf("StateSettings(%T) = %v, want %v", c.op, got, c.want)
		}
		got["topic"] = "in" // the caller adds its own: the operator's map stays as it was
	}
	if len(shared) != 2 {
		t.Fatalf("StateSettings returned the operator's own map: %v", shared)
	}
}
