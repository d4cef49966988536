package pipeline_test

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/txstream/txstream/pipeline"
)

// wordCount is a user-defined keyed operator: it counts records per Kafka
// key and emits the running count. It is deterministic (no wall clock, no
// map iteration), so replays after a crash rebuild the same state.
type wordCount struct{}

func (wordCount) Name() string { return "example.wordcount/v1" }

func (wordCount) Process(rec *pipeline.Record, st pipeline.State, out pipeline.Emitter) error {
	if len(rec.Key) == 0 {
		out.DeadLetter("missing_key", "records must be keyed")
		return nil
	}
	var n uint64
	if v, ok, err := st.Get(rec.Key); err != nil {
		return err // a storage error fails the attempt; the job restarts
	} else if ok {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], n)
	if err := st.Set(rec.Key, buf[:]); err != nil {
		return err
	}
	out.Emit(rec.Key, strconv.AppendUint(nil, n, 10))
	return nil
}

// mapState and printer stand in for the engine's Pebble state and sink.
type mapState map[string][]byte

func (m mapState) Get(k []byte) ([]byte, bool, error) { v, ok := m[string(k)]; return v, ok, nil }
func (m mapState) Set(k, v []byte) error              { m[string(k)] = append([]byte(nil), v...); return nil }
func (m mapState) Delete(k []byte) error              { delete(m, string(k)); return nil }

type printer struct{}

func (printer) Emit(k, v []byte)            { fmt.Printf("%s=%s\n", k, v) }
func (printer) DeadLetter(reason, _ string) { fmt.Println("dead letter:", reason) }
func (printer) Skipped(string)              {}

// An Operator is a deterministic keyed function; the engine gives it the
// partition's state (writes are committed with the epoch's output) and an
// emitter whose records go out in the epoch's transaction.
func Example_operator() {
	var op pipeline.Operator = wordCount{}
	st := mapState{}
	for _, k := range []string{"a", "b", "a", ""} {
		_ = op.Process(&pipeline.Record{Key: []byte(k)}, st, printer{})
	}
	// Output:
	// a=1
	// b=1
	// a=2
	// dead letter: missing_key
}
