package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/txstream/txstream/synth"
)

// Group churn settings. The session timeout is the shortest Kafka accepts
// (group.min.session.timeout.ms). A stopped member sleeps 7-13 s: always
// past the session timeout (the group moves its partitions), and in about
// half the cases past the transaction timeout too (the broker aborts its
// open transaction while it sleeps; otherwise the zombie wakes with the
// transaction open and a stale generation).
const (
	churnMembers        = 3
	churnPartitions     = 6
	churnRate           = 2000 // input records per second
	churnInputFor       = 32 * time.Second
	churnSessionTimeout = 6 * time.Second
	churnTxnTimeout     = 10 * time.Second
	churnIdleExit       = 8 * time.Second
)

// churnKind is a way a member leaves the group.
type churnKind int

const (
	churnTerm churnKind = iota // SIGTERM: drain, leave; restarted once it has exited
	churnKill                  // SIGKILL: crash; restarted with the same instance id
	churnStop                  // SIGSTOP past the session timeout, then SIGCONT: a zombie
)

func (k churnKind) String() string {
	return [...]string{"SIGTERM", "SIGKILL", "SIGSTOP"}[k]
}

// churnState is what the schedule knows about a member.
type churnState int

const (
	memberUp          churnState = iota // running
	memberStopped                       // SIGSTOPped, resumeAt
	memberTerminating                   // SIGTERM sent, waiting for its exit
	memberDown                          // exited, restartAt (zero: not to be restarted)
)

// churnMember is one consumer identity (instance id, data directory) and
// the processes that ran as it, one after the other.
type churnMember struct {
	id    string
	args  []string
	proc  *consumerProc
	procs []*consumerProc // every process that ran as this member, in order
	state churnState
	// resumeAt (stopped) and restartAt (down) are when the schedule acts
	// next on the member.
	resumeAt, restartAt time.Time
	stoppedAt           time.Time
	// expect is the exit code the current process should end with once
	// the schedule has signalled it (-1: none expected yet).
	expect int
}

// logs returns the output of every process of the member, each headed by
// its start number and exit code.
func (m *churnMember) logs() string {
	var b strings.Builder
	for i, p := range m.procs {
		code := "running"
		select {
		case <-p.done:
			code = "exit " + strconv.Itoa(p.code)
		default:
		}
		fmt.Fprintf(&b, "=== %s process %d (%s)\n%s", m.id, i+1, code, p.log.String())
	}
	return b.String()
}

// TestGroupChurnExactlyOnce runs three consumers in one group, sharing a
// checkpoint directory, while input arrives at a steady rate for half a
// minute. A schedule driven by a seeded RNG makes one member leave every
// 3-5 s, cycling through the three ways a member goes: SIGTERM (graceful
// drain and leave, then a restart), SIGKILL (a crash, restarted with the
// same instance id) and SIGSTOP for longer than the session timeout, then
// SIGCONT (a zombie that wakes up with an epoch open: the group has moved
// its partitions, and the broker may have aborted its transaction; it must
// be fenced or abort, and rejoin, at once, never commit stale output). At
// least one member runs at any moment. After the input ends every member
// runs to idle and exits; the committed output must then be exactly what
// one failure-free pass computes, record by record.
//
// TXSTREAM_CHURN_SEED=<n> replays a schedule; TXSTREAM_CHURN_LOGS=<dir>
// keeps every member's log there (m1.log, ...).
func TestGroupChurnExactlyOnce(t *testing.T) { groupChurn(t, nil) }

// TestGroupChurnExactlyOnceChangelog is TestGroupChurnExactlyOnce in
// changelog mode: partitions move between members with their state as a
// base plus change-log segments (a base every 4 snapshots, no size rule),
// and every member that receives a partition writes a base of its own.
func TestGroupChurnExactlyOnceChangelog(t *testing.T) {
	groupChurn(t, []string{"--checkpoint-mode", "changelog", "--changelog-base-every", "4", "--changelog-max-ratio", "0"})
}

// groupChurn runs the churn schedule with the members' extra arguments.
func groupChurn(t *testing.T, mode []string) {
	bins := buildBinaries(t)
	began := time.Now()
	rows := churnRate * int(churnInputFor/time.Second)
	ds := genDataset(t, rows, 500, 11)
	dir := t.TempDir()
	broker := startBroker(t, filepath.Join(dir, "broker"), "--topics", "transactions", "--partitions", strconv.Itoa(churnPartitions))

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TXSTREAM_CHURN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TXSTREAM_CHURN_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("churn schedule seed %d (TXSTREAM_CHURN_SEED=%d replays it); broker %s", seed, seed, broker.Kind)
	rng := rand.New(rand.NewPCG(seed, 0x636875726e))

	extra := []string{"--session-timeout", churnSessionTimeout.String(), "--rebalance-timeout", "15s",
		"--transaction-timeout", churnTxnTimeout.String(), "--exit-when-idle", churnIdleExit.String()}
	extra = append(extra, mode...)
	members := make([]*churnMember, churnMembers)
	for i := range members {
		id := fmt.Sprintf("m%d", i+1)
		members[i] = &churnMember{id: id, args: consumerArgs(broker.Addr, dir, id, extra...), expect: -1}
	}
	start := func(m *churnMember) {
		m.proc = startConsumer(t, bins, nil, m.args...)
		m.procs = append(m.procs, m.proc)
		m.state, m.expect = memberUp, -1
		m.resumeAt, m.restartAt = time.Time{}, time.Time{}
	}
	dumpLogs := func() {
		for _, m := range members {
			t.Logf("member %s: warnings and errors of all its processes:\n%s", m.id,
				grepLines(m.logs(), `"level":"warn"`, 15)+"\n"+grepLines(m.logs(), `"level":"error"`, 15))
			t.Logf("member %s: last 40 lines without snapshot publications:\n%s", m.id, lastLines(m.logs(), 40, `"msg":"snapshot published"`))
			t.Logf("member %s: raw log tail:\n%s", m.id, tail(m.logs(), 2500))
		}
	}
	defer func() {
		if t.Failed() {
			dumpLogs()
		}
		if d := os.Getenv("TXSTREAM_CHURN_LOGS"); d != "" {
			for _, m := range members {
				if err := os.WriteFile(filepath.Join(d, m.id+".log"), []byte(m.logs()), 0o644); err != nil {
					t.Log(err)
				}
			}
		}
	}()

	consumersAt := time.Now()
	for _, m := range members {
		start(m)
	}
	// Churn starts once the group has settled with partitions on every
	// member: each leave is then a real hand-over of state.
	deadline := time.Now().Add(60 * time.Second)
	for {
		settled := true
		for _, m := range members {
			if !ownsPartitions(m.proc.log.String()) {
				settled = false
			}
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not give every member partitions within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("group settled %v after the consumers started (%v into the test); producing %d rows at %d/s",
		time.Since(consumersAt).Round(time.Millisecond), time.Since(began).Round(time.Millisecond), rows, churnRate)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prodErr := make(chan error, 1)
	inputStart := time.Now()
	go func() { prodErr <- produceRaw(ctx, broker.Addr, ds.lines, churnRate) }()

	var events []string
	// wakes are the zombies: what each stopped process logged from its
	// SIGCONT on, shown at the end.
	type wake struct {
		m    *churnMember
		p    *consumerProc
		from int       // log offset at SIGCONT
		at   time.Time // SIGCONT
	}
	var wakes []wake
	note := func(format string, args ...any) {
		s := fmt.Sprintf("%6.2fs ", time.Since(inputStart).Seconds()) + fmt.Sprintf(format, args...)
		events = append(events, s)
		t.Log(s)
	}
	// exited checks a process the schedule finds gone: the exit code it
	// was told to expect, or a failure.
	exited := func(m *churnMember, why string) {
		if m.expect >= 0 && m.proc.code == m.expect {
			return
		}
		t.Errorf("member %s process %d exited %d %s (expected %d); its log tail:\n%s",
			m.id, len(m.procs), m.proc.code, why, m.expect, tail(m.proc.log.String(), 4000))
	}
	up := func() []*churnMember {
		var r []*churnMember
		for _, m := range members {
			if m.state == memberUp {
				r = append(r, m)
			}
		}
		return r
	}

	kind := churnKind(rng.IntN(3))
	nextEvent := inputStart.Add(time.Duration(3000+rng.IntN(2000)) * time.Millisecond)
	inputDone := false
	var inputEnd time.Time
	counts := map[churnKind]int{}
	for {
		now := time.Now()
		if !inputDone {
			select {
			case err := <-prodErr:
				if err != nil {
					t.Fatalf("producing: %v", err)
				}
				inputDone, inputEnd = true, time.Now()
				note("input done (%d rows in %v)", rows, time.Since(inputStart).Round(time.Millisecond))
			default:
			}
		}
		// Members' pending transitions.
		for _, m := range members {
			switch m.state {
			case memberUp:
				select {
				case <-m.proc.done:
					// On its own: idle exit (only once input has stopped
					// for a while), or a failure.
					if m.proc.code == 0 && !inputDone {
						note("%s exited 0 on its own during the input (idle?); restarting it", m.id)
					} else if m.proc.code != 0 {
						exited(m, "on its own")
					}
					m.state = memberDown
					if !inputDone {
						m.restartAt = now.Add(500 * time.Millisecond)
					}
				default:
				}
			case memberStopped:
				if !now.Before(m.resumeAt) {
					if err := m.proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
						t.Errorf("SIGCONT %s: %v", m.id, err)
					}
					note("SIGCONT %s (stopped for %v)", m.id, now.Sub(m.stoppedAt).Round(time.Millisecond))
					wakes = append(wakes, wake{m, m.proc, len(m.proc.log.String()), now})
					m.state = memberUp
				}
			case memberTerminating:
				select {
				case <-m.proc.done:
					exited(m, "after SIGTERM")
					m.state = memberDown
					m.restartAt = now.Add(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
					note("%s drained and exited %d; restart in %v", m.id, m.proc.code, m.restartAt.Sub(now).Round(time.Millisecond))
				default:
					if now.After(m.resumeAt) { // resumeAt doubles as the drain deadline
						t.Errorf("member %s did not exit within 30 s of SIGTERM; killing it", m.id)
						m.proc.kill()
					}
				}
			case memberDown:
				if !m.restartAt.IsZero() && !now.Before(m.restartAt) {
					start(m)
					note("restart %s (process %d)", m.id, len(m.procs))
				}
			}
		}
		// The next leave, while input flows. It waits for two members up,
		// so that one is still up after it.
		if !inputDone && !now.Before(nextEvent) {
			if cand := up(); len(cand) >= 2 {
				m := cand[rng.IntN(len(cand))]
				counts[kind]++
				switch kind {
				case churnTerm:
					_ = m.proc.cmd.Process.Signal(syscall.SIGTERM)
					m.state, m.expect, m.resumeAt = memberTerminating, 0, now.Add(30*time.Second)
					note("SIGTERM %s", m.id)
				case churnKill:
					m.expect = 137
					m.proc.kill()
					exited(m, "after SIGKILL")
					m.state = memberDown
					m.restartAt = now.Add(time.Duration(300+rng.IntN(1700)) * time.Millisecond)
					note("SIGKILL %s; restart in %v", m.id, m.restartAt.Sub(now).Round(time.Millisecond))
				case churnStop:
					_ = m.proc.cmd.Process.Signal(syscall.SIGSTOP)
					d := churnSessionTimeout + time.Second + time.Duration(rng.IntN(6000))*time.Millisecond
					m.state, m.stoppedAt, m.resumeAt = memberStopped, now, now.Add(d)
					note("SIGSTOP %s for %v", m.id, d)
				}
				kind = (kind + 1) % 3
				nextEvent = now.Add(time.Duration(3000+rng.IntN(2000)) * time.Millisecond)
			}
		}
		// Done with the schedule once the input has ended and every member
		// is up again: then they run to idle.
		if inputDone && len(up()) == churnMembers {
			break
		}
		if inputDone {
			// Anything down is restarted now, not later.
			for _, m := range members {
				if m.state == memberDown && (m.restartAt.IsZero() || m.restartAt.After(now)) {
					m.restartAt = now
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	note("schedule over: %d SIGTERM, %d SIGKILL, %d SIGSTOP; members run to idle", counts[churnTerm], counts[churnKill], counts[churnStop])
	if counts[churnTerm] == 0 || counts[churnKill] == 0 || counts[churnStop] == 0 {
		t.Errorf("the schedule did not use every kind of leave: %v", counts)
	}

	// Run to idle: every process must end by itself with 0.
	idleDeadline := time.Now().Add(3 * time.Minute)
	unfinished := false
	for _, m := range members {
		if !m.proc.wait(time.Until(idleDeadline)) {
			t.Errorf("member %s did not finish (exit when idle) within 3 minutes of the input's end; killing it", m.id)
			m.proc.kill()
			unfinished = true
			continue
		}
		m.expect = 0
		exited(m, "when idle")
	}
	t.Logf("all members ended %v after the input started", time.Since(inputStart).Round(time.Millisecond))
	segRestores := 0
	for _, m := range members {
		starts := len(m.procs)
		l := m.logs()
		segRestores += strings.Count(l, ` change-log segments","commit_point_from"`)
		t.Logf("member %s: %d processes, %d attempt restarts, %d aborted epochs, %d partitions lost, %d partitions recovered",
			m.id, starts, strings.Count(l, ` -> RESTARTING"`),
			strings.Count(l, `"msg":"epoch aborted`), strings.Count(l, `"msg":"partitions lost"`), strings.Count(l, `"msg":"partition recovered"`))
	}
	if slices.Contains(mode, "changelog") {
		t.Logf("%d partition recoveries restored change-log segments", segRestores)
		if segRestores == 0 {
			t.Error("no recovery restored change-log segments: the test does not exercise them")
		}
	}
	// Each zombie must notice at once that it is out of the group (its
	// first heartbeat or commit says so) and come back as a member: never
	// commit (the output check below), never hang, and never take the
	// time it slept for idleness and finish while input flows.
	for _, w := range wakes {
		after := w.p.log.String()[w.from:]
		name := fmt.Sprintf("zombie %s (process %d, SIGCONT at %.2fs)", w.m.id, slices.Index(w.m.procs, w.p)+1, w.at.Sub(inputStart).Seconds())
		t.Logf("%s, what it did next:\n%s", name, wakeSummary(after, 8))
		ev, ok := firstLogEvent(after, func(msg string) bool {
			return zombieReactions[msg] || strings.HasSuffix(msg, " -> RESTARTING") || strings.HasSuffix(msg, " -> FINISHED")
		})
		switch {
		case !ok:
			t.Errorf("%s hung: nothing in its log between its SIGCONT and its end (exit %d) shows it noticed it had left the group (no partitions lost/revoked/assigned, attempt restart or exit)", name, w.p.code)
		case ev.ts.Sub(w.at) > 20*time.Second:
			t.Errorf("%s took %v to react (%q): it hung after waking instead of being fenced at once", name, ev.ts.Sub(w.at).Round(time.Millisecond), ev.msg)
		}
		if ev, ok := firstLogEvent(after, func(msg string) bool { return msg == "idle, finishing" || msg == "partitions assigned" }); ok &&
			ev.msg == "idle, finishing" && (inputEnd.IsZero() || w.at.Before(inputEnd)) {
			t.Errorf("%s finished as idle (%s) without rejoining, while input was still flowing: the time it was stopped counted as idle time", name, ev.line)
		}
	}
	if unfinished {
		t.FailNow() // the output is incomplete by construction
	}

	// Exactly once, whatever else failed above: a subtest, so that its
	// verdict shows on its own.
	var rep *synth.Report
	exact := t.Run("exactly_once", func(t *testing.T) {
		var out *synth.OutputChecker
		out, rep = verifyOutput(t, broker.Addr, ds.exp)
		if t.Failed() {
			explainOutput(t, broker.Addr, out, rep, ds)
		}
	})
	if !exact || t.Failed() {
		t.Logf("schedule (seed %d):\n%s", seed, strings.Join(events, "\n"))
	}
	if exact {
		t.Logf("exactly once after churn: %d transactions, %d dead letters; total %v", rep.Distinct, rep.DeadLetters, time.Since(began).Round(time.Millisecond))
	}
}

// lastLines returns the last n lines of log that do not contain skip.
func lastLines(log string, n int, skip string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if l != "" && !strings.Contains(l, skip) {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// explainOutput says where the transactions that are missing from the
// output or repeated in it came from: input partition and offsets, which
// the members' logs ("partition released", "recovering partition", epoch
// commits) can be matched against.
func explainOutput(t *testing.T, broker string, out *synth.OutputChecker, rep *synth.Report, ds *dataset) {
	t.Helper()
	where := map[string][2]int64{} // transaction id -> partition, offset
	for _, r := range readTopics(t, broker, "transactions") {
		if f := bytes.SplitN(r.Value, []byte(","), 2); len(f) == 2 {
			if _, seen := where[string(f[0])]; !seen {
				where[string(f[0])] = [2]int64{int64(r.Partition), r.Offset}
			}
		}
	}
	type span struct {
		n        int
		min, max int64
	}
	summarize := func(what string, ids []string) {
		spans := map[int64]*span{}
		for _, id := range ids {
			w, ok := where[id]
			if !ok {
				w = [2]int64{-1, -1}
			}
			sp := spans[w[0]]
			if sp == nil {
				sp = &span{min: w[1], max: w[1]}
				spans[w[0]] = sp
			}
			sp.n++
			sp.min, sp.max = min(sp.min, w[1]), max(sp.max, w[1])
		}
		parts := make([]int64, 0, len(spans))
		for p := range spans {
			parts = append(parts, p)
		}
		slices.Sort(parts)
		for _, p := range parts {
			sp := spans[p]
			t.Logf("%s: input partition %d: %d transactions, first seen at input offsets %d..%d", what, p, sp.n, sp.min, sp.max)
		}
	}
	var repeated, missing []string
	for id := range rep.Repeated {
		repeated = append(repeated, id)
	}
	for id := range ds.exp.Running {
		if out.Count(id) == 0 {
			missing = append(missing, id)
		}
	}
	summarize("output more than once", repeated)
	summarize("missing from the output", missing)
}

// zombieReactions are log messages that show a woken member has noticed
// the group moved on (or that it went on to exit). A zombie that held no
// partitions when it was stopped (it lost them at an earlier wake and was
// stopped again while rejoining) has nothing to lose or revoke: its
// reaction is the session error that makes it rejoin.
var zombieReactions = map[string]bool{
	"partitions lost": true, "partitions revoked": true, "partitions assigned": true,
	"epoch aborted by a rebalance; its records will be processed again": true,
	"group session error; the client rejoins":                           true,
	"idle, finishing": true, "job ended": true,
}

type logEvent struct {
	msg  string
	ts   time.Time
	line string
}

// firstLogEvent finds the first JSON log line whose message matches.
func firstLogEvent(log string, match func(msg string) bool) (logEvent, bool) {
	for _, line := range strings.Split(log, "\n") {
		var ev struct {
			TS  time.Time `json:"ts"`
			Msg string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &ev) == nil && match(ev.Msg) {
			return logEvent{ev.Msg, ev.TS, line}, true
		}
	}
	return logEvent{}, false
}

// wakeSummary is the first max lines of a JSON log that say what happened
// (group events, failures, restarts, idle exit), messages and key fields
// only.
func wakeSummary(log string, max int) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		msg, _ := ev["msg"].(string)
		if ev["level"] == "debug" || msg == "snapshot published" || strings.HasPrefix(msg, "replay progress") {
			continue
		}
		s := fmt.Sprintf("  %v %v", ev["ts"], msg)
		for _, k := range []string{"partitions", "partition", "err", "cause", "records", "idle_for"} {
			if v, ok := ev[k]; ok {
				vs := fmt.Sprint(v)
				if len(vs) > 200 {
					vs = vs[:200] + "…"
				}
				s += fmt.Sprintf(" %s=%s", k, vs)
			}
		}
		out = append(out, s)
		if len(out) == max {
			break
		}
	}
	return strings.Join(out, "\n")
}
