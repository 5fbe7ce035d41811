package redisstream

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
)

// TestClusterConformance runs the shared outbox.Publisher suite on the
// Redis Cluster of OUTBOX_TEST_REDIS_CLUSTER through a
// redis.ClusterClient, plain and with WithIdempotence. Each subtest's
// streams lie in slots of their own, across the masters; the outage test
// cuts the client's connections to every node.
func TestClusterConformance(t *testing.T) {
	clusterSeeds(t)
	for name, opts := range publisherVariants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			outboxtest.TestPublisher(t, outboxtest.PublisherHarness{
				New: func(t *testing.T) outboxtest.PublisherSetup {
					h := newClusterHarness(t)
					cut := newCutter()
					client := h.newClient(t, func(o *redis.ClusterOptions) {
						o.Dialer = cut.dial
						o.MaxRetries = -1 // a cut connection fails the publish instead of being retried inside go-redis
						o.MaxRedirects = 1
						o.DialTimeout = 500 * time.Millisecond
					})
					return suiteSetup(t, client, h.client, h.key, cut.Cut, cut.Restore, opts(h.key)...)
				},
			})
		})
	}
}

// TestClusterDedupKeySlot checks on the cluster itself that an idempotent
// publish puts each dedup key in its stream's slot, on the master that
// holds the stream, for a plain stream key and one with a hash tag; and
// that a stream key whose '}' keeps it from being a tag fails its events,
// adding no entry, rather than writing outside the script.
func TestClusterDedupKeySlot(t *testing.T) {
	t.Parallel()
	h := newClusterHarness(t)
	ctx := t.Context()
	prefix := h.key("dedup:")
	pub, err := New(h.client, WithIdempotence(time.Minute), WithDedupKeyPrefix(prefix),
		WithStream(func(e *outbox.Event) string { return h.key(e.Topic) }))
	if err != nil {
		t.Fatal(err)
	}
	var batch []*outbox.Event
	for _, topic := range []string{"orders", "orders{eu}", "stock{eu}"} {
		for range 3 {
			batch = append(batch, event(topic, "agg-"+topic))
		}
	}
	if err := pub.Publish(ctx, batch); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for _, e := range batch {
		stream, dedup := h.key(e.Topic), DedupKey(prefix, h.key(e.Topic), e.ID)
		streamSlot, err := h.client.ClusterKeySlot(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		dedupSlot, err := h.client.ClusterKeySlot(ctx, dedup).Result()
		if err != nil {
			t.Fatal(err)
		}
		if dedupSlot != streamSlot {
			t.Errorf("dedup key %s is in slot %d, its stream %s in slot %d", dedup, dedupSlot, stream, streamSlot)
		}
		master, err := h.client.MasterForKey(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		// Asked of the master alone: both keys are there.
		if n, err := master.Exists(ctx, stream, dedup).Result(); err != nil || n != 2 {
			t.Errorf("master %s holds %d of %s and %s (err %v), want both", master.Options().Addr, n, stream, dedup, err)
		}
	}
	// The tagged streams share a slot with each other, not with "orders".
	a, _ := h.client.ClusterKeySlot(ctx, h.key("orders{eu}")).Result()
	b, _ := h.client.ClusterKeySlot(ctx, h.key("stock{eu}")).Result()
	if a != b {
		t.Errorf("streams tagged {eu} are in slots %d and %d", a, b)
	}

	// "a}b" hashes whole and cannot be a tag: its dedup key lies in
	// another slot, and the cluster refuses the script.
	bad := event("a}b", "agg-bad")
	err = pub.Publish(ctx, []*outbox.Event{bad})
	if err == nil {
		t.Fatal("Publish to a stream whose key holds '}' without a tag succeeded on a cluster")
	}
	if !redis.HasErrorPrefix(failedIDsOf(err)[bad.ID], "CROSSSLOT") {
		t.Errorf("Publish to %q: %v, want the event failed with CROSSSLOT", h.key("a}b"), err)
	}
	if n, err := h.client.Exists(ctx, h.key("a}b")).Result(); err != nil || n != 0 {
		t.Errorf("the refused event's stream exists (%d, %v)", n, err)
	}
}

// TestClusterBatchAcrossSlots publishes one batch whose events go to 64
// streams, whose slots lie on every master, and checks that Publish sends
// it in one pass (one pipeline per master, none sent twice) and that every
// event arrives, each aggregate in order; plain and idempotent.
func TestClusterBatchAcrossSlots(t *testing.T) {
	clusterSeeds(t)
	for name, idempotent := range map[string]bool{"plain": false, "idempotent": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newClusterHarness(t)
			ctx := t.Context()
			var mu sync.Mutex
			pipelines := map[string]int{} // node address -> pipelines sent
			client := h.newClient(t, func(o *redis.ClusterOptions) {
				o.NewClient = func(opt *redis.Options) *redis.Client {
					c := redis.NewClient(opt)
					c.AddHook(pipelineHook(func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error {
						if name := cmds[0].Name(); name == "xadd" || name == "eval" { // not a connection's handshake
							mu.Lock()
							pipelines[opt.Addr]++
							mu.Unlock()
						}
						return next(ctx, cmds)
					}))
					return c
				}
			})
			opts := []Option{WithStream(func(e *outbox.Event) string { return h.key(e.Topic) })}
			if idempotent {
				opts = append(opts, WithIdempotence(time.Minute), WithDedupKeyPrefix(h.key("dedup:")))
			}
			pub, err := New(client, opts...)
			if err != nil {
				t.Fatal(err)
			}
			const streams, perStream = 64, 8
			masters := map[string]bool{}
			var batch []*outbox.Event
			for i := range perStream {
				for s := range streams {
					topic := fmt.Sprint("s", s)
					batch = append(batch, event(topic, fmt.Sprint("agg-", s, "-", i%2)))
					if i == 0 {
						m, err := client.MasterForKey(ctx, h.key(topic))
						if err != nil {
							t.Fatal(err)
						}
						masters[m.Options().Addr] = true
					}
				}
			}
			nodes, err := client.ClusterShards(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(masters) != len(nodes) {
				t.Fatalf("the %d streams lie on %d masters of %d", streams, len(masters), len(nodes))
			}
			mu.Lock()
			clear(pipelines)
			mu.Unlock()
			if err := pub.Publish(ctx, batch); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			mu.Lock()
			for addr := range masters {
				if pipelines[addr] != 1 {
					t.Errorf("master %s was sent %d pipelines for one batch, want 1 (all: %v)", addr, pipelines[addr], pipelines)
				}
			}
			mu.Unlock()
			for s := range streams {
				topic := fmt.Sprint("s", s)
				var want []*outbox.Event
				for _, e := range batch {
					if e.Topic == topic {
						want = append(want, e)
					}
				}
				got := readStream(t, h.client, h.key(topic))
				if !slices.Equal(ids(got), ids(want)) {
					t.Fatalf("stream %s holds %v, want %v", h.key(topic), ids(got), ids(want))
				}
			}
		})
	}
}

// pipelineHook is a redis.Hook that wraps only pipelines, with f.
type pipelineHook func(ctx context.Context, cmds []redis.Cmder, next redis.ProcessPipelineHook) error

func (f pipelineHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (f pipelineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (f pipelineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { return f(ctx, cmds, next) }
}

// failedIDsOf returns the failures a Publish error names: the entries of
// a *PublishError, or nil.
func failedIDsOf(err error) map[string]error {
	if pe, ok := err.(*outbox.PublishError); ok {
		return pe.Failed
	}
	return nil
}
