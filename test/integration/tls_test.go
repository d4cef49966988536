package integration

// TLS and SASL, for real: a CA, a server and a client certificate are made
// here with crypto/x509 (nothing is committed), the broker serves TLS
// with SASL users (on Kafka a SASL_SSL listener, see kafka_tls_test.go),
// and the producer and consumer connect with --tls --tls-ca and each SASL
// mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), the password coming
// from the environment or from a file.
//
// The bottom of this file holds helpers shared by the deployment tests
// (systemd_test.go, containers_test.go, kcat_test.go): child processes,
// synthetic input with its expected result, and an exactly-once check of
// the output topic.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/kconn"
	"github.com/txstream/txstream/synth"
)

func TestTLSSASL(t *testing.T) {
	bins := buildBinaries(t)
	consumer, producer := bins.Path("consumer"), bins.Path("producer")
	dir := t.TempDir()
	pki := depMakePKI(t, dir)

	users := map[string][2]string{ // mechanism -> user, password
		"PLAIN":         {"alice", depSecret("plain")},
		"SCRAM-SHA-256": {"bob", depSecret("s256")},
		"SCRAM-SHA-512": {"carol", depSecret("s512")},
	}
	mechs := []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
	var uf strings.Builder
	for _, m := range mechs {
		fmt.Fprintf(&uf, "%s:%s:%s\n", m, users[m][0], users[m][1])
	}
	usersFile := filepath.Join(dir, "users")
	depWrite(t, usersFile, uf.String(), 0o600)
	b := startBroker(t, "", "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey,
		"--sasl-users-file", usersFile, "--log-level", "debug")

	csv, exp := depGenerate(t, dir, synth.Config{Rows: 2000, Accounts: 15, ZipfS: 1.1, Seed: 11,
		BadFraction: 0.01, DupFraction: 0.01, Epoch: synth.DefaultEpoch, Interval: time.Second})

	tlsArgs := []string{"--brokers", b.Addr, "--tls", "--tls-ca", pki.CA}
	// saslArgs returns the flags and environment for mechanism m, with the
	// password in a file or in TXSTREAM_SASL_PASSWORD.
	saslArgs := func(m, pass string, fromFile bool) ([]string, []string) {
		args := []string{"--sasl-mechanism", m, "--sasl-user", users[m][0]}
		if fromFile {
			f := filepath.Join(t.TempDir(), "password")
			depWrite(t, f, pass+"\n", 0o600)
			return append(args, "--sasl-password-file", f), nil
		}
		return args, []string{kconn.PasswordEnv + "=" + pass}
	}
	reader := func(t *testing.T) []kgo.Opt {
		c := kconn.Config{Brokers: b.Addr, TLS: true, TLSCAFile: pki.CA,
			SASLMechanism: "PLAIN", SASLUser: users["PLAIN"][0], SASLPassword: users["PLAIN"][1]}
		opts, err := c.Opts()
		if err != nil {
			t.Fatal(err)
		}
		return opts
	}
	secrets := func() []string {
		var s []string
		for _, u := range users {
			s = append(s, u[1])
		}
		return s
	}

	for i, m := range mechs {
		t.Run("exactly-once/"+m, func(t *testing.T) {
			name := strings.ToLower(strings.ReplaceAll(m, "-", ""))
			in, out, dlq := "tls-in-"+name, "tls-out-"+name, "tls-dlq-"+name
			// The producer and the consumer take the password from
			// different sources, alternating per mechanism.
			fromFile := i%2 == 0
			pargs, penv := saslArgs(m, users[m][1], !fromFile)
			args := append([]string{"--file", csv, "--topic", in, "--create-topic-partitions", "3",
				"--progress", "off", "--log-format", "json"}, tlsArgs...)
			res := depRun(t, 60*time.Second, producer, depEnv(penv...), append(args, pargs...)...)
			if res.Code != 0 {
				t.Fatalf("producer exited %d\n%s", res.Code, tail(res.Stderr, 3000))
			}
			depNoSecrets(t, "producer output", res.Stdout+res.Stderr, secrets())

			cdir := t.TempDir()
			cargs, cenv := saslArgs(m, users[m][1], fromFile)
			args = append(depConsumerArgs(b.Addr, cdir, in, out, dlq, "tls-"+name), tlsArgs[2:]...)
			args = append(args, cargs...)
			if m == "SCRAM-SHA-512" {
				// mutual TLS: the client presents its certificate
				args = append(args, "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey)
			}
			addrFile := filepath.Join(cdir, "http-addr")
			args = append(args, "--exit-when-idle", "2s", "--http", "127.0.0.1:0")
			p := depStart(t, "consumer", consumer, depEnv(append(cenv, "TXSTREAM_HTTP_ADDR_FILE="+addrFile)...), args...)
			depCheckStatusRedacted(t, addrFile, p, secrets())
			if code := p.Wait(90 * time.Second); code != 0 {
				t.Fatalf("consumer exited %d\n%s", code, tail(p.Logs(), 4000))
			}
			logs := p.Logs()
			depNoSecrets(t, "consumer log", logs, secrets())
			if !strings.Contains(logs, `"sasl_password":"[redacted]"`) {
				t.Errorf("consumer log does not show the password as [redacted]")
			}
			got := depReadOutput(t, reader(t), out, exp.Valid, 60*time.Second)
			depCheckOutput(t, got, exp)
		})
	}

	// authFailures counts the logins the broker rejected so far.
	authFailures := b.AuthFailures

	t.Run("wrong-password", func(t *testing.T) {
		for _, m := range mechs {
			for _, createTopics := range []string{"true", "false"} {
				if createTopics == "false" && m != "PLAIN" {
					continue
				}
				before := authFailures()
				cdir := t.TempDir()
				wrong := depSecret("wrong")
				args := append(depConsumerArgs(b.Addr, cdir, "tls-in-plain", "tls-out-wrong", "tls-dlq-wrong", "tls-wrong"), tlsArgs[2:]...)
				args = append(args, "--sasl-mechanism", m, "--sasl-user", users[m][0], "--create-topics="+createTopics)
				start := time.Now()
				p := depStart(t, "consumer", consumer, depEnv(kconn.PasswordEnv+"="+wrong), args...)
				code := p.Wait(60 * time.Second)
				took := time.Since(start)
				logs := p.Logs()
				rejected := authFailures() - before
				t.Logf("%s (create-topics=%s): exit %d after %v, %d logins rejected by the broker", m, createTopics, code, took.Round(time.Millisecond), rejected)
				if code != 3 {
					t.Errorf("%s: exit code %d, want 3 (FAILED)\n%s", m, code, tail(logs, 3000))
				}
				if took > 20*time.Second {
					t.Errorf("%s: took %v to give up, want a fast failure", m, took)
				}
				if !strings.Contains(logs, "SASL authentication failed") {
					t.Errorf("%s: log does not name the authentication failure\n%s", m, tail(logs, 3000))
				}
				if rejected < 1 || rejected > 6 {
					t.Errorf("%s: broker rejected %d logins, want between 1 and 6 (no retry storm)", m, rejected)
				}
				if strings.Contains(logs, "RESTARTING") {
					t.Errorf("%s: the job restarted on an authentication failure; want FAILED at once", m)
				}
				depNoSecrets(t, "consumer log", logs, append(secrets(), wrong))
			}
		}

		before := authFailures()
		start := time.Now()
		res := depRun(t, 60*time.Second, producer, depEnv(kconn.PasswordEnv+"=not-it"),
			append([]string{"--file", csv, "--topic", "tls-in-wrong", "--progress", "off", "--log-format", "json",
				"--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "bob"}, tlsArgs...)...)
		t.Logf("producer: exit %d after %v, %d logins rejected", res.Code, time.Since(start).Round(time.Millisecond), authFailures()-before)
		if res.Code == 0 || !strings.Contains(res.Stderr, "SASL authentication failed") || time.Since(start) > 20*time.Second {
			t.Errorf("producer with a wrong password: exit %d after %v, want a fast non-zero exit naming authentication\n%s",
				res.Code, time.Since(start), tail(res.Stderr, 2000))
		}
		depNoSecrets(t, "producer output", res.Stderr, []string{"not-it"})
	})

	t.Run("untrusted-certificate", func(t *testing.T) {
		// The broker's certificate is signed by pki.CA; trusting only
		// another CA must fail the TLS handshake.
		sasl := []string{"--sasl-mechanism", "PLAIN", "--sasl-user", "alice"}
		env := depEnv(kconn.PasswordEnv + "=" + users["PLAIN"][1])
		cdir := t.TempDir()
		args := append(depConsumerArgs(b.Addr, cdir, "tls-in-plain", "tls-out-x", "tls-dlq-x", "tls-untrusted"),
			append([]string{"--tls", "--tls-ca", pki.OtherCA}, sasl...)...)
		start := time.Now()
		p := depStart(t, "consumer", consumer, env, args...)
		code := p.Wait(60 * time.Second)
		logs := p.Logs()
		t.Logf("consumer: exit %d after %v", code, time.Since(start).Round(time.Millisecond))
		if code != 3 || time.Since(start) > 20*time.Second {
			t.Errorf("consumer: exit %d after %v, want 3 (FAILED) at once", code, time.Since(start))
		}
		if !strings.Contains(logs, "x509: certificate signed by unknown authority") {
			t.Errorf("consumer log does not name the TLS verification failure\n%s", tail(logs, 3000))
		}
		res := depRun(t, 60*time.Second, producer, env,
			append([]string{"--file", csv, "--topic", "tls-in-x", "--progress", "off", "--log-format", "json",
				"--brokers", b.Addr, "--tls", "--tls-ca", pki.OtherCA}, sasl...)...)
		if res.Code == 0 || !strings.Contains(res.Stderr, "x509: certificate signed by unknown authority") {
			t.Errorf("producer: exit %d, want non-zero naming the TLS verification failure\n%s", res.Code, tail(res.Stderr, 2000))
		}
	})
}

// depCheckStatusRedacted reads GET /api/v1/job of a running consumer and
// checks that no secret appears in it. The consumer writes its HTTP
// address to addrFile once it listens.
func depCheckStatusRedacted(t *testing.T, addrFile string, p *depProc, secrets []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var addr string
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			addr = strings.TrimSpace(string(b))
			break
		}
		if p.Exited() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if addr == "" {
		t.Logf("status API check skipped: the consumer did not report an HTTP address (TXSTREAM_HTTP_ADDR_FILE)")
		return
	}
	resp, err := http.Get("http://" + addr + "/api/v1/job")
	if err != nil {
		t.Logf("status API check skipped: %v", err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Logf("status API check skipped: /api/v1/job answers 404")
		return
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/v1/job: %s\n%s", resp.Status, body)
		return
	}
	depNoSecrets(t, "GET /api/v1/job", string(body), secrets)
	if !strings.Contains(string(body), "[redacted]") {
		t.Errorf("GET /api/v1/job does not show the SASL password as [redacted]: %s", tail(string(body), 1500))
	}
}

func depNoSecrets(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%q...)", what, s[:min(len(s), 6)])
		}
	}
}

func depSecret(prefix string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// depPKI is a test CA with a server certificate (localhost, 127.0.0.1 and
// any extra host names), a client certificate and an unrelated CA.
type depPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey, OtherCA string
}

func depMakePKI(t *testing.T, dir string, hosts ...string) depPKI {
	t.Helper()
	serial := int64(1)
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writeKey := func(path string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		depWrite(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), 0o600)
	}
	sign := func(tmpl, parent *x509.Certificate, pub, priv any, path string) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		depWrite(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	newCA := func(name, path string) (*x509.Certificate, *ecdsa.PrivateKey) {
		k := newKey()
		c := sign(&x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, nil, &k.PublicKey, k, path)
		return c, k
	}
	p := depPKI{
		CA: filepath.Join(dir, "ca.pem"), OtherCA: filepath.Join(dir, "other-ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client.key"),
	}
	ca, caKey := newCA("txstream test CA", p.CA)
	newCA("unrelated test CA", p.OtherCA)

	sk := newKey()
	srv := &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: append([]string{"localhost"}, hosts...), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	sign(srv, ca, &sk.PublicKey, caKey, p.ServerCert)
	writeKey(p.ServerKey, sk)

	ck := newKey()
	cli := &x509.Certificate{Subject: pkix.Name{CommonName: "txstream"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	sign(cli, ca, &ck.PublicKey, caKey, p.ClientCert)
	writeKey(p.ClientKey, ck)
	return p
}

// ---- helpers shared by the deployment tests --------------------------

func depWrite(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// depEnv is the test's environment without txstream settings or systemd
// variables (a developer's own must not leak into the processes under
// test), plus extra KEY=value entries.
func depEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TXSTREAM_") || strings.HasPrefix(k, "DEVBROKER_") ||
			k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// depRun runs a command to completion with the given environment.
func depRun(t testing.TB, timeout time.Duration, bin string, env []string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v\n%s", filepath.Base(bin), timeout, tail(errb.String(), 3000))
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", filepath.Base(bin), err)
		}
		code = ee.ExitCode()
	}
	return runResult{Code: code, Stdout: out.String(), Stderr: errb.String()}
}

// depProc is a process running in the background, stdout and stderr in
// one log file.
type depProc struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	code    int
}

func depStart(t testing.TB, name, bin string, env []string, args ...string) *depProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &depProc{t: t, name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, tail(p.Logs(), 3000))
		}
	})
	return p
}

func (p *depProc) Pid() int { return p.cmd.Process.Pid }

func (p *depProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *depProc) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Wait returns the exit code; a process still running after timeout is
// killed and the test fails.
func (p *depProc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("%s did not exit within %v; killed\n%s", p.name, timeout, tail(p.Logs(), 3000))
		return -1
	}
}

func (p *depProc) Logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// depConsumerArgs are the consumer flags every deployment test uses:
// short intervals, JSON logs, state in dir, HTTP off.
func depConsumerArgs(brokers, dir, topic, out, dlq, group string) []string {
	return []string{
		"--brokers", brokers, "--topic", topic, "--output-topic", out, "--dlq-topic", dlq,
		"--group", group, "--instance-id", group + "-0",
		"--data-dir", filepath.Join(dir, "data"), "--checkpoint-dir", filepath.Join(dir, "checkpoints"),
		"--commit-interval", "200ms", "--checkpoint-interval", "1s",
		"--log-format", "json", "--http", "",
	}
}

// depGenerate writes a synthetic CSV (with header) into dir and returns
// its path and what a correct consumer computes from it (synth.Expected,
// the independent oracle).
func depGenerate(t testing.TB, dir string, cfg synth.Config) (string, *synth.Result) {
	t.Helper()
	path := filepath.Join(dir, "transactions.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Generate(cfg, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	exp, err := synth.ExpectedFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Conflicts != 0 {
		t.Fatalf("generated data has %d conflicting transaction ids", exp.Conflicts)
	}
	return path, exp
}

// depOutput is what the output topic holds.
type depOutput struct {
	Records  int
	ByID     map[string]int
	Count    map[string]int64
	Total    map[string]*apd.Decimal
	Partials int // records that did not parse
}

var depSum = apd.BaseContext.WithPrecision(200)

func (o *depOutput) add(value []byte) {
	var r struct {
		TransactionID string `json:"transaction_id"`
		AccountID     string `json:"account_id"`
		Amount        string `json:"amount"`
	}
	o.Records++
	if err := json.Unmarshal(value, &r); err != nil || r.TransactionID == "" {
		o.Partials++
		return
	}
	o.ByID[r.TransactionID]++
	d, _, err := apd.NewFromString(strings.TrimSpace(r.Amount))
	if err != nil {
		o.Partials++
		return
	}
	key := r.AccountID
	if key == "" {
		key = r.TransactionID
	}
	if o.Total[key] == nil {
		o.Total[key] = new(apd.Decimal)
	}
	if _, err := depSum.Add(o.Total[key], o.Total[key], d); err != nil {
		o.Partials++
	}
	o.Count[key]++
}

func newDepOutput() *depOutput {
	return &depOutput{ByID: map[string]int{}, Count: map[string]int64{}, Total: map[string]*apd.Decimal{}}
}

// depReadOutput reads topic from the start with read_committed until want
// records arrived and then nothing more for a second (so that extra
// duplicates would be seen), or until timeout.
func depReadOutput(t testing.TB, opts []kgo.Opt, topic string, want int, timeout time.Duration) *depOutput {
	t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := newDepOutput()
	deadline := time.Now().Add(timeout)
	var quietSince time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out.add(r.Value); n++ })
		fs.EachError(func(tp string, p int32, err error) {
			if !errorsIsContext(err) {
				t.Logf("reading %s/%d: %v", tp, p, err)
			}
		})
		switch {
		case n > 0 || out.Records < want:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = time.Now()
		case time.Since(quietSince) > time.Second:
			return out
		}
	}
	t.Logf("reading %s: %d records after %v (want %d)", topic, out.Records, timeout, want)
	return out
}

func errorsIsContext(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// depCheckOutput compares the output with the oracle: every valid unique
// transaction exactly once, and per-account counts and exact totals.
func depCheckOutput(t testing.TB, got *depOutput, exp *synth.Result) {
	t.Helper()
	var dups []string
	for id, n := range got.ByID {
		if n != 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", id, n))
		}
	}
	sort.Strings(dups)
	if len(dups) > 0 {
		t.Errorf("%d transactions in the output more than once (not exactly-once): %s", len(dups), strings.Join(dups[:min(len(dups), 10)], " "))
	}
	if got.Partials > 0 {
		t.Errorf("%d output records did not parse", got.Partials)
	}
	if len(got.ByID) != exp.Valid {
		t.Errorf("output has %d distinct transactions in %d records, want %d", len(got.ByID), got.Records, exp.Valid)
	}
	bad := 0
	for key, a := range exp.Accounts {
		tot := got.Total[key]
		if tot == nil {
			tot = new(apd.Decimal)
		}
		if got.Count[key] != a.Count || tot.Cmp(&a.Total) != 0 {
			bad++
			if bad <= 5 {
				t.Errorf("account %s: %d transactions totalling %s, want %d totalling %s", key, got.Count[key], tot, a.Count, &a.Total)
			}
		}
	}
	for key := range got.Count {
		if exp.Accounts[key] == nil {
			t.Errorf("output has account %s, which the input does not", key)
		}
	}
	if bad > 5 {
		t.Errorf("... %d accounts differ in all", bad)
	}
	if !t.Failed() {
		t.Logf("output: %d records, %d transactions exactly once, %d accounts with the expected counts and totals", got.Records, len(got.ByID), len(exp.Accounts))
	}
}
