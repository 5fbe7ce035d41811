package kafka

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventsync/outbox"
)

func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			c := newCluster(b)
			topic := c.topic(b, 6)
			p := openPublisher(b, c.brokers, nil)
			events := make([]*outbox.Event, size)
			for i := range events {
				events[i] = event(topic, fmt.Sprintf("agg-%d", i%50), "bench", `{"field":"a payload of a typical size, some sixty bytes"}`)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := p.Publish(ctx, events); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
