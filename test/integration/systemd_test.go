package integration

// The systemd units in deploy/systemd: systemd-analyze verify, the
// settings they rely on, and the consumer's sd_notify protocol under a fake
// NOTIFY_SOCKET (READY=1 only after recovery, WATCHDOG=1 from the loop,
// STOPPING=1 on SIGTERM, exit 0), plus the exit codes the unit's restart
// policy is aligned with (2 bad settings, 3 FAILED).

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
)

// needTool returns the path of a command-line tool, skipping the test when
// it is missing outside CI and failing it in CI (.ci/run installs it).
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found in CI: .ci/run should have installed it (apt-get install %s)", name, pkg)
	}
	t.Skipf("%s not found: install it (apt-get install %s) to run this test", name, pkg)
	return ""
}

// unitDirectives parses a unit file into key -> values (repeated keys
// accumulate; comments and section headers dropped).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", path, line)
		}
		m[k] = append(m[k], v)
	}
	return m
}

func TestSystemdUnits(t *testing.T) {
	bins := buildBinaries(t)
	analyze := needTool(t, "systemd-analyze", "systemd")
	consumer, producer := bins.Path("consumer"), bins.Path("producer")
	src := bins.RepoPath("deploy/systemd")
	dir := t.TempDir()

	// verify checks that ExecStart= exists: point it at the built binaries
	// and the environment files at the shipped examples.
	var units []string
	for _, u := range []struct{ name, bin, installed, env string }{
		{"txstream-consumer.service", consumer, "/usr/local/bin/txstream-consumer", "consumer.env"},
		{"txstream-producer.service", producer, "/usr/local/bin/txstream-producer", "producer.env"},
	} {
		b, err := os.ReadFile(filepath.Join(src, u.name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "ExecStart="+u.installed, "ExecStart="+u.bin)
		s = strings.ReplaceAll(s, "EnvironmentFile=/etc/txstream/"+u.env, "EnvironmentFile="+filepath.Join(src, u.env))
		if s == string(b) {
			t.Fatalf("%s: ExecStart=%s not found", u.name, u.installed)
		}
		p := filepath.Join(dir, u.name)
		depWrite(t, p, s, 0o644)
		units = append(units, p)
	}
	// The example drop-in, installed next to the unit.
	dropin, err := os.ReadFile(filepath.Join(src, "txstream-consumer.service.d", "kafka-auth.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "txstream-consumer.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	depWrite(t, filepath.Join(dir, "txstream-consumer.service.d", "kafka-auth.conf"), string(dropin), 0o644)
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("systemd-analyze verify: %v\n%s", err, out)
	if err != nil {
		t.Errorf("systemd-analyze verify failed: %v\n%s", err, out)
	}
	// verify exits 0 on unknown keys and bad values; it only warns.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "txstream-") {
			t.Errorf("systemd-analyze verify warns about a unit: %s", line)
		}
	}

	// The exposure score of the hardening (systemd >= 250 can score a
	// unit file offline).
	for _, u := range units {
		out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", u).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		if err != nil || m == nil {
			t.Logf("systemd-analyze security --offline not available here (%v); exposure not scored", err)
			break
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f (0 = fully sandboxed, 10 = unprotected)", filepath.Base(u), score)
		if score > 2.5 {
			t.Errorf("%s: exposure %.1f, want at most 2.5\n%s", filepath.Base(u), score, out)
		}
	}

	// The directives the unit must have: readiness notification, restart on
	// failure but not on bad settings (exit 2), sandboxing, its own state
	// directory, the environment file.
	d := unitDirectives(t, filepath.Join(src, "txstream-consumer.service"))
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "RestartPreventExitStatus": "2",
		"StateDirectory": "txstream", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "", "ReadWritePaths": "/var/lib/txstream",
		"User": "txstream", "EnvironmentFile": "/etc/txstream/consumer.env", "KillSignal": "SIGTERM",
	} {
		if got := d[k]; len(got) != 1 || got[0] != want {
			t.Errorf("txstream-consumer.service: %s=%q, want %q", k, got, want)
		}
	}
	if w := d["WatchdogSec"]; len(w) != 1 || w[0] == "" || w[0] == "0" {
		t.Errorf("txstream-consumer.service: WatchdogSec=%q, want a watchdog", w)
	}
	if !contains(d["Environment"], "GOTRACEBACK=crash") {
		t.Errorf("txstream-consumer.service: no Environment=GOTRACEBACK=crash: a panic or the watchdog's SIGABRT would exit 2, which RestartPreventExitStatus=2 does not restart")
	}
	for _, e := range d["Environment"] {
		if strings.Contains(e, "_DIR=") && !strings.Contains(e, "=/var/lib/txstream/") {
			t.Errorf("txstream-consumer.service: %s is outside the state directory", e)
		}
	}

	// Every TXSTREAM_* name in the units and environment files is a real
	// setting of the binary (a typo would be silently ignored).
	checkEnvNames(t, consumer, filepath.Join(src, "txstream-consumer.service"), filepath.Join(src, "consumer.env"),
		filepath.Join(src, "txstream-consumer.service.d", "kafka-auth.conf.example"))
	checkEnvNames(t, producer, filepath.Join(src, "txstream-producer.service"), filepath.Join(src, "producer.env"))
}

// checkEnvNames fails for a TXSTREAM_* variable in files that bin --help
// does not list.
func checkEnvNames(t *testing.T, bin string, files ...string) {
	t.Helper()
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	re := regexp.MustCompile(`\bTXSTREAM_[A-Z0-9_]+`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range re.FindAllString(string(b), -1) {
			if name != "TXSTREAM_FOO_BAR" && !strings.Contains(string(help), name) { // FOO_BAR: the naming rule
				t.Errorf("%s: %s is not a setting of %s (see --help)", filepath.Base(f), name, filepath.Base(bin))
			}
		}
	}
}

type notifyMsg struct {
	at   time.Time
	text string
}

// TestSystemdNotify runs the consumer the way systemd runs a Type=notify
// service with WatchdogSec=: NOTIFY_SOCKET names a datagram socket the test
// listens on and WATCHDOG_USEC the watchdog interval. (WATCHDOG_PID, which
// systemd sets to the service's pid, is left unset: the child's pid is not
// known before it starts, and go-systemd checks it only when set.)
func TestSystemdNotify(t *testing.T) {
	bins := buildBinaries(t)
	consumer, producer := bins.Path("consumer"), bins.Path("producer")
	b := startBroker(t, "")
	dir := t.TempDir()
	csv, exp := depGenerate(t, dir, synth.Config{Rows: 3000, Accounts: 10, ZipfS: 1.1, Seed: 3,
		BadFraction: 0.01, DupFraction: 0.01, Epoch: synth.DefaultEpoch, Interval: time.Second})
	res := depRun(t, 60*time.Second, producer, depEnv(), "--file", csv, "--topic", "sd-in", "--brokers", b.Addr,
		"--create-topic-partitions", "3", "--progress", "off", "--log-format", "json")
	if res.Code != 0 {
		t.Fatalf("producer exited %d\n%s", res.Code, tail(res.Stderr, 3000))
	}
	state := t.TempDir()
	args := depConsumerArgs(b.Addr, state, "sd-in", "sd-out", "sd-dlq", "sd")

	// A first run processes everything and leaves snapshots, so that the
	// run under the fake systemd really restores and recovers.
	p := depStart(t, "consumer-first", consumer, depEnv(), append(args, "--exit-when-idle", "2s")...)
	if code := p.Wait(90 * time.Second); code != 0 {
		t.Fatalf("first consumer run exited %d", code)
	}

	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var (
		mu   sync.Mutex
		msgs []notifyMsg
	)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, notifyMsg{time.Now(), string(buf[:n])})
			mu.Unlock()
		}
	}()
	count := func(prefix string, after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range msgs {
			if m.at.After(after) && hasLine(m.text, prefix) {
				n++
			}
		}
		return n
	}
	first := func(prefix string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if hasLine(m.text, prefix) {
				return m.at, true
			}
		}
		return time.Time{}, false
	}
	waitFor := func(what string, timeout time.Duration, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !ok() {
			if time.Now().After(deadline) || p.Exited() {
				mu.Lock()
				var got []string
				for _, m := range msgs {
					got = append(got, m.text)
				}
				mu.Unlock()
				t.Fatalf("no %s within %v; notifications so far: %q\nconsumer log:\n%s", what, timeout, got, tail(p.Logs(), 3000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	const watchdog = 2 * time.Second // pings expected every second (half)
	p = depStart(t, "consumer", consumer, depEnv("NOTIFY_SOCKET="+sock,
		"WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10)), args...)
	waitFor("READY=1", 60*time.Second, func() bool { _, ok := first("READY=1"); return ok })
	ready, _ := first("READY=1")
	waitFor("3 WATCHDOG=1 after READY=1", 10*time.Second, func() bool { return count("WATCHDOG=1", ready) >= 3 })
	sigterm := time.Now()
	p.Signal(syscall.SIGTERM)
	code := p.Wait(60 * time.Second)
	if code != 0 {
		t.Errorf("consumer exited %d after SIGTERM, want 0", code)
	}

	mu.Lock()
	all := append([]notifyMsg(nil), msgs...)
	mu.Unlock()
	var seq []string
	for _, m := range all {
		for _, l := range strings.Split(strings.TrimSpace(m.text), "\n") {
			if k, _, _ := strings.Cut(l, "="); k != "STATUS" {
				seq = append(seq, l)
			}
		}
	}
	t.Logf("notifications: %s", strings.Join(compress(seq), " "))
	if n := count("READY=1", time.Time{}); n != 1 {
		t.Errorf("READY=1 sent %d times, want once", n)
	}
	stopping, ok := first("STOPPING=1")
	switch {
	case !ok:
		t.Errorf("no STOPPING=1 after SIGTERM")
	case stopping.Before(sigterm) || stopping.Before(ready):
		t.Errorf("STOPPING=1 at %v, before SIGTERM (%v) or READY=1 (%v)", stopping, sigterm, ready)
	}
	// Between READY and SIGTERM the loop pings about every watchdog/2.
	between := count("WATCHDOG=1", ready) - count("WATCHDOG=1", sigterm)
	if span := sigterm.Sub(ready); between < int(span/watchdog) {
		t.Errorf("%d WATCHDOG=1 in the %v between READY=1 and SIGTERM, want one per %v at least", between, span, watchdog/2)
	}

	// READY=1 comes only after every partition was recovered: each
	// "partition recovered" log line is stamped before READY=1 arrived.
	logs := p.Logs()
	recovered := 0
	for _, line := range strings.Split(logs, "\n") {
		var l struct {
			Msg  string `json:"msg"`
			TS   string `json:"ts"`
			From string `json:"from"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "partition recovered" {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, l.TS)
		if err != nil {
			t.Fatalf("log time %q: %v", l.TS, err)
		}
		if ts.After(ready) {
			t.Errorf("partition recovered at %v, after READY=1 (%v)", ts, ready)
		}
		if l.From == "empty" {
			t.Errorf("partition recovered from empty state; want a snapshot of the first run")
		}
		recovered++
	}
	if recovered != 3 {
		t.Errorf("%d \"partition recovered\" lines, want 3 (one per partition) before READY=1", recovered)
	}
	if !strings.Contains(logs, "systemd watchdog enabled") {
		t.Errorf("the consumer did not log that the watchdog is enabled")
	}

	// Output still exactly-once after both runs.
	got := depReadOutput(t, []kgo.Opt{kgo.SeedBrokers(b.Addr)}, "sd-out", exp.Valid, 30*time.Second)
	depCheckOutput(t, got, exp)

	// The exit codes the unit's Restart=on-failure and
	// RestartPreventExitStatus=2 are aligned with.
	if r := depRun(t, 30*time.Second, consumer, depEnv(), append(args, "--commit-interval", "0s")...); r.Code != 2 {
		t.Errorf("bad settings: exit %d, want 2\n%s", r.Code, tail(r.Stderr, 1000))
	}
	fail := depConsumerArgs(b.Addr, t.TempDir(), "sd-in", "sd-out-fail", "sd-dlq-fail", "sd-fail")
	if r := depRun(t, 60*time.Second, consumer, depEnv(), append(fail, "--restart-strategy", "none", "--fail-at-record", "1")...); r.Code != 3 {
		t.Errorf("FAILED job: exit %d, want 3\n%s", r.Code, tail(r.Stderr+r.Stdout, 2000))
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func hasLine(text, prefix string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// compress turns runs of the same item into "item×n".
func compress(seq []string) []string {
	var out []string
	for i := 0; i < len(seq); {
		j := i
		for j < len(seq) && seq[j] == seq[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, seq[i]+"×"+strconv.Itoa(j-i))
		} else {
			out = append(out, seq[i])
		}
		i = j
	}
	return out
}
