package pipeline

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Expirer is implemented by operators whose state has entries that expire
// in record time. Expiry must be invisible: an entry it removes must be one
// that no later Process call can take into account, so that outputs do not
// depend on when, how often or with what budget Expire runs.
//
// The engine calls Expire on a partition's committed store after it has
// applied a committed epoch (overlay.apply), from the partition's
// processing goroutine (the store's hot cache is not synchronised). Expire
// removes at most budget entries, in one unsynced Pebble batch, and never
// touches the store's offset; removed == budget means more may be due, and
// the next call continues where this one stopped.
//
// Budget: each accepted record adds one entry, which becomes due a window
// of record time later, so a budget below the records per epoch lets the
// backlog (and the state) grow without bound. Size it from the epoch, e.g.
// max(10000, 2 x the records the partition applied in the epoch): in a
// steady stream a call removes about one epoch's worth (a call costs ~2 us
// per entry), and a backlog (after a replay, a burst) shrinks by at least
// an epoch's worth per epoch.
type Expirer interface {
	Expire(st *Store, budget int) (removed int, err error)
}

// Expire implements Expirer: it removes the dedup entries that are expired
// under the committed watermark W (time seen < W - window; see Aggregator),
// oldest first, with their index entries, and returns how many it removed.
//
// It reads no dedup entry: Process keeps exactly one index entry per dedup
// entry, at its time seen (it deletes the index entry of an entry it
// replaces in the same epoch), so the dedup key of an index entry below
// W - window always names an expired entry. Not reading week-old entries
// matters: they are cold, and reading each would cost a random read per
// record.
func (a *Aggregator) Expire(st *Store, budget int) (removed int, err error) {
	if budget <= 0 {
		return 0, nil
	}
	w, err := watermark(st)
	if err != nil {
		return 0, fmt.Errorf("state store %s: %w", st.dir, err)
	}
	// Every index key below x/<W - window> belongs to an expired entry;
	// every index key below the cursor has been deleted already.
	lower := []byte(indexPrefix)
	if st.expireCursor != nil {
		lower = st.expireCursor
	}
	upper := binary.BigEndian.AppendUint64([]byte(indexPrefix), orderedNanos(liveFrom(w, a.dedupWindow)))
	if bytes.Compare(lower, upper) >= 0 {
		return 0, nil
	}
	it, err := st.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	b := st.db.NewBatch()
	defer b.Close()
	var last []byte
	for valid := it.First(); valid && removed < budget; valid = it.Next() {
		k := it.Key()
		if len(k) < len(indexPrefix)+8 {
			return 0, fmt.Errorf("state store %s: malformed dedup index key %q", st.dir, k)
		}
		dk := k[len(indexPrefix)+8:]
		if err := b.Delete(dk, nil); err != nil {
			return 0, err
		}
		// Point tombstones, not one DeleteRange per call: range tombstones
		// in the memtable are re-fragmented by the first read after each
		// new one, and (all starting at x/) nested ones cost quadratic
		// time; the cursor keeps scans off the point tombstones instead.
		if err := b.Delete(k, nil); err != nil {
			return 0, err
		}
		delete(st.hot, string(dk)) // keep the hot cache consistent
		last = append(last[:0], k...)
		removed++
	}
	if err := it.Error(); err != nil {
		return 0, fmt.Errorf("scanning the dedup index of %s: %w", st.dir, err)
	}
	if removed == 0 {
		return 0, nil
	}
	if err := st.db.Apply(b, pebble.NoSync); err != nil {
		return 0, fmt.Errorf("expiring dedup entries of %s: %w", st.dir, err)
	}
	// Process writes index entries at times >= W - window only, so none
	// can appear below the cursor.
	st.expireCursor = append(last, 0)
	return removed, nil
}
