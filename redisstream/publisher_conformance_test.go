package redisstream

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/outboxtest"
)

// TestConformance runs the shared outbox.Publisher suite against miniredis
// and, when OUTBOX_TEST_REDIS is set, the real Redis. The publisher talks
// through a proxy the test owns, so the outage test cuts the proxy, never
// the server.
func TestConformance(t *testing.T) {
	eachServer(t, func(h *harness) []Option { return nil })
}

// TestConformanceIdempotent runs the same suite with WithIdempotence, so
// that publishIdempotent (a script per event instead of a bare XADD) keeps
// the whole contract too. Each subtest's dedup keys start with its own key
// prefix, so tests do not see each other's keys and the real Redis's
// cleanup deletes them.
func TestConformanceIdempotent(t *testing.T) {
	eachServer(t, func(h *harness) []Option {
		return []Option{WithIdempotence(time.Minute), WithDedupKeyPrefix(h.key("dedup:"))}
	})
}

// eachServer runs the publisher suite on miniredis and on the real Redis,
// each subtest's publisher built with the options opts gives for its
// harness.
func eachServer(t *testing.T, opts func(h *harness) []Option) {
	for name, newHarness := range map[string]func(testing.TB) *harness{"miniredis": miniHarness, "redis": realHarness} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if name == "redis" {
				realHarness(t) // skips, naming the variable, when no server is configured
			}
			outboxtest.TestPublisher(t, outboxtest.PublisherHarness{
				New: func(t *testing.T) outboxtest.PublisherSetup {
					h := newHarness(t)
					return conformanceSetup(t, h, opts(h)...)
				},
			})
		})
	}
}

// conformanceSetup returns the suite's view of a publisher on h, built
// with opts and talking through a proxy of its own.
func conformanceSetup(t *testing.T, h *harness, opts ...Option) outboxtest.PublisherSetup {
	proxy, err := testproxy.Start(h.addr)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(func() { proxy.Close() })
	client := h.newClient(t, proxy.Addr(), func(o *redis.Options) {
		o.MaxRetries = -1 // a cut connection fails the publish instead of being retried inside go-redis
		o.DialTimeout = 500 * time.Millisecond
	})
	opts = append([]Option{WithStream(func(e *outbox.Event) string {
		if e.Topic == "" {
			return "" // no topic, no stream: the publisher must refuse it
		}
		return h.key(e.Topic)
	})}, opts...)
	pub, err := New(client, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return outboxtest.PublisherSetup{
		Publisher: pub,
		Topic:     func(name string) string { return name },
		Read: func(ctx context.Context, topic string, n int) ([]*outbox.Event, error) {
			for {
				msgs, err := h.client.XRange(ctx, h.key(topic), "-", "+").Result()
				if err != nil {
					return nil, err
				}
				if len(msgs) >= n {
					events := make([]*outbox.Event, len(msgs))
					for i, m := range msgs {
						if events[i], err = Decode(m.Values); err != nil {
							return nil, err
						}
						events[i].Topic = topic
					}
					return events, nil
				}
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		},
		Refuse: func(name string) string {
			// XADD to a key that holds a string fails with WRONGTYPE.
			if err := h.client.Set(t.Context(), h.key(name), "not a stream", 0).Err(); err != nil {
				t.Fatalf("set %s: %v", h.key(name), err)
			}
			return name
		},
		Down: proxy.Cut,
		Up:   proxy.Restore,
	}
}
