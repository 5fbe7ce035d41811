package redisstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
)

// envRedisSentinel names the variable that points the tests at Redis
// Sentinel: a comma-separated list of sentinel addresses, as
// .ci/redis-sentinel prints it. The sentinels watch the master under the
// name sentinelMaster.
const envRedisSentinel = "OUTBOX_TEST_REDIS_SENTINEL"

// sentinelMaster is the name the sentinels of OUTBOX_TEST_REDIS_SENTINEL
// know the master by (.ci/redis-sentinel's).
const sentinelMaster = "outbox-test"

// sentinelAddrs returns the sentinels of OUTBOX_TEST_REDIS_SENTINEL, or
// skips the test as envAddrs does.
func sentinelAddrs(t testing.TB) []string {
	t.Helper()
	return envAddrs(t, envRedisSentinel, "Redis Sentinel", ".ci/redis-sentinel", "127.0.0.1:17021")
}

// sentinelHarness is what a Sentinel test needs: a client of its own on
// the master the sentinels name, the sentinels and master name to build
// more clients, and a key prefix that belongs to this test alone.
type sentinelHarness struct {
	client    *redis.Client
	sentinels []string
	master    string
	prefix    string
}

func (h *sentinelHarness) key(name string) string { return h.prefix + name }

// newSentinelHarness connects through the sentinels of
// OUTBOX_TEST_REDIS_SENTINEL (see sentinelAddrs) and fails the test when
// they name no master that answers. The test's keys are deleted when it
// ends.
func newSentinelHarness(t testing.TB) *sentinelHarness {
	t.Helper()
	h := &sentinelHarness{sentinels: sentinelAddrs(t), master: sentinelMaster, prefix: randomPrefix(t)}
	return h.open(t)
}

// open checks that h's sentinels lead to a master that answers, gives h
// its client and deletes the test's keys at cleanup.
func (h *sentinelHarness) open(t testing.TB) *sentinelHarness {
	t.Helper()
	h.client = h.newClient(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.client.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis Sentinel at %v names no master %q that answers: %v", h.sentinels, h.master, err)
	}
	admin := h.newClient(t, nil) // registered before, so closed after, the cleanup below
	t.Cleanup(func() { deleteKeys(t, admin, h.prefix) })
	return h
}

// newClient returns a failover client on h's sentinels with options
// changed by mod, closed when the test ends.
func (h *sentinelHarness) newClient(t testing.TB, mod func(*redis.FailoverOptions)) *redis.Client {
	t.Helper()
	opt := &redis.FailoverOptions{MasterName: h.master, SentinelAddrs: h.sentinels}
	if mod != nil {
		mod(opt)
	}
	c := redis.NewFailoverClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSentinelConformance runs the shared outbox.Publisher suite on the
// master that the sentinels of OUTBOX_TEST_REDIS_SENTINEL name, through a
// redis.NewFailoverClient, plain and with WithIdempotence. The outage test
// cuts the client's connections, to the sentinels and the master alike.
func TestSentinelConformance(t *testing.T) {
	sentinelAddrs(t)
	for name, opts := range publisherVariants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			outboxtest.TestPublisher(t, outboxtest.PublisherHarness{
				New: func(t *testing.T) outboxtest.PublisherSetup {
					h := newSentinelHarness(t)
					cut := newCutter()
					client := h.newClient(t, func(o *redis.FailoverOptions) {
						o.Dialer = cut.dial
						o.MaxRetries = -1 // a cut connection fails the publish instead of being retried inside go-redis
						o.DialTimeout = 500 * time.Millisecond
					})
					return suiteSetup(t, client, h.client, h.key, cut.Cut, cut.Restore, opts(h.key)...)
				},
			})
		})
	}
}

// TestSentinelFailover publishes through a failover client, has the
// sentinel promote the replica (SENTINEL FAILOVER), and publishes again
// through the same client and publisher: the second batch lands on the new
// master after the first, which the replica had received. Idempotent, the
// dedup keys came over too: publishing the first batch again adds nothing.
// The idempotent publisher also has WithWaitReplicas, so the test
// neither checks that the replica has the first batch nor waits for the
// old master to follow the new one before it publishes the second: the
// publisher's own WAIT must keep every batch it acknowledged through the
// failover, and a batch the old master takes after it must fail.
//
// The master, replica and sentinel are the test's own (free loopback
// ports), since a failover would disturb every other user of the shared
// setup. It runs where OUTBOX_TEST_REDIS_SENTINEL is set, the sign that
// the machine's redis-server runs as a sentinel.
func TestSentinelFailover(t *testing.T) {
	sentinelAddrs(t)
	// Two variants, not four: each takes some 20 s, mostly the sentinel
	// discovering the replica.
	for name, v := range map[string]struct{ idempotent, wait bool }{
		"plain": {}, "idempotent-wait-replicas": {idempotent: true, wait: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSentinelFailover(t, v.idempotent, v.wait)
		})
	}
}

func testSentinelFailover(t *testing.T, idempotent, waitReplicas bool) {
	ctx := t.Context()
	master, replica, sentinel := startOwnSentinel(t)
	h := (&sentinelHarness{sentinels: []string{sentinel.addr()}, master: sentinelMaster, prefix: randomPrefix(t)}).open(t)
	var opts []Option
	if idempotent {
		opts = publisherVariants["idempotent"](h.key)
	}
	if waitReplicas {
		opts = append(opts, WithWaitReplicas(1, time.Second))
	}
	pub, err := New(h.client, append(opts, WithStream(func(e *outbox.Event) string { return h.key(e.Topic) }))...)
	if err != nil {
		t.Fatal(err)
	}
	batch := func(n int) []*outbox.Event {
		var b []*outbox.Event
		for i := range 6 {
			b = append(b, event("orders", fmt.Sprint("agg-", n, "-", i%2)))
		}
		return b
	}
	before, after := batch(1), batch(2)
	if err := pub.Publish(ctx, before); err != nil {
		t.Fatalf("Publish before the failover: %v", err)
	}
	// The replica has every write before the failover starts, so what the
	// old master acknowledged is not lost by design of the test; with
	// WithWaitReplicas, Publish saw to that.
	old := redis.NewClient(&redis.Options{Addr: master.addr()})
	defer old.Close()
	if !waitReplicas {
		if n, err := old.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
			t.Fatalf("WAIT 1 on the master: %d replicas, %v", n, err)
		}
	}

	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.addr()})
	defer sc.Close()
	if err := sc.Failover(ctx, sentinelMaster).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, 30*time.Second, "the sentinel to name the replica as master", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, sentinelMaster).Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.port)
	})

	// Until the sentinel has turned the old master into a replica of the
	// new one, the old master still takes writes, and loses them when it
	// resyncs: Sentinel's failover does not pause its clients. So, plain,
	// the second batch goes out once the old master follows the new one.
	// With WithWaitReplicas it goes out at once: the old master has no
	// replica left, so WAIT fails what it takes, and the new master has
	// none until the old one follows it.
	if waitReplicas {
		// What the old master takes now, straight from a client of its
		// own, it will lose: the publisher must not acknowledge it.
		direct, err := New(old, WithWaitReplicas(1, 500*time.Millisecond), WithStream(func(e *outbox.Event) string { return h.key(e.Topic) }))
		if err != nil {
			t.Fatal(err)
		}
		stray := batch(3)
		err = direct.Publish(ctx, stray)
		var pe *outbox.PublishError
		if !errors.As(err, &pe) || len(pe.Failed) != len(stray) {
			t.Fatalf("Publish on the old master after the failover: %v, want every event failed", err)
		}
		for id, ferr := range pe.Failed {
			if !outbox.IsUnavailable(ferr) {
				t.Fatalf("Publish on the old master after the failover: event %s: %v, want Unavailable", id, ferr)
			}
		}
	} else {
		waitFor(t, 30*time.Second, "the old master to replicate the new one", func() bool {
			info, err := old.Info(ctx, "replication").Result()
			return err == nil && strings.Contains(info, "role:slave\r") &&
				strings.Contains(info, "master_port:"+strconv.Itoa(replica.port)+"\r") &&
				strings.Contains(info, "master_link_status:up\r")
		})
	}

	// The same client finds the new master; a publish that meets the
	// demoted one (READONLY) fails and is tried again, as a relay would.
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 1; ; attempt++ {
		err := pub.Publish(ctx, after)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the failover still fails after %d attempts: %v", attempt, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if idempotent {
		if err := pub.Publish(ctx, before); err != nil {
			t.Fatalf("Publish of the first batch again after the failover: %v", err)
		}
	}

	promoted := redis.NewClient(&redis.Options{Addr: replica.addr()})
	defer promoted.Close()
	if role, err := promoted.Do(ctx, "role").Slice(); err != nil || len(role) == 0 || role[0] != "master" {
		t.Fatalf("ROLE of the replica after the failover: %v, %v", role, err)
	}
	got := readStream(t, promoted, h.key("orders"))
	want := ids(append(slices.Clone(before), after...))
	if idempotent {
		if !slices.Equal(ids(got), want) {
			t.Fatalf("the new master's stream holds %v, want %v once each", ids(got), want)
		}
		return
	}
	// Plain, a retried batch may have landed in part before: duplicates
	// of the same ID are allowed, nothing else.
	if first := firstSeen(ids(got)); !slices.Equal(first, want) {
		t.Fatalf("the new master's stream holds %v, want %v (duplicates allowed)", ids(got), want)
	}
}

// firstSeen returns ids without the repeats of an ID seen before.
func firstSeen(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// startOwnSentinel starts a master, a replica of it and a sentinel that
// watches it as sentinelMaster with quorum 1, each a redis-server on a
// free loopback port with its own folder, and waits until the sentinel
// knows the replica. They are killed when the test ends.
func startOwnSentinel(t *testing.T) (master, replica, sentinel *ownNode) {
	t.Helper()
	server := func(args ...string) *ownNode {
		n := &ownNode{port: freePort(t), dir: t.TempDir()}
		n.args = append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(n.port), "--dir", n.dir,
			"--logfile", filepath.Join(n.dir, "redis.log"), "--save", "", "--appendonly", "no"}, args...)
		return n
	}
	master = server()
	replica = server("--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	// A sentinel runs from a config file it can rewrite.
	sentinel = &ownNode{port: freePort(t), dir: t.TempDir()}
	conf := filepath.Join(sentinel.dir, "sentinel.conf")
	text := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %[4]s 5000\nsentinel failover-timeout %[4]s 10000\n",
		sentinel.port, sentinel.dir, filepath.Join(sentinel.dir, "sentinel.log"), sentinelMaster, master.port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel.args = []string{conf, "--sentinel"}
	for _, n := range []*ownNode{master, replica, sentinel} {
		t.Cleanup(func() { n.kill(t) })
		n.start(t)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.addr()})
	defer sc.Close()
	// The sentinel learns of replicas from the master's INFO, every 10 s.
	waitFor(t, 30*time.Second, "the sentinel to know the replica", func() bool {
		replicas, err := sc.Replicas(context.Background(), sentinelMaster).Result()
		if err != nil || len(replicas) != 1 {
			return false
		}
		return replicas[0]["flags"] == "slave" && replicas[0]["master-link-status"] == "ok"
	})
	return master, replica, sentinel
}
