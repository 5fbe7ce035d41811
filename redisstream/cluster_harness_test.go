package redisstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// envRedisCluster names the variable that points the tests at a Redis
// Cluster: a comma-separated list of seed nodes, as .ci/redis-cluster
// prints it.
const envRedisCluster = "OUTBOX_TEST_REDIS_CLUSTER"

// clusterSeeds returns the seed nodes of OUTBOX_TEST_REDIS_CLUSTER, or
// skips the test as envAddrs does.
func clusterSeeds(t testing.TB) []string {
	t.Helper()
	return envAddrs(t, envRedisCluster, "Redis Cluster", ".ci/redis-cluster", "127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003")
}

// clusterHarness is what a cluster test needs: a client of its own on the
// cluster, the seeds to build more clients, and a key prefix that belongs
// to this test alone.
type clusterHarness struct {
	client *redis.ClusterClient
	seeds  []string
	prefix string
}

func (h *clusterHarness) key(name string) string { return h.prefix + name }

// newClusterHarness connects to the cluster of OUTBOX_TEST_REDIS_CLUSTER
// (see clusterSeeds) and fails the test when it is not serving. The
// test's keys are deleted from every master when it ends.
func newClusterHarness(t testing.TB) *clusterHarness {
	t.Helper()
	h := &clusterHarness{seeds: clusterSeeds(t), prefix: randomPrefix(t)}
	return h.open(t)
}

// open checks that the cluster of h.seeds serves every slot, gives h its
// client and deletes the test's keys at cleanup.
func (h *clusterHarness) open(t testing.TB) *clusterHarness {
	t.Helper()
	h.client = h.newClient(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := h.client.ClusterInfo(ctx).Result()
	if err != nil || !strings.Contains(info, "cluster_state:ok") {
		t.Fatalf("Redis Cluster at %v is not serving: %v %q", h.seeds, err, info)
	}
	admin := h.newClient(t, nil) // registered before, so closed after, the cleanup below
	t.Cleanup(func() { deleteClusterKeys(t, admin, h.prefix) })
	return h
}

// newClient returns a cluster client on h's seeds with options changed by
// mod, closed when the test ends.
func (h *clusterHarness) newClient(t testing.TB, mod func(*redis.ClusterOptions)) *redis.ClusterClient {
	t.Helper()
	opt := &redis.ClusterOptions{Addrs: h.seeds}
	if mod != nil {
		mod(opt)
	}
	c := redis.NewClusterClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// deleteClusterKeys deletes, on every master, the keys starting with
// prefix, one key a command since they lie in many slots.
func deleteClusterKeys(t testing.TB, c *redis.ClusterClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		pipe := node.Pipeline()
		for iter.Next(ctx) {
			pipe.Unlink(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil {
		t.Errorf("cleanup: delete %s* on the cluster: %v", prefix, err)
	}
}

// cutter dials the connections of a client and can take them all away:
// Cut closes every open one and refuses new ones until Restore. It stands
// in for a proxy where a client would not keep to a proxy's address: a
// cluster client learns every node's own address, a Sentinel client the
// master's from the sentinel.
type cutter struct {
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

var errCut = errors.New("test: connection cut")

func newCutter() *cutter { return &cutter{conns: map[net.Conn]struct{}{}} }

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	if down {
		return nil, errCut
	}
	conn, err := (&net.Dialer{Timeout: 500 * time.Millisecond}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		conn.Close()
		return nil, errCut
	}
	c.conns[conn] = struct{}{}
	return &cutConn{Conn: conn, c: c}, nil
}

// Cut closes every connection and refuses new ones.
func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = true
	for conn := range c.conns {
		conn.Close()
		delete(c.conns, conn)
	}
}

// Restore lets connections be made again.
func (c *cutter) Restore() {
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
}

type cutConn struct {
	net.Conn
	c *cutter
}

func (cc *cutConn) Close() error {
	cc.c.mu.Lock()
	delete(cc.c.conns, cc.Conn)
	cc.c.mu.Unlock()
	return cc.Conn.Close()
}
