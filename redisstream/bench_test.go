package redisstream

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// benchEvent is a typical event: a UUIDv7, a 256-byte payload and two
// headers.
func benchEvent(topic string) *outbox.Event {
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       topic,
		Type:        "stock.updated",
		AggregateID: "sku-000042",
		Payload:     payload,
		Headers: map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tenant":      "acme",
		},
		CreatedAt: time.Now().UTC(),
	}
}

// BenchmarkPublish publishes batches to one stream, against the Redis of
// OUTBOX_TEST_REDIS when it is set and against miniredis otherwise. The
// stream is trimmed (MAXLEN ~ 10000) so a long run does not fill a shared
// server, and deleted at the end.
func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var h *harness
			if os.Getenv(envRedis) != "" {
				h = realHarness(b)
			} else {
				h = miniHarness(b)
			}
			pub := newPublisher(b, h.client, WithMaxLen(10000))
			batch := make([]*outbox.Event, size)
			for i := range batch {
				batch[i] = benchEvent(h.key("bench"))
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := pub.Publish(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkEncode measures building the XADD arguments of one event.
func BenchmarkEncode(b *testing.B) {
	pub := &Publisher{stream: StreamByTopic, maxLen: 10000, maxLenArg: int64(10000)}
	e := benchEvent("bench")
	b.ReportAllocs()
	for b.Loop() {
		_ = pub.xaddArgs(e.Topic, e)
	}
}
