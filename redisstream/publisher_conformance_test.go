package redisstream

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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
	return suiteSetup(t, client, h.client, h.key, proxy.Cut, proxy.Restore, opts...)
}
