package redisstream

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
)

func TestWithWaitReplicasValidation(t *testing.T) {
	t.Parallel()
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer plain.Close()
	slow := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: time.Second})
	defer slow.Close()
	unbounded := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: -1})
	defer unbounded.Close()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()

	for _, tc := range []struct {
		name    string
		client  redis.UniversalClient
		n       int
		timeout time.Duration
		want    string // "" for accepted
	}{
		{"one replica", plain, 1, 100 * time.Millisecond, ""},
		{"a millisecond", plain, 2, time.Millisecond, ""},
		{"no read timeout", unbounded, 1, time.Minute, ""},
		{"zero replicas", plain, 0, time.Second, "n is 0"},
		{"negative replicas", plain, -1, time.Second, "n is -1"},
		{"zero timeout", plain, 1, 0, "timeout 0s"},
		{"negative timeout", plain, 1, -time.Second, "timeout -1s"},
		{"under a millisecond", plain, 1, 500 * time.Microsecond, "shorter than 1ms"},
		{"as long as ReadTimeout", slow, 1, time.Second, "ReadTimeout (1s)"},
		{"the default ReadTimeout", plain, 1, plain.Options().ReadTimeout, "not shorter than the client's ReadTimeout"},
		{"cluster", cluster, 1, time.Second, "*redis.ClusterClient"},
		{"ring", ring, 1, time.Second, "*redis.Ring"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.client, WithWaitReplicas(tc.n, tc.timeout))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "WithWaitReplicas: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrInvalidConfig naming WithWaitReplicas and %q", err, tc.want)
			}
		})
	}
}

// TestWaitReplicasTooFew publishes to a master that has fewer replicas
// than WithWaitReplicas asks for: Redis adds every entry, WAIT answers
// with fewer replicas, and every event fails, marked Unavailable, none
// acknowledged. miniredis answers WAIT with 0; the real Redis is asked
// for one replica more than it has.
func TestWaitReplicasTooFew(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		want := 1
		if info, err := h.client.Info(ctx, "replication").Result(); err == nil {
			if _, v, ok := strings.Cut(info, "connected_slaves:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(v, "\n", 2)[0]))
				want = n + 1
			}
		}
		for name, opts := range publisherVariants {
			t.Run(name, func(t *testing.T) {
				stream := h.key(name)
				opts := append(opts(h.key), WithWaitReplicas(want, 50*time.Millisecond),
					WithStream(func(*outbox.Event) string { return stream }))
				pub, err := New(h.client, opts...)
				if err != nil {
					t.Fatal(err)
				}
				batch := []*outbox.Event{event("t", "a"), event("t", "a"), event("t", "b"), event("t", "")}
				err = pub.Publish(ctx, batch)
				var pe *outbox.PublishError
				if !errors.As(err, &pe) || len(pe.Failed) != len(batch) {
					t.Fatalf("Publish: %v, want a PublishError naming all %d events", err, len(batch))
				}
				for _, e := range batch {
					ferr := pe.Failed[e.ID]
					if !outbox.IsUnavailable(ferr) || !strings.Contains(fmt.Sprint(ferr), fmt.Sprintf(" of %d replicas acknowledged", want)) {
						t.Errorf("event %s: %v, want Unavailable saying how many of %d replicas acknowledged", e.ID, ferr, want)
					}
				}
				// Redis has the entries; only their acknowledgement is withheld.
				if got := readStream(t, h.client, stream); !slices.Equal(ids(got), ids(batch)) {
					t.Fatalf("stream holds %v, want %v", ids(got), ids(batch))
				}
			})
		}
	})
}

// TestWaitReplicasWithReplica publishes to a master of the test's own with
// one replica (REPLICAOF): the batch is acknowledged and, since WAIT saw
// the replica, the replica holds every entry as soon as Publish returns.
// Once the replica is killed, the same publisher's batches fail,
// Unavailable, saying that 0 of 1 replicas acknowledged.
func TestWaitReplicasWithReplica(t *testing.T) {
	t.Parallel()
	if os.Getenv(envRedis) == "" {
		t.Skipf("real Redis tests are off: set %s=redis://127.0.0.1:6379/0 to run them", envRedis)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("%s is set but redis-server is not on PATH: %v", envRedis, err)
	}
	ctx := t.Context()
	master, replica := ownServer(t), ownServer(t)
	mc := redis.NewClient(&redis.Options{Addr: master.addr()})
	defer mc.Close()
	rc := redis.NewClient(&redis.Options{Addr: replica.addr()})
	defer rc.Close()
	if err := rc.ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(master.port)).Err(); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	waitFor(t, 10*time.Second, "the replica to be in sync", func() bool {
		info, err := rc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up\r")
	})

	for name, opts := range publisherVariants {
		t.Run(name, func(t *testing.T) {
			stream := "orders-" + name
			pub, err := New(mc, append(opts(func(s string) string { return s }), WithWaitReplicas(1, 2*time.Second),
				WithStream(func(*outbox.Event) string { return stream }))...)
			if err != nil {
				t.Fatal(err)
			}
			batch := []*outbox.Event{event("t", "a"), event("t", "b"), event("t", "a")}
			if err := pub.Publish(ctx, batch); err != nil {
				t.Fatalf("Publish with a replica in sync: %v", err)
			}
			// Read on the replica at once: WAIT said it has the writes.
			if got := readStream(t, rc, stream); !slices.Equal(ids(got), ids(batch)) {
				t.Fatalf("the replica's stream holds %v, want %v", ids(got), ids(batch))
			}
		})
	}

	replica.kill(t)
	pub, err := New(mc, WithWaitReplicas(1, 100*time.Millisecond), WithStream(func(*outbox.Event) string { return "after-kill" }))
	if err != nil {
		t.Fatal(err)
	}
	batch := []*outbox.Event{event("t", "a"), event("t", "b")}
	err = pub.Publish(ctx, batch)
	var pe *outbox.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != len(batch) {
		t.Fatalf("Publish with the replica gone: %v, want a PublishError naming both events", err)
	}
	for _, e := range batch {
		if ferr := pe.Failed[e.ID]; !outbox.IsUnavailable(ferr) || !strings.Contains(ferr.Error(), "0 of 1 replicas") {
			t.Errorf("event %s: %v, want Unavailable, 0 of 1 replicas", e.ID, ferr)
		}
	}
}

// ownServer starts a redis-server of the test's own on a free loopback
// port, persisting nothing and syncing a new replica at once (no
// diskless sync delay); it is killed when the test ends.
func ownServer(t *testing.T) *ownNode {
	t.Helper()
	n := &ownNode{port: freePort(t), dir: t.TempDir()}
	n.args = []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(n.port), "--dir", n.dir,
		"--logfile", filepath.Join(n.dir, "redis.log"), "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"}
	t.Cleanup(func() { n.kill(t) })
	n.start(t)
	return n
}
