package aggregate

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/txstream/txstream/pipeline"
)

// Expire implements pipeline.Expirer: it removes the dedup entries of the
// buckets that are wholly expired under the committed watermark W (every
// bucket before the one holding W - window; see the package documentation),
// oldest first, at most budget Pebble keys (a packed value of many entries
// counts as one), and returns how many it removed.
//
// It reads no dedup value: a bucket before W - window's holds only
// expired entries. Entries of the bucket that W - window falls into stay
// until the next bucket starts to expire; Process treats the expired ones
// as absent, so keeping them changes no decision.
func (a *Aggregator) Expire(st *pipeline.Store, budget int) (removed int, err error) {
	if budget <= 0 {
		return 0, nil
	}
	w, err := watermark(st)
	if err != nil {
		return 0, fmt.Errorf("state store %s: %w", st.Dir(), err)
	}
	// Every dedup key below the cursor has been deleted already. The
	// cursor keeps the scan off the tombstones of earlier expiries, which
	// stay until compactions drop them.
	if a.cursorStore != st {
		a.cursorStore, a.cursor = st, nil
	}
	lower := []byte(dedupPrefix)
	if a.cursor != nil {
		lower = a.cursor
	}
	upper := binary.BigEndian.AppendUint64([]byte(dedupPrefix), orderedNanos(a.bucketOf(liveFrom(w, a.dedupWindow))))
	if bytes.Compare(lower, upper) >= 0 {
		return 0, nil
	}
	it, err := st.NewIter(lower, upper)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	// Point tombstones, not a DeleteRange per bucket: the change log
	// (checkpoint mode changelog) records point changes only, and range
	// tombstones in the memtable are re-fragmented by every read after
	// each new one. The cursor keeps scans off the point tombstones.
	var buf []byte // the keys, back to back
	var ends []int
	for valid := it.First(); valid && removed < budget; valid = it.Next() {
		buf = append(buf, it.Key()...)
		ends = append(ends, len(buf))
		removed++
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("scanning the dedup entries of %s: %w", st.Dir(), err)
	}
	if removed == 0 {
		return 0, nil
	}
	keys := make([][]byte, 0, len(ends))
	start := 0
	for _, end := range ends {
		keys = append(keys, buf[start:end:end])
		start = end
	}
	// One unsynced batch; the dedup entries leave the hot cache too.
	if err := st.DeleteKeys(keys); err != nil {
		return 0, fmt.Errorf("expiring dedup entries: %w", err)
	}
	// Process writes entries in the buckets of times >= W - window only,
	// so none can appear below the cursor.
	a.cursor = append(bytes.Clone(keys[len(keys)-1]), 0)
	return removed, nil
}
