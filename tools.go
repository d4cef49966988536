//go:build tools

// Package tools pins dependencies that are not yet imported by code so that
// `go mod tidy` keeps them; remove entries as packages start importing them.
package tools

import (
	_ "github.com/cockroachdb/apd/v3"
	_ "github.com/cockroachdb/pebble/v2"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/testcontainers/testcontainers-go"
	_ "github.com/twmb/franz-go/pkg/kadm"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "github.com/twmb/franz-go/pkg/sasl/scram"
	_ "github.com/twmb/franz-go/plugin/kprom"
	_ "github.com/twmb/franz-go/plugin/kzap"
	_ "go.uber.org/zap"
	_ "golang.org/x/term"
	_ "gopkg.in/yaml.v3"
)
