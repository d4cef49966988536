package pipeline

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// openGate is a compaction scheduler that grants nothing until the store
// is open, and then behaves as Pebble's default (a concurrency limit set
// by the DB's compaction backlog, re-checked every 100 ms and whenever a
// compaction ends).
//
// Why: pebble.Open flushes the memtable it recovers from the WAL, that
// flush schedules a compaction, and Open then waits for every running
// compaction before it scans for obsolete files. A restored snapshot
// always carries a WAL, and at 60k accounts its first compaction took
// ~250 ms of a ~280 ms open; at 5M, seconds. Held until Open returns, the
// same compaction runs in the background while the partition replays and
// processes.
type openGate struct {
	mu struct {
		sync.Mutex
		db           pebble.DBForCompaction
		open         bool
		unregistered bool
		granting     bool
		running      int
	}
	grantingDone *sync.Cond
	poke         chan struct{}
	stop         chan struct{}
	stopped      chan struct{}
}

var _ pebble.CompactionScheduler = (*openGate)(nil)

func newOpenGate() *openGate {
	g := &openGate{poke: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	g.grantingDone = sync.NewCond(&g.mu.Mutex)
	return g
}

// Open lets compactions run from now on.
func (g *openGate) Open() {
	g.mu.Lock()
	g.mu.open = true
	g.mu.Unlock()
	g.UpdateGetAllowedWithoutPermission()
}

func (g *openGate) Register(_ int, db pebble.DBForCompaction) {
	g.mu.Lock()
	g.mu.db = db
	g.mu.Unlock()
	go g.granter()
}

func (g *openGate) Unregister() {
	close(g.stop)
	<-g.stopped
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mu.unregistered = true
	for g.mu.granting {
		g.grantingDone.Wait()
	}
}

// TrySchedule is called by the DB with its own mutex held; the DB's
// GetAllowedWithoutPermission takes no lock.
func (g *openGate) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.mu.open || g.mu.unregistered || g.mu.db == nil {
		return false, nil
	}
	if g.mu.db.GetAllowedWithoutPermission() > g.mu.running {
		g.mu.running++
		return true, g
	}
	return false, nil
}

func (g *openGate) UpdateGetAllowedWithoutPermission() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

// The grant handle: Pebble calls Done when a granted compaction ends.
func (g *openGate) Started()                                          {}
func (g *openGate) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (g *openGate) CumulativeStats(pebble.CompactionGrantHandleStats) {}
func (g *openGate) Done() {
	g.mu.Lock()
	g.mu.running--
	g.mu.Unlock()
	g.UpdateGetAllowedWithoutPermission()
}

func (g *openGate) granter() {
	defer close(g.stopped)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		case <-g.poke:
		}
		g.grant()
	}
}

// grant offers the DB as many compactions as its backlog allows. It calls
// the DB without holding g.mu: the DB's Schedule takes the DB's mutex,
// which TrySchedule's caller holds while it takes g.mu.
func (g *openGate) grant() {
	g.mu.Lock()
	if !g.mu.open || g.mu.unregistered || g.mu.granting {
		g.mu.Unlock()
		return
	}
	db := g.mu.db
	n := db.GetAllowedWithoutPermission() - g.mu.running
	if n <= 0 {
		g.mu.Unlock()
		return
	}
	g.mu.granting = true
	g.mu.Unlock()
	for ; n > 0; n-- {
		if waiting, _ := db.GetWaitingCompaction(); !waiting {
			break
		}
		// Count the grant before the DB can finish the compaction and
		// call Done.
		g.mu.Lock()
		g.mu.running++
		g.mu.Unlock()
		if !db.Schedule(g) {
			g.mu.Lock()
			g.mu.running--
			g.mu.Unlock()
			break
		}
	}
	g.mu.Lock()
	g.mu.granting = false
	g.grantingDone.Broadcast()
	g.mu.Unlock()
}
