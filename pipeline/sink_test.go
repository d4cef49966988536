package pipeline

import (
	"bytes"
	"fmt"
	"testing"
)

// TestOutSlab: records carved from blocks keep their own copies of key and
// value (the caller reuses its buffer), across block boundaries and for
// records too large for a block, with the input coordinates in the
// record's context.
func TestOutSlab(t *testing.T) {
	var s outSlab
	var scratch []byte
	type want struct{ key, value []byte }
	var wants []want
	var recs []*outRecord
	for i := 0; i < 3*slabRecords+7; i++ {
		size := 200
		if i%97 == 0 {
			size = slabBytes // larger than a block takes
		}
		scratch = append(scratch[:0], fmt.Sprintf("k%d", i)...)
		k := len(scratch)
		scratch = append(scratch, bytes.Repeat([]byte{byte(i)}, size)...)
		src := &Record{Partition: 2, Offset: int64(i)}
		r := s.record("out", scratch[:k], scratch[k:], src)
		wants = append(wants, want{bytes.Clone(scratch[:k]), bytes.Clone(scratch[k:])})
		sc, ok := r.Context.(*srcCtx)
		if !ok || sc.p != 2 || sc.off != int64(i) {
			t.Fatalf("record %d: context %#v", i, r.Context)
		}
		recs = append(recs, &outRecord{Record: *r})
		clear(scratch) // the caller reuses its buffer
	}
	for i, r := range recs {
		if !bytes.Equal(r.Key, wants[i].key) || !bytes.Equal(r.Value, wants[i].value) {
			t.Fatalf("record %d: key %q, value of %d bytes; want %q and %d bytes", i, r.Key, len(r.Value), wants[i].key, len(wants[i].value))
		}
		if r.Topic != "out" || cap(r.Key) != len(r.Key) {
			t.Fatalf("record %d: topic %q, key capacity %d (appending to it would overwrite the value)", i, r.Topic, cap(r.Key))
		}
	}
}
