//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
)

// dedupWindow is the dedup window of -idempotent: longer than a long run,
// so every republication of the run is caught; the keys expire by
// themselves afterwards, and the run deletes them when it ends.
const dedupWindow = 30 * time.Minute

// publisherOptions are the redisstream options of the run's relays and of
// its immediate path: streams under prefix and, with idempotent, the
// script that adds each event ID to its stream once.
func publisherOptions(prefix string, idempotent bool) []redisstream.Option {
	opts := []redisstream.Option{redisstream.WithStream(func(e *outbox.Event) string { return prefix + e.Topic })}
	if idempotent {
		opts = append(opts, redisstream.WithIdempotence(dedupWindow), redisstream.WithDedupKeyPrefix(prefix+"dedup:"))
	}
	return opts
}

// deleteDedupKeys deletes the run's dedup keys, which only the run uses.
func deleteDedupKeys(c *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"dedup:*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			c.Del(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Del(ctx, keys...)
	}
	if err := iter.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "outbox-chaos: delete dedup keys: %v\n", err)
	}
}
