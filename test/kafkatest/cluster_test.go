package kafkatest

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestCluster starts three nodes, checks the replication settings of the
// internal topics, and writes transactionally across a SIGKILL of the
// partition leader and of the transaction coordinator, and across a
// controlled shutdown. It starts three JVMs, so it runs with the fault
// tests only (TXSTREAM_FAULT_TESTS=1, make test-faults).
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three JVMs: skipped with -short")
	}
	if os.Getenv("TXSTREAM_FAULT_TESTS") != "1" {
		t.Skip("three-broker cluster test: set TXSTREAM_FAULT_TESTS=1 (make test-faults) to run it")
	}
	c := StartCluster(t, ClusterOptions{Topics: []string{"cl"}, Partitions: 3})
	if len(c.Addrs) != 3 || c.Addrs[1][:10] != "127.0.0.2:" {
		t.Fatalf("addresses %v: want three nodes on 127.0.0.1..3", c.Addrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := c.Admin().Metadata(ctx, "__consumer_offsets", "__transaction_state", "cl")
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range m.Topics.Sorted() {
		for _, p := range td.Partitions.Sorted() {
			if len(p.Replicas) != 3 || len(p.ISR) != 3 {
				t.Errorf("%s/%d: replicas %v ISR %v, want 3 and 3", p.Topic, p.Partition, p.Replicas, p.ISR)
			}
		}
	}
	// A broker may not know a topic just created yet: retry until each
	// describes without error.
	minISR := map[string]string{}
	for deadline := time.Now().Add(30 * time.Second); len(minISR) < 3 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		rcs, err := c.Admin().DescribeTopicConfigs(ctx, "__consumer_offsets", "__transaction_state", "cl")
		if err != nil {
			continue
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				continue
			}
			for _, cf := range rc.Configs {
				if cf.Key == "min.insync.replicas" && cf.Value != nil {
					minISR[rc.Name] = *cf.Value
				}
			}
		}
	}
	for _, topic := range []string{"__consumer_offsets", "__transaction_state", "cl"} {
		if got := minISR[topic]; got != "2" {
			t.Errorf("%s: min.insync.replicas %q, want 2", topic, got)
		}
	}

	// One seed that runs (the helpers take one address).
	seed := func() string {
		for i := range c.Nodes {
			if c.Running(i) {
				return c.Addrs[i]
			}
		}
		t.Fatal("no node runs")
		return ""
	}
	n := 0
	produce := func(what string) {
		t.Helper()
		produceTxn(t, seed(), "cl", 100)
		n += 100
		if got := count(t, seed(), "cl", n); got != n {
			t.Fatalf("%s: read %d committed records, want %d", what, got, n)
		}
	}
	produce("healthy")

	leader := c.LeaderOf("cl", 0)
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatal("running after Kill")
	}
	if next := c.LeaderOf("cl", 0); next == leader {
		t.Fatalf("leader of cl/0 is still the killed node %d", leader)
	}
	produce("leader killed")
	c.Restart(leader)
	if got := count(t, c.Addrs[leader], "cl", n); got != n {
		t.Fatalf("after the leader's kill and restart: read %d committed records, want %d", got, n)
	}

	coord := c.TxnCoordinatorOf("kafkatest-cl")
	t.Logf("transaction coordinator of kafkatest-cl: node %d; group coordinator of g: node %d", coord, c.GroupCoordinatorOf("g"))
	c.Kill(coord)
	produce("coordinator killed")
	c.Restart(coord)

	c.Stop(2)
	produce("node 2 stopped")
	c.Restart(2)
	produce("all back")
}
