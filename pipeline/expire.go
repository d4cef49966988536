package pipeline

// Expirer is implemented by operators whose state has entries that expire
// in record time. Expiry must be invisible: an entry it removes must be one
// that no later Process call can take into account, so that outputs do not
// depend on when, how often or with what budget Expire runs.
//
// The engine calls Expire on a partition's committed store after it has
// applied a committed epoch (overlay.apply), from the partition's
// processing goroutine (the store's key filter is not synchronised), with
// the same *Store for as long as the partition's store is open (a restored
// partition gets a new Store and a new operator), so an operator may keep
// a scan position per store. Expire removes at most budget keys, in one
// unsynced Pebble batch, and never touches the store's offset; removed ==
// budget means more may be due, and the next call continues where this one
// stopped. Store.NewIter and Store.DeleteKeys are the API for it: a bounded
// scan of the committed state, and a deletion.
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
