// Package kconn owns how txstream binaries connect to Kafka: seed brokers,
// TLS and SASL. It turns settings into franz-go client options and keeps
// secrets out of logs and status output.
package kconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Config is the connection part of a binary's settings.
type Config struct {
	Brokers string // comma-separated host:port list

	TLS                   bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	TLSInsecureSkipVerify bool

	SASLMechanism    string // "", PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	SASLUser         string
	SASLPasswordFile string
	// SASLPassword comes only from the environment (TXSTREAM_SASL_PASSWORD)
	// or the password file, never from a flag, so it never shows up in
	// `ps`, shell history or logged command lines.
	SASLPassword string

	guard *authGuard // set by Opts when SASL is on
}

// PasswordEnv is the environment variable holding the SASL password.
const PasswordEnv = "TXSTREAM_SASL_PASSWORD"

// RegisterFlags adds the connection flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma-separated host:port")
	fs.BoolVar(&c.TLS, "tls", false, "connect to the brokers with TLS")
	fs.StringVar(&c.TLSCAFile, "tls-ca", "", "PEM file with the CA certificates that sign the brokers' certificates (default: system roots)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "PEM client private key for mutual TLS (with --tls-cert)")
	fs.StringVar(&c.TLSServerName, "tls-server-name", "", "expected server name in the brokers' certificates (default: the broker host)")
	fs.BoolVar(&c.TLSInsecureSkipVerify, "tls-insecure-skip-verify", false, "DANGEROUS: do not verify the brokers' certificates (testing only)")
	fs.StringVar(&c.SASLMechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&c.SASLUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&c.SASLPasswordFile, "sasl-password-file", "", "file holding the SASL password (or set "+PasswordEnv+"; never pass it as a flag)")
}

// SeedBrokers returns the broker list.
func (c *Config) SeedBrokers() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Validate checks the settings without touching the network or files.
func (c *Config) Validate() error {
	if len(c.SeedBrokers()) == 0 {
		return errors.New("--brokers: no broker given")
	}
	for _, b := range c.SeedBrokers() {
		if !strings.Contains(b, ":") {
			return fmt.Errorf("--brokers: %q has no port (want host:port)", b)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if !c.TLS && (c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSInsecureSkipVerify) {
		return errors.New("TLS options given without --tls")
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
		if c.SASLUser != "" {
			return errors.New("--sasl-user given without --sasl-mechanism")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASLUser == "" {
			return fmt.Errorf("--sasl-mechanism %s needs --sasl-user", c.SASLMechanism)
		}
	default:
		return fmt.Errorf("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	return nil
}

// Opts returns the franz-go options for these settings. It reads the TLS
// files and the password (file or environment) now, so that a bad path is
// reported at start-up rather than at the first connection.
func (c *Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.SeedBrokers()...)}
	if c.TLS {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := strings.ToUpper(c.SASLMechanism); m != "" {
		pass, err := c.password()
		if err != nil {
			return nil, err
		}
		var mech sasl.Mechanism
		switch m {
		case "PLAIN":
			mech = plain.Auth{User: c.SASLUser, Pass: pass}.AsMechanism()
		case "SCRAM-SHA-256":
			mech = scram.Auth{User: c.SASLUser, Pass: pass}.AsSha256Mechanism()
		case "SCRAM-SHA-512":
			mech = scram.Auth{User: c.SASLUser, Pass: pass}.AsSha512Mechanism()
		}
		g := &authGuard{mechanism: m, user: c.SASLUser}
		c.guard = g
		opts = append(opts, kgo.SASL(guardedMechanism{mech, g}), kgo.WithHooks(g))
	}
	return opts, nil
}

func (c *Config) password() (string, error) {
	if c.SASLPassword != "" {
		return c.SASLPassword, nil
	}
	if c.SASLPasswordFile != "" {
		b, err := os.ReadFile(c.SASLPasswordFile)
		if err != nil {
			return "", fmt.Errorf("reading --sasl-password-file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if p, ok := os.LookupEnv(PasswordEnv); ok {
		return p, nil
	}
	return "", fmt.Errorf("SASL needs a password: set %s or --sasl-password-file", PasswordEnv)
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // explicit opt-in flag
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate found", c.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Redacted describes the connection for logs and the status API: no
// password, only whether one is set.
func (c *Config) Redacted() map[string]any {
	m := map[string]any{"brokers": c.SeedBrokers(), "tls": c.TLS}
	if c.SASLMechanism != "" {
		m["sasl_mechanism"] = strings.ToUpper(c.SASLMechanism)
		m["sasl_user"] = c.SASLUser
		m["sasl_password"] = "[redacted]"
	}
	if c.TLSInsecureSkipVerify {
		m["tls_insecure_skip_verify"] = true
	}
	return m
}
