package integration

// The container image and compose file, with Testcontainers: the image is
// built locally (deploy/image.sh, as `make image` does: FROM scratch, no
// registry), a broker container and the producer and consumer containers
// run on their own network. The consumer is killed (docker kill) mid-run
// and started again on the same volume, then disconnected from the network
// and reconnected; the output must still be exactly-once. A second part
// runs deploy/compose.yaml with docker compose.
//
// The broker is Apache Kafka from the image test/kafka/image.sh builds here
// (a Debian root file system made with debootstrap, openjdk-17 and the
// broker jars from Maven; no registry), built or found up to date once per
// test binary. Where that image cannot be built (no debootstrap, no Debian
// mirror, no jars), the test says why in one line and uses the devbroker
// (kfake) of the txstream image instead.
//
// The suite skips when no Docker engine is reachable. When one is, any
// failure to run fails the test (in CI too).
//
// Environment:
//
//	KAFKA_IMAGE           a broker image to use instead, for machines that
//	                      can pull images: a Confluent Kafka image (e.g.
//	                      confluentinc/confluent-local:7.5.0, testcontainers'
//	                      kafka module) or Redpanda (an image name containing
//	                      "redpanda", e.g. docker.redpanda.com/redpandadata/redpanda:v24.2.4)
//	TXSTREAM_TEST_BROKER  kfake: the devbroker container; kafka: the Apache
//	                      Kafka image, and a failure to build it fails the test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mnetwork "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/kafka"
	"github.com/testcontainers/testcontainers-go/modules/redpanda"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/txstream/txstream/synth"
	"github.com/txstream/txstream/test/kafkatest"
)

// brokerEndpoint is a broker reachable from containers on the network
// (Internal) and from the test process (Host options).
type brokerEndpoint struct {
	Internal string
	Host     []kgo.Opt
	Kind     string
}

func TestContainers(t *testing.T) {
	bins := buildBinaries(t)
	t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	ctx := context.Background()
	docker := dockerOrSkip(t, ctx)
	needTool(t, "docker", "docker.io") // deploy/image.sh builds with the docker CLI
	image := buildImage(t, bins)

	t.Run("kill-restart-disconnect", func(t *testing.T) {
		containersExactlyOnce(t, ctx, docker, image)
	})
	t.Run("compose", func(t *testing.T) {
		composeUp(t, ctx, docker, image, bins)
	})
}

// dockerOrSkip returns a client of a reachable Docker engine, or skips.
func dockerOrSkip(t *testing.T, ctx context.Context) *testcontainers.DockerClient {
	t.Helper()
	var (
		cli *testcontainers.DockerClient
		err error
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%v", r)
			}
		}()
		cli, err = testcontainers.NewDockerClientWithOpts(ctx)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err = cli.Ping(pctx, client.PingOptions{})
		}
	}()
	if err != nil {
		t.Skipf("no Docker engine reachable (%v): the container tests need one (DOCKER_HOST or /var/run/docker.sock)", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// buildImage builds the image the way `make image` does, from the test's
// static binaries, under a tag of its own; it is removed afterwards.
func buildImage(t *testing.T, bins *Binaries) string {
	t.Helper()
	for _, b := range []string{"consumer", "producer", "devbroker"} {
		bins.Path(b)
	}
	tag := "txstream-it:" + randomName(4)
	start := time.Now()
	cmd := exec.Command(bins.RepoPath("deploy/image.sh"), bins.Dir, tag)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/image.sh: %v\n%s", err, out)
	}
	t.Logf("built image %s in %v", tag, time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		_ = exec.Command("docker", "image", "rm", "--force", tag).Run()
	})
	return tag
}

func randomName(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startBrokerContainer starts the broker on nw under the alias "broker".
func startBrokerContainer(t *testing.T, ctx context.Context, image string, nw *testcontainers.DockerNetwork) brokerEndpoint {
	t.Helper()
	switch img := os.Getenv("KAFKA_IMAGE"); {
	case img == "":
		if os.Getenv("TXSTREAM_TEST_BROKER") == brokerKfake {
			t.Logf("broker: devbroker (kfake), as TXSTREAM_TEST_BROKER=kfake asks")
			break
		}
		kimg, err := apacheKafkaImage(t)
		if err == nil {
			return startApacheKafkaContainer(t, ctx, kimg, nw)
		}
		if os.Getenv("TXSTREAM_TEST_BROKER") == brokerKafka {
			t.Fatalf("TXSTREAM_TEST_BROKER=kafka, but the Apache Kafka image cannot be built: %v", err)
		}
		t.Logf("broker: devbroker (kfake) instead of Apache Kafka: the Kafka image cannot be built here: %v", err)
	case strings.Contains(img, "redpanda"):
		c, err := redpanda.Run(ctx, img, network.WithNetwork([]string{"broker"}, nw),
			redpanda.WithListener("broker:29092"), redpanda.WithAutoCreateTopics())
		testcontainers.CleanupContainer(t, c)
		if err != nil {
			t.Fatalf("redpanda %s: %v", img, err)
		}
		seed, err := c.KafkaSeedBroker(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return brokerEndpoint{Internal: "broker:29092", Host: []kgo.Opt{kgo.SeedBrokers(seed)}, Kind: "Redpanda " + img}
	default:
		// The BROKER listener advertises the container's host name:
		// make it the network alias.
		c, err := kafka.Run(ctx, img, kafka.WithClusterID("txstream-it"), network.WithNetwork([]string{"broker"}, nw),
			testcontainers.WithConfigModifier(func(cfg *container.Config) { cfg.Hostname = "broker" }))
		testcontainers.CleanupContainer(t, c)
		if err != nil {
			t.Fatalf("kafka %s: %v", img, err)
		}
		seeds, err := c.Brokers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return brokerEndpoint{Internal: "broker:9092", Host: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Kind: "Apache Kafka " + img}
	}

	// The image's devbroker advertises broker:9092, the alias on the
	// network; the test process reaches it through the mapped port.
	c, err := testcontainers.Run(ctx, image,
		testcontainers.WithEntrypoint("/usr/local/bin/txstream-devbroker"),
		testcontainers.WithCmd("--addr", "0.0.0.0:9092", "--advertise", "broker:9092",
			"--partitions", "3", "--data-dir", "/var/lib/txstream/broker"),
		testcontainers.WithExposedPorts("9092/tcp"),
		network.WithNetwork([]string{"broker"}, nw),
		testcontainers.WithWaitStrategy(wait.ForLog("broker ready").WithStartupTimeout(60*time.Second)),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("devbroker container: %v", err)
	}
	return brokerEndpoint{Internal: "broker:9092", Host: hostOpts(t, ctx, c, "9092/tcp", "broker:9092"), Kind: "devbroker (kfake) in " + image}
}

var (
	kafkaImageOnce sync.Once
	kafkaImageTag  string
	kafkaImageErr  error
)

// apacheKafkaImage builds the Apache Kafka image with test/kafka/image.sh
// (or finds it up to date), once per test binary: a first build makes a
// Debian root file system with debootstrap (a few minutes), later ones
// take seconds.
func apacheKafkaImage(t *testing.T) (string, error) {
	t.Helper()
	bins := buildBinaries(t)
	kafkaImageOnce.Do(func() {
		if ok, why := kafkatest.Available(); !ok {
			kafkaImageErr = fmt.Errorf("no Kafka jars: %s", why)
			return
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", bins.RepoPath("test/kafka/image.sh"), "build", kafkatest.Version())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			kafkaImageErr = fmt.Errorf("test/kafka/image.sh: %v: %s", err, strings.TrimSpace(tail(stderr.String(), 1500)))
			return
		}
		kafkaImageTag = strings.TrimSpace(string(out))
		t.Logf("Apache Kafka image %s ready in %v (%s)", kafkaImageTag, time.Since(start).Round(100*time.Millisecond),
			strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", "; "))
	})
	return kafkaImageTag, kafkaImageErr
}

// startApacheKafkaContainer runs the image of test/kafka/image.sh on nw
// under the alias "broker" with two client listeners: BROKER, advertised
// as broker:9092 for the containers on the network, and HOST, advertised
// as 127.0.0.1:P and published on the same port P of the Docker host, for
// the test process (and any Kafka client on the host).
func startApacheKafkaContainer(t *testing.T, ctx context.Context, image string, nw *testcontainers.DockerNetwork) brokerEndpoint {
	t.Helper()
	hostPort := freePort(t)
	port, err := mnetwork.ParsePort(hostPort + "/tcp")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	c, err := testcontainers.Run(ctx, image,
		testcontainers.WithEnv(map[string]string{
			"KAFKA_LISTENERS":            "BROKER://:9092,HOST://:" + hostPort + ",CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS": "BROKER://broker:9092,HOST://127.0.0.1:" + hostPort,
			"KAFKA_NUM_PARTITIONS":       "3",
		}),
		testcontainers.WithExposedPorts(hostPort+"/tcp"),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = mnetwork.PortMap{port: []mnetwork.PortBinding{{HostPort: hostPort}}}
		}),
		network.WithNetwork([]string{"broker"}, nw),
		testcontainers.WithWaitStrategy(wait.ForLog("Kafka Server started").WithStartupTimeout(150*time.Second)),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		if c != nil {
			t.Logf("Kafka container log (tail):\n%s", tail(containerLogs(ctx, c), 4000))
		}
		t.Fatalf("Apache Kafka container %s: %v", image, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Kafka container log (tail):\n%s", tail(containerLogs(ctx, c), 4000))
		}
	})
	t.Logf("Apache Kafka container started in %v", time.Since(started).Round(100*time.Millisecond))
	return brokerEndpoint{Internal: "broker:9092", Host: hostOpts(t, ctx, c, hostPort+"/tcp", "127.0.0.1:"+hostPort),
		Kind: "Apache Kafka in " + image}
}

// hostOpts connects the test process to a broker container whose
// advertised address (advertised) only resolves inside the network: every
// dial of it goes to an address reachable from here instead, the first of
// the mapped port on the Docker host testcontainers reports, the mapped
// port on loopback (a test running in a container next to the engine,
// where testcontainers guesses the gateway) and the container's own IP.
func hostOpts(t *testing.T, ctx context.Context, c testcontainers.Container, port, advertised string) []kgo.Opt {
	t.Helper()
	p, err := c.MappedPort(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	var candidates []string
	if host, err := c.Host(ctx); err == nil {
		candidates = append(candidates, net.JoinHostPort(host, p.Port()))
	}
	candidates = append(candidates, net.JoinHostPort("127.0.0.1", p.Port()))
	if ip, err := c.ContainerIP(ctx); err == nil && ip != "" {
		_, inner, _ := net.SplitHostPort(advertised)
		candidates = append(candidates, net.JoinHostPort(ip, inner))
	}
	for _, a := range candidates {
		if conn, err := net.DialTimeout("tcp", a, 2*time.Second); err == nil {
			conn.Close()
			return mappedOpts(a, advertised)
		}
	}
	t.Fatalf("the broker container is not reachable from the test at any of %v", candidates)
	return nil
}

func mappedOpts(reachable, advertised string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(reachable),
		kgo.Dialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == advertised {
				addr = reachable
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}),
	}
}

func containersExactlyOnce(t *testing.T, ctx context.Context, docker *testcontainers.DockerClient, image string) {
	start := time.Now()
	nw, err := network.New(ctx)
	if err != nil {
		t.Fatalf("creating a network: %v", err)
	}
	testcontainers.CleanupNetwork(t, nw)
	brk := startBrokerContainer(t, ctx, image, nw)
	t.Logf("broker: %s (%s inside the network)", brk.Kind, brk.Internal)

	csv, exp := depGenerate(t, t.TempDir(), synth.Config{Rows: 20000, Accounts: 200, ZipfS: 1.1, Seed: 21,
		BadFraction: 0.005, DupFraction: 0.01, Epoch: synth.DefaultEpoch, Interval: time.Second})
	createTopicsOpts(t, brk.Host, 3, "transactions", "transactions-out", "transactions-dlq")

	volume := "txstream-it-state-" + randomName(4)
	cons, err := testcontainers.Run(ctx, image,
		testcontainers.WithEnv(map[string]string{
			"TXSTREAM_BROKERS":                 brk.Internal,
			"TXSTREAM_INSTANCE_ID":             "consumer-0",
			"TXSTREAM_COMMIT_INTERVAL":         "200ms",
			"TXSTREAM_CHECKPOINT_INTERVAL":     "1s",
			"TXSTREAM_SESSION_TIMEOUT":         "10s",
			"TXSTREAM_RESTART_STRATEGY":        "exponential-delay",
			"TXSTREAM_RESTART_INITIAL_BACKOFF": "200ms",
			"TXSTREAM_RESTART_MAX_BACKOFF":     "2s",
		}),
		testcontainers.WithMounts(testcontainers.VolumeMount(volume, "/var/lib/txstream")),
		network.WithNetwork([]string{"consumer"}, nw),
	)
	testcontainers.CleanupContainer(t, cons, testcontainers.RemoveVolumes(volume))
	if err != nil {
		t.Fatalf("consumer container: %v", err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("consumer container log (tail):\n%s", tail(containerLogs(ctx, cons), 4000))
		}
	}()

	// The producer publishes at a bounded rate (about 20 s of input) so
	// that the consumer is killed and cut off while input is still
	// arriving.
	prod, err := testcontainers.Run(ctx, image,
		testcontainers.WithEntrypoint("/usr/local/bin/txstream-producer"),
		testcontainers.WithCmd("--file", "/feed/transactions.csv", "--rate", "1000"),
		testcontainers.WithEnv(map[string]string{"TXSTREAM_BROKERS": brk.Internal, "TXSTREAM_COMPRESSION": "zstd"}),
		testcontainers.WithFiles(testcontainers.ContainerFile{HostFilePath: csv, ContainerFilePath: "/feed/transactions.csv", FileMode: 0o644}),
		network.WithNetwork([]string{"producer"}, nw),
	)
	testcontainers.CleanupContainer(t, prod)
	if err != nil {
		t.Fatalf("producer container: %v", err)
	}

	out := newDepTail(t, brk.Host, "transactions-out")
	defer out.Close()

	// 1. docker kill mid-run, then start the same container again: same
	// volume, same transactional id (fences the killed one's transaction).
	out.Until(t, exp.Valid/5, 60*time.Second)
	if _, err := docker.ContainerKill(ctx, cons.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatalf("docker kill: %v", err)
	}
	t.Logf("killed the consumer at %d output records", out.Records())
	waitStopped(t, ctx, cons)
	if err := cons.Start(ctx); err != nil {
		t.Fatalf("starting the consumer again: %v", err)
	}

	// 2. Cut the consumer off the network, then reconnect it.
	out.Until(t, exp.Valid/2, 60*time.Second)
	if _, err := docker.NetworkDisconnect(ctx, nw.ID, client.NetworkDisconnectOptions{Container: cons.GetContainerID(), Force: true}); err != nil {
		t.Fatalf("docker network disconnect: %v", err)
	}
	producing := false
	if st, err := prod.State(ctx); err == nil {
		producing = st.Running
	}
	t.Logf("disconnected the consumer at %d output records (producer still sending: %v)", out.Records(), producing)
	if out.Records() >= exp.Valid {
		t.Errorf("all %d output records had arrived before the disconnect: it interrupted no work", out.Records())
	}
	// Longer than the session timeout: the group drops the member, its
	// open transaction cannot commit, and the consumer has to rejoin.
	time.Sleep(12 * time.Second)
	if _, err := docker.NetworkConnect(ctx, nw.ID, client.NetworkConnectOptions{Container: cons.GetContainerID(),
		EndpointConfig: &mnetwork.EndpointSettings{Aliases: []string{"consumer"}}}); err != nil {
		t.Fatalf("docker network connect: %v", err)
	}
	t.Logf("reconnected the consumer")

	// 3. Everything arrives, exactly once.
	if code := waitExit(t, ctx, prod, 120*time.Second); code != 0 {
		t.Fatalf("producer container exited %d\n%s", code, tail(containerLogs(ctx, prod), 3000))
	}
	out.Until(t, exp.Valid, 120*time.Second)
	out.Settle(t, 30*time.Second)
	depCheckOutput(t, out.out, exp)

	// 4. SIGTERM drains and exits 0 (docker stop).
	stopTimeout := 60 * time.Second
	if err := cons.Stop(ctx, &stopTimeout); err != nil {
		t.Fatalf("docker stop: %v", err)
	}
	st, err := cons.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs := containerLogs(ctx, cons)
	t.Logf("consumer: exit code %d after docker stop; %d partition recoveries, %d in-process restarts; %v in all",
		st.ExitCode, strings.Count(logs, `"partition recovered"`), strings.Count(logs, "-> RESTARTING"), time.Since(start).Round(time.Second))
	if st.ExitCode != 0 {
		t.Errorf("consumer exit code %d after SIGTERM, want 0 (drained)", st.ExitCode)
	}
	if !strings.Contains(logs, `"state":"CANCELED"`) {
		t.Errorf("consumer log does not show the drain on SIGTERM")
	}
}

func createTopicsOpts(t *testing.T, opts []kgo.Opt, n int32, topics ...string) {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resps, err := kadm.NewClient(cl).CreateTopics(ctx, n, 1, nil, topics...)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatalf("creating %v: %v", topics, err)
	}
}

func containerLogs(ctx context.Context, c testcontainers.Container) string {
	r, err := c.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func waitStopped(t *testing.T, ctx context.Context, c testcontainers.Container) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := c.State(ctx); err == nil && !st.Running {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container still running 30s after docker kill")
}

func waitExit(t *testing.T, ctx context.Context, c testcontainers.Container, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running && st.Status != "created" {
			return st.ExitCode
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("container did not exit within %v\n%s", timeout, tail(containerLogs(ctx, c), 3000))
	return -1
}

// depTail reads a topic read_committed as it grows.
type depTail struct {
	cl  *kgo.Client
	out *depOutput
}

func newDepTail(t testing.TB, opts []kgo.Opt, topic string) *depTail {
	t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		t.Fatal(err)
	}
	return &depTail{cl: cl, out: newDepOutput()}
}

func (d *depTail) Close()       { d.cl.Close() }
func (d *depTail) Records() int { return d.out.Records }

func (d *depTail) poll(t testing.TB) int {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	fs := d.cl.PollFetches(ctx)
	n := 0
	fs.EachRecord(func(r *kgo.Record) { d.out.add(r.Value); n++ })
	fs.EachError(func(tp string, p int32, err error) {
		if !errorsIsContext(err) {
			t.Logf("reading %s/%d: %v", tp, p, err)
		}
	})
	return n
}

// Until polls until at least n records were read.
func (d *depTail) Until(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for d.out.Records < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d output records after %v, waiting for %d", d.out.Records, timeout, n)
		}
		d.poll(t)
	}
}

// Settle polls until nothing new arrived for a second.
func (d *depTail) Settle(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	quiet := time.Now()
	for time.Now().Before(deadline) {
		if d.poll(t) > 0 {
			quiet = time.Now()
		} else if time.Since(quiet) > time.Second {
			return
		}
	}
}

// composeCommand returns how to run Docker Compose here: the plugin
// (docker compose) or the v1 binary (docker-compose).
func composeCommand() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	return nil
}

// composeUp runs deploy/compose.yaml as a user would (with the test's
// image), on the repository's sample data, and checks the result.
func composeUp(t *testing.T, ctx context.Context, docker *testcontainers.DockerClient, image string, bins *Binaries) {
	compose := composeCommand()
	if compose == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("neither docker compose nor docker-compose is installed")
		}
		t.Skip("neither docker compose nor docker-compose is installed")
	}
	project := "txstreamit" + randomName(3)
	file := bins.RepoPath("deploy/compose.yaml")
	port := freePort(t)
	run := func(timeout time.Duration, args ...string) string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(cctx, compose[0], append(append(compose[1:], "-p", project, "-f", file), args...)...)
		cmd.Env = depEnv("TXSTREAM_IMAGE="+image, "TXSTREAM_HTTP_PORT="+port)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", strings.Join(compose, " "), strings.Join(args, " "), err, tail(string(out), 3000))
		}
		return string(out)
	}
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			cmd := exec.Command(compose[0], append(append(compose[1:], "-p", project, "-f", file), "logs", "--no-color", "--tail", "40")...)
			cmd.Env = depEnv("TXSTREAM_IMAGE="+image, "TXSTREAM_HTTP_PORT="+port)
			out, _ := cmd.CombinedOutput()
			t.Logf("compose logs:\n%s", tail(string(out), 6000))
		}
		cmd := exec.Command(compose[0], append(append(compose[1:], "-p", project, "-f", file), "down", "-v", "--remove-orphans", "--timeout", "30")...)
		cmd.Env = depEnv("TXSTREAM_IMAGE="+image, "TXSTREAM_HTTP_PORT="+port)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	run(120*time.Second, "up", "-d")

	// The broker is reachable from here at its container address.
	id := strings.TrimSpace(run(30*time.Second, "ps", "-q", "broker"))
	res, err := docker.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspecting the broker container: %v", err)
	}
	var ip string
	for _, ep := range res.Container.NetworkSettings.Networks {
		if ep != nil && ep.IPAddress.IsValid() {
			ip = ep.IPAddress.String()
		}
	}
	if ip == "" {
		t.Fatalf("broker container has no IP address")
	}
	exp, err := synth.ExpectedFile(bins.RepoPath("testdata/transactions.csv"))
	if err != nil {
		t.Fatal(err)
	}
	out := newDepTail(t, mappedOpts(net.JoinHostPort(ip, "9092"), "broker:9092"), "transactions-out")
	defer out.Close()
	out.Until(t, exp.Valid, 120*time.Second)
	out.Settle(t, 30*time.Second)
	depCheckOutput(t, out.out, exp)

	// The consumer's status API on the published port.
	resp, err := http.Get("http://127.0.0.1:" + port + "/api/v1/job")
	if err != nil {
		t.Fatalf("status API: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"state":"RUNNING"`) {
		t.Errorf("GET /api/v1/job: %s %s", resp.Status, tail(string(body), 500))
	}

	// docker compose stop: SIGTERM, drain, exit 0.
	run(120*time.Second, "stop")
	cid := strings.TrimSpace(run(30*time.Second, "ps", "-q", "consumer"))
	ci, err := docker.ContainerInspect(ctx, cid, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := ci.Container.State; st == nil || st.Running || st.ExitCode != 0 {
		t.Errorf("consumer after compose stop: %+v, want exited with 0", st)
	}
	t.Logf("compose: %d transactions exactly once from testdata/transactions.csv in %v", exp.Valid, time.Since(start).Round(time.Second))
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
