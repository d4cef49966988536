package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ClusterOptions configure a cluster. The zero value is three nodes with
// the script's defaults in a temporary directory.
type ClusterOptions struct {
	// Dir holds one directory per node (node-1, node-2, ...); "" =
	// t.TempDir(). A Dir that held a cluster before is started with its
	// data, ports and size.
	Dir string
	// Nodes is the number of nodes (each broker and controller); 0 = 3.
	Nodes int
	// Version is the Kafka version; "" = Version().
	Version string
	// Partitions of auto-created topics and of Topics; 0 = 1.
	Partitions int
	// Topics are created once the cluster is healthy (Partitions each,
	// replication factor min(Nodes, 3)).
	Topics []string
	// Hosts are the nodes' listen (and advertised) addresses, one per
	// node; nil = 127.0.0.1, 127.0.0.2, ... (every 127/8 address is
	// loopback on Linux). Addresses of an interface a test set up (a veth
	// into a network namespace) let a client in that namespace reach the
	// cluster. A Dir that held a cluster keeps its addresses.
	Hosts []string
	// Props override every node's server.properties entries.
	Props map[string]string
	// StartTimeout bounds each node's start; 0 = 2 minutes.
	StartTimeout time.Duration
	// HealthTimeout bounds each wait for a healthy cluster (WaitHealthy
	// after the start and after Restart); 0 = 2 minutes.
	HealthTimeout time.Duration
}

// Cluster is a KRaft cluster of combined broker+controller nodes, node i
// (0-based; node.id i+1) on its own loopback address 127.0.0.<i+1> (or
// ClusterOptions.Hosts[i]). Every
// topic, the internal ones included, is replicated on min(Nodes, 3) brokers
// with min.insync.replicas one less (3 nodes: RF 3, min ISR 2), so the
// cluster keeps serving acks=all writes and transactions with one node down.
//
//	c := kafkatest.StartCluster(t, kafkatest.ClusterOptions{Topics: []string{"in"}, Partitions: 3})
//	c.Bootstrap()                    // "127.0.0.1:p1,127.0.0.2:p2,127.0.0.3:p3"
//	i := c.LeaderOf("in", 0)         // node index; also TxnCoordinatorOf, GroupCoordinatorOf
//	c.Kill(i); c.Restart(i)          // SIGKILL; start again and wait until healthy
//	c.Stop(i); c.Restart(i)          // SIGTERM (controlled shutdown); the same
//
// Nodes are killed when the test ends (and when the test binary dies).
type Cluster struct {
	Addrs   []string // node i's host:port
	Dir     string
	Version string
	Nodes   []*Broker

	t    testing.TB
	opts ClusterOptions

	admOnce sync.Once
	admCl   *kgo.Client
	adm     *kadm.Client
}

// StartCluster starts every node, waits until each serves and the cluster
// is healthy (WaitHealthy; the internal offsets and transaction state
// topics are created first, so that they are ready too), creates Topics,
// and waits again. It skips the test (one line) where real Kafka cannot
// run, and fails it when the cluster does not start.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if ok, why := AvailableVersion(opts.Version); !ok {
		t.Skipf("real Kafka not available: %s", why)
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.HealthTimeout == 0 {
		opts.HealthTimeout = 2 * time.Minute
	}
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: abs, Version: opts.Version, t: t, opts: opts}
	if c.Version == "" {
		c.Version = Version()
	}
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.Kill()
		}
		if c.admCl != nil {
			c.admCl.Close()
		}
		if t.Failed() {
			for i, n := range c.Nodes {
				t.Logf("kafka node %d server.log (last 3000 bytes):\n%s", i, tail(n.Logs(), 3000))
			}
		}
	})

	began := time.Now()
	if err := c.init(false); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		err := c.startAll()
		if err == nil {
			break
		}
		for _, n := range c.Nodes {
			n.Kill()
		}
		// Ports are picked by the script: a port taken meanwhile means
		// other ports for every node (the controllers' are in the voters).
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			t.Fatalf("Kafka cluster did not start: %v", err)
		}
		t.Logf("Kafka cluster: a port was taken (attempt %d); retrying with other ports", attempt)
		if err := c.init(true); err != nil {
			t.Fatal(err)
		}
	}
	serving := time.Since(began)
	// The internal topics are created on first use; create them now, so
	// that the health check covers them and a test does not wait for them.
	ctx, cancel := context.WithTimeout(context.Background(), opts.HealthTimeout)
	defer cancel()
	for {
		g := c.admin().FindGroupCoordinators(ctx, "kafkatest-probe")
		x := c.admin().FindTxnCoordinators(ctx, "kafkatest-probe")
		if g.Ok() && x.Ok() {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Kafka cluster: no group or transaction coordinator within %v: %v %v", opts.HealthTimeout, g.Error(), x.Error())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.WaitHealthy(opts.HealthTimeout); err != nil {
		t.Fatal(err)
	}
	if len(opts.Topics) > 0 {
		if err := c.CreateTopics(opts.Partitions, opts.Topics...); err != nil {
			t.Fatalf("creating topics %v: %v", opts.Topics, err)
		}
		if err := c.WaitHealthy(opts.HealthTimeout); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Kafka %s cluster of %d nodes at %s: serving in %v, healthy in %v (dir %s)",
		c.Version, len(c.Nodes), c.Bootstrap(), serving.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), c.Dir)
	return c
}

// init asks the script for the nodes' identities (new ports with renew)
// and sets up Nodes and Addrs from them.
func (c *Cluster) init(renew bool) error {
	args := []string{Script(), "cluster-init", c.Dir, strconv.Itoa(c.opts.Nodes)}
	if renew {
		args = append(args, "--new-ports")
	}
	cmd := exec.Command("bash", args...)
	cmd.Env = append(os.Environ(), "TXSTREAM_KAFKA_VERSION="+c.Version, "TXSTREAM_KAFKA_HOSTS="+strings.Join(c.opts.Hosts, ","))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kafka.sh cluster-init: %v: %s", err, stderr.String())
	}
	dirs := strings.Fields(string(out))
	props := map[string]string{}
	if c.opts.Partitions > 0 {
		props["num.partitions"] = strconv.Itoa(c.opts.Partitions)
	}
	for k, v := range c.opts.Props {
		props[k] = v
	}
	c.Nodes, c.Addrs = nil, nil
	for _, d := range dirs {
		conf, err := os.ReadFile(filepath.Join(d, "node.conf"))
		if err != nil {
			return err
		}
		host := ""
		for _, l := range strings.Split(string(conf), "\n") {
			if v, ok := strings.CutPrefix(l, "HOST="); ok {
				host = v
			}
		}
		port, err := readInt(filepath.Join(d, "port"))
		if err != nil || host == "" {
			return fmt.Errorf("%s: no host or port (%v)", d, err)
		}
		b := &Broker{Dir: d, Version: c.Version, t: c.t, host: host, port: port,
			opts: Options{Dir: d, Port: port, Props: props, StartTimeout: c.opts.StartTimeout, Version: c.Version}}
		if data, err := os.ReadFile(filepath.Join(d, "version")); err == nil {
			b.Version = strings.TrimSpace(string(data))
		}
		b.Addr = b.hostname() + ":" + strconv.Itoa(port)
		c.Nodes = append(c.Nodes, b)
		c.Addrs = append(c.Addrs, b.Addr)
	}
	if len(c.Nodes) == 0 {
		return fmt.Errorf("kafka.sh cluster-init printed no node directories")
	}
	return nil
}

// startAll starts every node at once: a node serves only once a majority
// of the controllers runs, so one at a time would never finish.
func (c *Cluster) startAll() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			began := time.Now()
			if err := n.startOnce(n.port); err != nil {
				errs[i] = fmt.Errorf("node %d: %w", i, err)
				return
			}
			c.t.Logf("Kafka node %d (id %d) at %s serving after %v", i, i+1, n.Addr, time.Since(began).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Bootstrap is the comma-separated list of every node's address (for
// --brokers).
func (c *Cluster) Bootstrap() string { return strings.Join(c.Addrs, ",") }

// Kill sends SIGKILL to node i and waits until it is gone: a crash.
func (c *Cluster) Kill(i int) { c.Nodes[i].Kill() }

// Stop sends SIGTERM to node i (a controlled shutdown: its partition
// leaderships move first) and waits until it is gone.
func (c *Cluster) Stop(i int) { c.Nodes[i].Stop() }

// Running reports whether node i's process is up.
func (c *Cluster) Running(i int) bool { return c.Nodes[i].Running() }

// Restart starts node i again on the same address and data (killing it
// first if it runs) and waits until the cluster is healthy (WaitHealthy).
// After a kill the node serves only once the controller has expired its
// previous registration (broker.session.timeout.ms, 4 s in kafka.sh).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.Kill()
	began := time.Now()
	if err := n.startOnce(n.port); err != nil {
		c.t.Fatalf("Kafka node %d did not restart: %v", i, err)
	}
	serving := time.Since(began)
	if err := c.WaitHealthy(c.opts.HealthTimeout); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("Kafka node %d restarted at %s: serving in %v, cluster healthy in %v",
		i, n.Addr, serving.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}

// admin is a client of the whole cluster, for the cluster's own queries.
func (c *Cluster) admin() *kadm.Client {
	c.admOnce.Do(func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...), kgo.RetryTimeout(5*time.Second),
			kgo.DialTimeout(2*time.Second), kgo.RequestTimeoutOverhead(5*time.Second))
		if err != nil {
			c.t.Fatal(err)
		}
		c.admCl, c.adm = cl, kadm.NewClient(cl)
	})
	return c.adm
}

// Admin returns a kadm client of the cluster (seeded with every node),
// closed when the test ends.
func (c *Cluster) Admin() *kadm.Client { return c.admin() }

// Health describes the cluster: "" when every running node is a
// registered, unfenced broker and every partition of every topic (the
// internal ones included) has a leader and at least minISR replicas in
// sync (minISR 0: all of its replicas, i.e. nothing under-replicated),
// else what is missing.
func (c *Cluster) Health(ctx context.Context, minISR int) string {
	m, err := c.admin().Metadata(ctx)
	if err != nil {
		return "metadata: " + err.Error()
	}
	var why []string
	for i, n := range c.Nodes {
		if n.Running() && !nodeIDs(m.Brokers.NodeIDs()).has(int32(i+1)) {
			why = append(why, fmt.Sprintf("node %d is not a registered broker", i))
		}
	}
	for _, td := range m.Topics.Sorted() {
		if td.Err != nil {
			why = append(why, fmt.Sprintf("%s: %v", td.Topic, td.Err))
			continue
		}
		for _, p := range td.Partitions.Sorted() {
			want := minISR
			if want <= 0 || want > len(p.Replicas) {
				want = len(p.Replicas)
			}
			switch {
			case p.Err != nil:
				why = append(why, fmt.Sprintf("%s/%d: %v", p.Topic, p.Partition, p.Err))
			case p.Leader < 0:
				why = append(why, fmt.Sprintf("%s/%d: no leader", p.Topic, p.Partition))
			case len(p.ISR) < want:
				why = append(why, fmt.Sprintf("%s/%d: ISR %v of replicas %v", p.Topic, p.Partition, p.ISR, p.Replicas))
			}
		}
	}
	if len(why) > 3 {
		why = append(why[:3], fmt.Sprintf("and %d more", len(why)-3))
	}
	return strings.Join(why, "; ")
}

type nodeIDs []int32

func (s nodeIDs) has(id int32) bool {
	for _, x := range s {
		if x == id {
			return true
		}
	}
	return false
}

// WaitHealthy waits until Health(0) reports nothing: every running node
// is a broker again and no partition is under-replicated (so every one
// has ISR >= 2 and can lose another node), for timeout at most (0 = the
// cluster's HealthTimeout).
func (c *Cluster) WaitHealthy(timeout time.Duration) error { return c.WaitISR(0, timeout) }

// WaitISR waits until Health(minISR) reports nothing (minISR 0: all
// replicas in sync), for timeout at most (0 = the cluster's HealthTimeout).
func (c *Cluster) WaitISR(minISR int, timeout time.Duration) error {
	if timeout == 0 {
		timeout = c.opts.HealthTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	for {
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		last = c.Health(qctx, minISR)
		qcancel()
		if last == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the Kafka cluster is not healthy within %v: %s", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// CreateTopics creates topics with partitions each (0 = the cluster's
// num.partitions) and the cluster's default replication factor; existing
// topics are left as they are.
func (c *Cluster) CreateTopics(partitions int, topics ...string) error {
	return createTopics(c.admin(), partitions, -1, topics)
}

// NodeOf is the index of the node with Kafka node id id, or -1.
func (c *Cluster) NodeOf(id int32) int {
	if id < 1 || int(id) > len(c.Nodes) {
		return -1
	}
	return int(id) - 1
}

// LeaderOf returns the index of the node that leads topic's partition,
// waiting (up to 30 s) while it has no leader or its leader is a node that
// is not running. It fails the test if there is none.
func (c *Cluster) LeaderOf(topic string, partition int32) int {
	c.t.Helper()
	i, err := c.waitNode(func(ctx context.Context) (int32, error) {
		m, err := c.admin().Metadata(ctx, topic)
		if err != nil {
			return -1, err
		}
		td, ok := m.Topics[topic]
		if !ok || td.Err != nil {
			return -1, fmt.Errorf("topic %s: %v", topic, td.Err)
		}
		p, ok := td.Partitions[partition]
		if !ok || p.Err != nil {
			return -1, fmt.Errorf("partition %s/%d: %v", topic, partition, p.Err)
		}
		return p.Leader, nil
	})
	if err != nil {
		c.t.Fatalf("leader of %s/%d: %v", topic, partition, err)
	}
	return i
}

// TxnCoordinatorOf returns the index of the node that coordinates
// transactionalID's transactions (the leader of its __transaction_state
// partition), as LeaderOf does.
func (c *Cluster) TxnCoordinatorOf(transactionalID string) int {
	c.t.Helper()
	i, err := c.waitNode(func(ctx context.Context) (int32, error) {
		r := c.admin().FindTxnCoordinators(ctx, transactionalID)[transactionalID]
		return r.NodeID, r.Err
	})
	if err != nil {
		c.t.Fatalf("transaction coordinator of %s: %v", transactionalID, err)
	}
	return i
}

// GroupCoordinatorOf returns the index of the node that coordinates group,
// as LeaderOf does.
func (c *Cluster) GroupCoordinatorOf(group string) int {
	c.t.Helper()
	i, err := c.waitNode(func(ctx context.Context) (int32, error) {
		r := c.admin().FindGroupCoordinators(ctx, group)[group]
		return r.NodeID, r.Err
	})
	if err != nil {
		c.t.Fatalf("group coordinator of %s: %v", group, err)
	}
	return i
}

func (c *Cluster) waitNode(query func(context.Context) (int32, error)) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
		id, err := query(qctx)
		qcancel()
		if err == nil {
			if i := c.NodeOf(id); i >= 0 && c.Nodes[i].Running() {
				return i, nil
			}
			err = fmt.Errorf("node id %d is not a running node", id)
		}
		last = err
		select {
		case <-ctx.Done():
			return -1, last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Leaders maps each node index to the partitions it leads ("topic/p"),
// sorted, internal topics included: what a kill of that node disturbs.
func (c *Cluster) Leaders() map[int][]string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[int][]string{}
	m, err := c.admin().Metadata(ctx)
	if err != nil {
		return out
	}
	for _, td := range m.Topics {
		for _, p := range td.Partitions {
			if i := c.NodeOf(p.Leader); i >= 0 {
				out[i] = append(out[i], fmt.Sprintf("%s/%d", p.Topic, p.Partition))
			}
		}
	}
	for _, l := range out {
		sort.Strings(l)
	}
	return out
}
