# txstream build, test and demo entry points. Everything a fresh machine
# needs is installed by these targets (and .ci/run), nothing by hand.

GO       ?= go
BIN      := bin
PKG      := github.com/txstream/txstream
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Static binaries: no cgo, so they run FROM scratch and on any Linux.
export CGO_ENABLED := 0
export TESTCONTAINERS_RYUK_DISABLED := true

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
CMDS := consumer producer devbroker demo

.PHONY: all build test test-unit test-integration test-race demo bench bench-checkpoint lint fmt image clean

all: build

build: $(addprefix $(BIN)/,$(CMDS))

$(BIN)/%: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

# The README's test command: unit tests, then end-to-end tests against real
# processes (dev broker, producer, consumer; kill -9 included).
test: build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 22m ./...

test-unit:
	$(GO) test -count=1 -short ./...

test-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 -short ./...

test-integration: build
	$(GO) test -count=1 -timeout 22m -v ./test/integration/

demo: build
	$(BIN)/demo

# Every benchmark (producer, consumer end to end, checkpoints, and the
# Kafka Streams peer beside txstream on real Kafka, which Java and Maven
# need, else it is skipped); raw output in docs/bench-out/. Results are
# copied into docs/BENCHMARKS.md by hand.
bench: build
	@mkdir -p docs/bench-out
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 3 -timeout 150m ./test/integration/ | tee docs/bench-out/bench.txt

bench-checkpoint: build
	$(GO) test -run '^$$' -bench Checkpoint -benchtime 1x -count 3 -timeout 60m ./test/integration/

# Container image FROM scratch with the static binaries (deploy/Dockerfile).
IMAGE ?= txstream:latest
image: $(BIN)/consumer $(BIN)/producer $(BIN)/devbroker
	deploy/image.sh $(BIN) $(IMAGE)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) .demo docs/bench-out

# A real Apache Kafka broker (one KRaft node, broker and controller, on
# 127.0.0.1) in .kafka/, from the jars test/kafka/kafka.sh fetches with
# Maven into ~/.cache/txstream/kafka. Prints the bootstrap address; data
# and server.log stay in .kafka/ across restarts (rm -rf .kafka for a new
# cluster). KAFKA_VERSION=3.9.2 for the pre-KIP-890 transaction protocol
# (a new .kafka/), KAFKA_PORT=9092 for a fixed port.
KAFKA_DIR     ?= .kafka
KAFKA_PORT    ?= 0
KAFKA_VERSION ?=
KAFKA_SH      := $(if $(KAFKA_VERSION),TXSTREAM_KAFKA_VERSION=$(KAFKA_VERSION) )test/kafka/kafka.sh

.PHONY: kafka kafka-stop

kafka:
	@$(KAFKA_SH) start $(KAFKA_DIR) $(KAFKA_PORT)

kafka-stop:
	@$(KAFKA_SH) stop $(KAFKA_DIR)

# Broker faults on a three-node Apache Kafka cluster (test/kafkatest
# StartCluster): input-leader, output-leader and transaction-coordinator
# kills, a rolling restart, the consumer cut off from its group
# coordinator (network namespace) and a broker's disk filling up (a loop
# file system); the last two need root. Under load, on Kafka 4.x and 3.9
# (transactions v1), each checked exactly once record by record; then the
# cluster helper's own test. ~13 min on 2 cores; not in make test.
.PHONY: test-faults

test-faults: build
	TXSTREAM_FAULT_TESTS=1 $(GO) test -count=1 -timeout 40m -run 'TestBrokerFaults' -v ./test/integration/
	TXSTREAM_FAULT_TESTS=1 $(GO) test -count=1 -timeout 15m -run 'TestCluster' -v ./test/kafkatest/
