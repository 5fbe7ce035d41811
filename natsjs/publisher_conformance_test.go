package natsjs

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/outboxtest"
)

// TestConformance runs the shared outbox.Publisher suite against the NATS
// server of OUTBOX_TEST_NATS, a stream per subtest. The publisher talks
// through a proxy the test owns, so the outage test cuts the proxy, never
// the server.
func TestConformance(t *testing.T) {
	if os.Getenv(envNATS) == "" {
		t.Skipf("NATS tests are off: set %s=nats://127.0.0.1:4222 (a server with JetStream) to run them", envNATS)
	}
	outboxtest.TestPublisher(t, outboxtest.PublisherHarness{New: conformanceSetup})
}

func conformanceSetup(t *testing.T) outboxtest.PublisherSetup {
	h := newHarness(t, time.Minute)
	u, err := url.Parse(os.Getenv(envNATS))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := testproxy.Start(u.Host)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(func() { proxy.Close() })
	nc, err := nats.Connect("nats://"+proxy.Addr(),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectBufSize(-1), // while disconnected a publish fails at once instead of being buffered
		nats.Timeout(time.Second))
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	t.Cleanup(nc.Close)
	pub, err := New(nc, WithAckTimeout(2*time.Second), WithSubject(func(e *outbox.Event) string { return e.Topic }))
	if err != nil {
		t.Fatal(err)
	}
	return outboxtest.PublisherSetup{
		Publisher: pub,
		Topic:     func(name string) string { return h.subject + "." + name },
		Read: func(ctx context.Context, topic string, n int) ([]*outbox.Event, error) {
			for {
				var out []*outbox.Event
				for _, m := range h.messages(t) {
					if m.Subject != topic {
						continue
					}
					e, err := Decode(m.Subject, m.Header, m.Data)
					if err != nil {
						return out, err
					}
					out = append(out, e)
				}
				if len(out) >= n {
					return out, nil
				}
				select {
				case <-ctx.Done():
					return out, ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		},
		// A subject no stream captures: JetStream does not answer, and each
		// event fails on its own.
		Refuse: func(name string) string { return "outboxtest-refused-" + randomHex(t) + "." + name },
		Down:   proxy.Cut,
		Up:     proxy.Restore,
	}
}
