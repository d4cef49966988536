package aggregate

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/txstream/txstream/pipeline"
)

// Expire implements pipeline.Expirer: it removes the dedup entries that are
// expired under the committed watermark W (time seen < W - window; see the
// package documentation), oldest first, with their index entries, and
// returns how many it removed.
//
// It reads no dedup entry: Process keeps exactly one index entry per dedup
// entry, at its time seen (it deletes the index entry of an entry it
// replaces in the same epoch), so the dedup key of an index entry below
// W - window always names an expired entry. Not reading week-old entries
// matters: they are cold, and reading each would cost a random read per
// record.
func (a *Aggregator) Expire(st *pipeline.Store, budget int) (removed int, err error) {
	if budget <= 0 {
		return 0, nil
	}
	w, err := watermark(st)
	if err != nil {
		return 0, fmt.Errorf("state store %s: %w", st.Dir(), err)
	}
	// Every index key below x/<W - window> belongs to an expired entry;
	// every index key below the cursor has been deleted already. The
	// cursor keeps the scan off the tombstones of earlier expiries, which
	// stay until compactions drop them.
	if a.cursorStore != st {
		a.cursorStore, a.cursor = st, nil
	}
	lower := []byte(indexPrefix)
	if a.cursor != nil {
		lower = a.cursor
	}
	upper := binary.BigEndian.AppendUint64([]byte(indexPrefix), orderedNanos(liveFrom(w, a.dedupWindow)))
	if bytes.Compare(lower, upper) >= 0 {
		return 0, nil
	}
	it, err := st.NewIter(lower, upper)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	// Point tombstones, not one DeleteRange per call: range tombstones in
	// the memtable are re-fragmented by the first read after each new one,
	// and (all starting at x/) nested ones cost quadratic time; the cursor
	// keeps scans off the point tombstones instead.
	var buf []byte // the index keys, back to back
	var ends []int
	for valid := it.First(); valid && removed < budget; valid = it.Next() {
		k := it.Key()
		if len(k) < len(indexPrefix)+8 {
			return 0, fmt.Errorf("state store %s: malformed dedup index key %q", st.Dir(), k)
		}
		buf = append(buf, k...)
		ends = append(ends, len(buf))
		removed++
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("scanning the dedup index of %s: %w", st.Dir(), err)
	}
	if removed == 0 {
		return 0, nil
	}
	// Each index key, and its tail: the dedup key.
	keys := make([][]byte, 0, 2*len(ends))
	start := 0
	for _, end := range ends {
		k := buf[start:end:end]
		keys = append(keys, k[len(indexPrefix)+8:], k)
		start = end
	}
	// One unsynced batch; the dedup entries leave the hot cache too.
	if err := st.DeleteKeys(keys); err != nil {
		return 0, fmt.Errorf("expiring dedup entries: %w", err)
	}
	// Process writes index entries at times >= W - window only, so none
	// can appear below the cursor.
	a.cursor = append(bytes.Clone(keys[len(keys)-1]), 0)
	return removed, nil
}
