package kconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

func TestIsAuthError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{errors.New("listing topics: unable to dial: dial tcp 127.0.0.1:9092: connect: connection refused"), false},
		{kerr.NotLeaderForPartition, false},
		{fmt.Errorf("listing topics: %w", kerr.SaslAuthenticationFailed), true},
		{&kgo.ErrGroupSession{Err: kerr.GroupAuthorizationFailed}, true},
		{kerr.TransactionalIDAuthorizationFailed, true},
		{&AuthError{Mechanism: "PLAIN", User: "u"}, true},
		{fmt.Errorf("unable to dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{x509.HostnameError{Host: "kafka"}, true},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
	} {
		if got := IsAuthError(tc.err); got != tc.want {
			t.Errorf("IsAuthError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestAuthGuard(t *testing.T) {
	c := Config{Brokers: "127.0.0.1:9092", SASLMechanism: "plain", SASLUser: "alice", SASLPassword: "pw"}
	if _, err := c.Opts(); err != nil {
		t.Fatal(err)
	}
	g := c.guard
	mech := guardedMechanism{plain.Auth{User: "alice", Pass: "pw"}.AsMechanism(), g}
	auth := int16(kmsg.SASLAuthenticate)
	ctx := context.Background()

	// Explain leaves errors alone until a login was rejected.
	if err := c.Explain(io.EOF); err != io.EOF {
		t.Fatalf("Explain before any rejection = %v", err)
	}
	// Other requests and our own cancellations do not count.
	g.OnBrokerRead(kgo.BrokerMetadata{}, int16(kmsg.Metadata), 0, 0, 0, io.EOF)
	g.OnBrokerRead(kgo.BrokerMetadata{}, auth, 0, 0, 0, context.Canceled)
	g.OnBrokerRead(kgo.BrokerMetadata{}, auth, 0, 0, 0, io.EOF) // the broker closed the connection
	if _, _, err := mech.Authenticate(ctx, "b:9092"); err != nil {
		t.Fatalf("one rejection must not stop logins: %v", err)
	}
	err := c.Explain(fmt.Errorf("no broker answered: %w", io.EOF))
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, io.EOF) || !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("Explain after a rejection = %v", err)
	}

	// A completed login resets the count.
	s, _, err := mech.Authenticate(ctx, "b:9092")
	if err != nil {
		t.Fatal(err)
	}
	if done, _, err := s.Challenge(nil); !done || err != nil {
		t.Fatalf("PLAIN challenge: done=%v err=%v", done, err)
	}
	if n := g.rejected.Load(); n != 0 {
		t.Fatalf("rejections after a completed login = %d", n)
	}

	// rejectLimit rejections in a row stop further logins with an AuthError.
	for range rejectLimit {
		g.OnBrokerRead(kgo.BrokerMetadata{}, auth, 0, 0, 0, io.ErrUnexpectedEOF)
	}
	_, _, err = mech.Authenticate(ctx, "b:9092")
	if !errors.As(err, &ae) || !IsAuthError(err) || kerr.IsRetriable(err) {
		t.Fatalf("Authenticate after %d rejections = %v, want a non-retryable AuthError", rejectLimit, err)
	}
	if ae.User != "alice" || ae.Mechanism != "PLAIN" {
		t.Fatalf("AuthError = %+v", ae)
	}
}

// A broker that answers SASL_AUTHENTICATION_FAILED (Apache Kafka) gets the
// same explanation as one that closes the connection, with its own words.
func TestExplainBrokerRejection(t *testing.T) {
	c := Config{Brokers: "127.0.0.1:9092", SASLMechanism: "SCRAM-SHA-256", SASLUser: "bob", SASLPassword: "pw"}
	if _, err := c.Opts(); err != nil {
		t.Fatal(err)
	}
	cause := fmt.Errorf("%w: Authentication failed: Invalid username or password", kerr.SaslAuthenticationFailed)
	err := c.Explain(cause)
	var ae *AuthError
	if !errors.As(err, &ae) || !errors.Is(err, kerr.SaslAuthenticationFailed) || !IsAuthError(err) {
		t.Fatalf("Explain(%v) = %v, want an AuthError", cause, err)
	}
	msg := err.Error()
	for _, want := range []string{"SASL authentication failed", "SCRAM-SHA-256", `"bob"`, "the broker rejected the login", "Invalid username or password"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "pw") {
		t.Errorf("message %q shows the password", msg)
	}
	if again := c.Explain(err); again != err {
		t.Errorf("Explain of an AuthError = %v, want it unchanged", again)
	}
}
