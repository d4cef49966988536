package kconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Authentication and TLS failures are configuration errors: retrying them
// cannot succeed and only hammers the brokers. Brokers report a rejected
// SASL login either with SASL_AUTHENTICATION_FAILED (Apache Kafka, Redpanda;
// franz-go does not retry it) or by closing the connection (Kafka's
// handshake v0 path, kfake), which franz-go sees as EOF and retries forever.
// authGuard turns the second form into the first: it watches SASLAuthenticate
// responses, and once rejectLimit of them in a row were lost to a closed
// connection, every further login attempt fails at once with an *AuthError,
// a non-retryable error that names authentication.

// rejectLimit is how many SASLAuthenticate exchanges in a row may end in a
// closed connection before logins stop (more than one, so that a broker
// restarting in the middle of a login is not mistaken for a rejection).
const rejectLimit = 2

// AuthError reports a SASL login the brokers rejected.
type AuthError struct {
	Mechanism string
	User      string
	Cause     error // what the client saw, when not the rejection itself
}

func (e *AuthError) Error() string {
	how := "the broker closed the connection during authentication"
	if errors.Is(e.Cause, kerr.SaslAuthenticationFailed) {
		how = "the broker rejected the login"
	}
	msg := fmt.Sprintf("SASL authentication failed (mechanism %s, user %q): %s; check the user name, the password and the mechanism", e.Mechanism, e.User, how)
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap makes errors.Is(err, kerr.SaslAuthenticationFailed) true (a
// non-retryable Kafka error, like the one real brokers send).
func (e *AuthError) Unwrap() []error {
	if e.Cause != nil {
		return []error{kerr.SaslAuthenticationFailed, e.Cause}
	}
	return []error{kerr.SaslAuthenticationFailed}
}

type authGuard struct {
	mechanism, user string
	rejected        atomic.Int32 // SASLAuthenticate reads that failed since the last completed login
	attempts        atomic.Int64 // login attempts that reached the broker
}

func (g *authGuard) err(cause error) error {
	return &AuthError{Mechanism: g.mechanism, User: g.user, Cause: cause}
}

// OnBrokerRead implements kgo.HookBrokerRead.
func (g *authGuard) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != int16(kmsg.SASLAuthenticate) {
		return
	}
	switch {
	case err == nil:
		// a step of the exchange went through; a completed login resets
		// the count (guardedSession)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, kgo.ErrClientClosed), errors.Is(err, net.ErrClosed), isTimeout(err):
		// our side gave up: says nothing about the credentials
	default:
		g.rejected.Add(1)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type guardedMechanism struct {
	sasl.Mechanism
	g *authGuard
}

func (m guardedMechanism) Authenticate(ctx context.Context, host string) (sasl.Session, []byte, error) {
	if m.g.rejected.Load() >= rejectLimit {
		return nil, nil, m.g.err(nil)
	}
	m.g.attempts.Add(1)
	s, first, err := m.Mechanism.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	return guardedSession{s, m.g}, first, nil
}

// guardedSession resets the rejection count when a login completes.
type guardedSession struct {
	sasl.Session
	g *authGuard
}

func (s guardedSession) Challenge(resp []byte) (bool, []byte, error) {
	done, next, err := s.Session.Challenge(resp)
	if done && err == nil {
		s.g.rejected.Store(0)
	}
	return done, next, err
}

// Explain returns err, turned into an *AuthError (which names the
// mechanism and the user) when the broker rejected this configuration's
// SASL login: with SASL_AUTHENTICATION_FAILED, or by closing the connection
// during authentication since the last successful login (a request that
// failed with EOF says nothing useful on its own).
func (c *Config) Explain(err error) error {
	if err == nil || c.guard == nil {
		return err
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, kerr.SaslAuthenticationFailed) {
		return c.guard.err(err)
	}
	if IsAuthError(err) {
		return err
	}
	if c.guard.rejected.Load() > 0 {
		return c.guard.err(err)
	}
	return err
}

// IsAuthError reports whether err is an authentication, authorization or
// TLS failure: a configuration problem no retry can fix.
func IsAuthError(err error) bool {
	if err == nil {
		return false
	}
	for _, k := range []error{
		kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
		kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.TransactionalIDAuthorizationFailed,
	} {
		if errors.Is(err, k) {
			return true
		}
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		op        *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify), errors.As(err, &header):
		return true
	case errors.As(err, &op) && op.Op == "remote error":
		// a TLS alert from the broker, e.g. it rejected our client certificate
		return true
	}
	return false
}
