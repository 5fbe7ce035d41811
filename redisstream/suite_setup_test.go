package redisstream

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
)

// publisherVariants are the publishers the suite runs on a cluster and
// through Sentinel, by name: plain, and with WithIdempotence, its dedup
// keys under key("dedup:") so that the test's cleanup deletes them.
var publisherVariants = map[string]func(key func(string) string) []Option{
	"plain": func(func(string) string) []Option { return nil },
	"idempotent": func(key func(string) string) []Option {
		return []Option{WithIdempotence(time.Minute), WithDedupKeyPrefix(key("dedup:"))}
	},
}

// suiteSetup returns the conformance suite's view of a publisher that
// writes through client, built with opts, each topic mapped to the stream
// key(topic). admin reads the streams and plants the refused key; down and
// up take the server away from client and give it back. A single node and
// a cluster share it.
func suiteSetup(t *testing.T, client, admin redis.UniversalClient, key func(string) string, down, up func(), opts ...Option) outboxtest.PublisherSetup {
	opts = append([]Option{WithStream(func(e *outbox.Event) string {
		if e.Topic == "" {
			return "" // no topic, no stream: the publisher must refuse it
		}
		return key(e.Topic)
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
				events, err := decodeStream(ctx, admin, key(topic))
				if err != nil || len(events) >= n {
					for _, e := range events {
						e.Topic = topic
					}
					return events, err
				}
				select {
				case <-ctx.Done():
					return events, ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		},
		Refuse: func(name string) string {
			// XADD to a key that holds a string fails with WRONGTYPE.
			if err := admin.Set(t.Context(), key(name), "not a stream", 0).Err(); err != nil {
				t.Fatalf("set %s: %v", key(name), err)
			}
			return name
		},
		Down: down,
		Up:   up,
	}
}

// decodeStream returns the events of every entry of stream, in stream
// order; it is readStream for a caller that wants the error.
func decodeStream(ctx context.Context, c redis.Cmdable, stream string) ([]*outbox.Event, error) {
	msgs, err := c.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		return nil, err
	}
	events := make([]*outbox.Event, len(msgs))
	for i, m := range msgs {
		if events[i], err = Decode(m.Values); err != nil {
			return nil, err
		}
	}
	return events, nil
}
