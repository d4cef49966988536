package integration

// Apache Kafka with a SASL_SSL listener, for the TLS and SASL tests: the
// devbroker flags --tls-cert, --tls-key and --sasl-users-file become a
// second listener on Kafka (the PLAINTEXT one stays for the test's own
// admin client and for inter-broker traffic): a PEM key store made from the
// certificate and key, PLAIN users in the listener's JAAS configuration,
// SCRAM users created with AlterUserScramCredentials once the broker runs.

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/test/kafkatest"
)

// kafkaSecurity is what the devbroker's TLS and SASL flags ask for.
type kafkaSecurity struct {
	cert, key, users string
}

func (s kafkaSecurity) on() bool { return s.cert != "" || s.users != "" }

// saslUser is one line of a devbroker users file: MECHANISM:user:password.
type saslUser struct{ mech, user, pass string }

func readSASLUsers(t testing.TB, path string) []saslUser {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var us []saslUser
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || strings.ContainsAny(parts[2], `"\`) {
			t.Fatalf("%s: want MECHANISM:user:password without quotes or backslashes, got a line of %d fields", path, len(parts))
		}
		us = append(us, saslUser{strings.ToUpper(parts[0]), parts[1], parts[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return us
}

// pemKeyStore writes Kafka's PEM key store: the key in PKCS#8 (what Kafka
// reads), then the certificate chain.
func pemKeyStore(t testing.TB, certFile, keyFile, out string) {
	t.Helper()
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		t.Fatalf("%s: no PEM block", keyFile)
	}
	var key any
	switch blk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		t.Fatalf("%s: %v", keyFile, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), certPEM...)
	if err := os.WriteFile(out, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startKafkaSecure starts Kafka with a PLAINTEXT listener and a SASL_SSL
// one (SSL when there are no users) and returns the broker with Addr on the
// secure listener.
func startKafkaSecure(t testing.TB, opts kafkatest.Options, sec kafkaSecurity) *Broker {
	t.Helper()
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	plain, ctrl, secure := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	for plain == ctrl || secure == ctrl || secure == plain {
		ctrl, secure = freeLoopbackPort(t), freeLoopbackPort(t)
	}
	// kafka.sh keeps a directory's controller port across starts.
	if err := os.WriteFile(filepath.Join(opts.Dir, "controller-port"), []byte(strconv.Itoa(ctrl)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proto := "SSL"
	var users []saslUser
	if sec.users != "" {
		proto = "SASL_SSL"
		users = readSASLUsers(t, sec.users)
	}
	lname := strings.ToLower(proto)
	props := map[string]string{
		"listeners":                                         fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,%s://127.0.0.1:%d", plain, ctrl, proto, secure),
		"advertised.listeners":                              fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,%s://127.0.0.1:%d", plain, proto, secure),
		"listener.security.protocol.map":                    "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL",
		"listener.name." + lname + ".ssl.keystore.type":     "PEM",
		"listener.name." + lname + ".ssl.keystore.location": filepath.Join(opts.Dir, "keystore.pem"),
	}
	pemKeyStore(t, sec.cert, sec.key, filepath.Join(opts.Dir, "keystore.pem"))
	if proto == "SASL_SSL" {
		var plainUsers strings.Builder
		mechs := map[string]bool{"PLAIN": true}
		for _, u := range users {
			mechs[u.mech] = true
			if u.mech == "PLAIN" {
				fmt.Fprintf(&plainUsers, ` user_%s="%s"`, u.user, u.pass)
			}
		}
		var enabled []string
		for _, m := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
			if mechs[m] {
				enabled = append(enabled, m)
			}
		}
		props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] = strings.Join(enabled, ",")
		props["listener.name.sasl_ssl.plain.sasl.jaas.config"] =
			"org.apache.kafka.common.security.plain.PlainLoginModule required" + plainUsers.String() + ";"
		for _, m := range []string{"scram-sha-256", "scram-sha-512"} {
			props["listener.name.sasl_ssl."+m+".sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
		}
	}
	for k, v := range opts.Props {
		props[k] = v
	}
	opts.Port, opts.Props = plain, props
	k := kafkatest.Start(t, opts)

	// SCRAM credentials live in the cluster metadata: create them over the
	// PLAINTEXT listener, and wait until the broker has them.
	var upserts []kadm.UpsertSCRAM
	for _, u := range users {
		var m kadm.ScramMechanism
		switch u.mech {
		case "SCRAM-SHA-256":
			m = kadm.ScramSha256
		case "SCRAM-SHA-512":
			m = kadm.ScramSha512
		default:
			continue
		}
		upserts = append(upserts, kadm.UpsertSCRAM{User: u.user, Mechanism: m, Iterations: 4096, Password: u.pass})
	}
	if len(upserts) > 0 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := adm.AlterUserSCRAMs(ctx, nil, upserts)
		if err == nil {
			err = res.Error()
		}
		if err != nil {
			t.Fatalf("creating SCRAM users: %v", err)
		}
		for {
			d, err := adm.DescribeUserSCRAMs(ctx)
			if err == nil && len(d) >= len(upserts) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("SCRAM users not visible within a minute: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", secure)
	t.Logf("Kafka %s: %s listener at %s (PLAINTEXT at %s)", k.Version, proto, addr, k.Addr)
	return &Broker{t: t, Kind: brokerKafka, DataDir: k.Dir, Addr: addr, kafka: k}
}

// AuthFailures counts the logins the broker has rejected so far, from its
// log.
func (b *Broker) AuthFailures() int {
	if b.Kind == brokerKafka {
		return strings.Count(b.Logs(), "Failed authentication with")
	}
	return strings.Count(b.Logs(), "request unable to be handled")
}
