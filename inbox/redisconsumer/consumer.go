// Package redisconsumer reads events that redisstream published back from
// a Redis stream through a consumer group: XREADGROUP for new entries,
// XAUTOCLAIM for entries left pending by a consumer that died or failed,
// XACK once the handler returned nil. Delivery is at least once; run the
// handler through inbox.Handle to process each event once.
package redisconsumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
)

// Defaults of the options.
const (
	DefaultBatchSize = 100              // entries per read
	DefaultBlock     = time.Second      // how long a read waits for new entries
	DefaultMinIdle   = 30 * time.Second // how long an entry stays pending before another consumer claims it
)

// Handler processes one event. An error leaves the entry pending: it is
// delivered again, to this consumer or another, once it has been pending
// for the MinIdle time.
type Handler func(ctx context.Context, e *outbox.Event) error

// Option configures New.
type Option func(*Consumer)

// WithBatchSize sets how many entries one read returns at most. Defaults
// to DefaultBatchSize.
func WithBatchSize(n int) Option { return func(c *Consumer) { c.batch = int64(n) } }

// WithBlock sets how long a read waits for new entries; it also bounds how
// long Run takes to notice that ctx ended. Defaults to DefaultBlock.
func WithBlock(d time.Duration) Option { return func(c *Consumer) { c.block = d } }

// WithMinIdle sets how long an entry must have been pending (delivered,
// not acknowledged) before Run claims it from the consumer that has it:
// longer than the slowest handler, or an entry still being processed is
// processed twice. Defaults to DefaultMinIdle.
func WithMinIdle(d time.Duration) Option { return func(c *Consumer) { c.minIdle = d } }

// WithLogger sets the logger of malformed entries and handler failures.
// Defaults to discarding.
func WithLogger(l *slog.Logger) Option { return func(c *Consumer) { c.log = l } }

// Consumer is one member of a consumer group on one stream.
type Consumer struct {
	client              redis.UniversalClient
	stream, group, name string
	batch               int64
	block, minIdle      time.Duration
	log                 *slog.Logger
}

// New returns the consumer name of group on stream, reading through
// client, which it never closes. It does no I/O.
func New(client redis.UniversalClient, stream, group, name string, opts ...Option) (*Consumer, error) {
	if client == nil || stream == "" || group == "" || name == "" {
		return nil, fmt.Errorf("redisconsumer: %w: client, stream, group and consumer name are required", outbox.ErrInvalidConfig)
	}
	c := &Consumer{client: client, stream: stream, group: group, name: name,
		batch: DefaultBatchSize, block: DefaultBlock, minIdle: DefaultMinIdle,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		if opt != nil {
			opt(c)
		}
	}
	if c.batch < 1 || c.block < time.Millisecond || c.minIdle < time.Millisecond {
		return nil, fmt.Errorf("redisconsumer: %w: batch size must be at least 1, block and min idle at least 1ms", outbox.ErrInvalidConfig)
	}
	return c, nil
}

// Run creates the group if it does not exist (reading the stream from its
// start, creating the stream if need be), then, until ctx ends, claims
// entries pending longer than the MinIdle time (XAUTOCLAIM) and reads new
// ones (XREADGROUP), calls handle for each, and acknowledges (XACK) those
// it handled. An entry that does not decode is acknowledged and logged:
// no retry can fix it. Run returns nil when ctx ends, or the first Redis
// error.
func (c *Consumer) Run(ctx context.Context, handle Handler) error {
	err := c.client.XGroupCreateMkStream(ctx, c.stream, c.group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return c.stopped(ctx, fmt.Errorf("redisconsumer: create group %s on %s: %w", c.group, c.stream, err))
	}
	claimFrom := "0-0"
	for ctx.Err() == nil {
		msgs, next, err := c.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: c.stream, Group: c.group, Consumer: c.name, MinIdle: c.minIdle, Start: claimFrom, Count: c.batch,
		}).Result()
		if err != nil {
			return c.stopped(ctx, fmt.Errorf("redisconsumer: XAUTOCLAIM %s: %w", c.stream, err))
		}
		claimFrom = next
		c.handleAll(ctx, msgs, handle)

		streams, err := c.client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: c.group, Consumer: c.name, Streams: []string{c.stream, ">"}, Count: c.batch, Block: c.block,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return c.stopped(ctx, fmt.Errorf("redisconsumer: XREADGROUP %s: %w", c.stream, err))
		}
		for _, s := range streams {
			c.handleAll(ctx, s.Messages, handle)
		}
	}
	return nil
}

// stopped returns nil when err comes from ctx ending, else err.
func (c *Consumer) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *Consumer) handleAll(ctx context.Context, msgs []redis.XMessage, handle Handler) {
	for _, m := range msgs {
		if ctx.Err() != nil {
			return
		}
		e, err := redisstream.Decode(m.Values)
		if err != nil {
			c.log.Error("redisconsumer: malformed entry acknowledged and skipped", "stream", c.stream, "entry", m.ID, "error", err)
			c.ack(ctx, m.ID)
			continue
		}
		e.Topic = c.stream
		if err := handle(ctx, e); err != nil {
			c.log.Warn("redisconsumer: handler failed; the entry stays pending", "stream", c.stream, "entry", m.ID, "event_id", e.ID, "error", err)
			continue
		}
		c.ack(ctx, m.ID)
	}
}

// ack acknowledges an entry. A failed XACK leaves it pending, so it is
// delivered again: the inbox skips it then.
func (c *Consumer) ack(ctx context.Context, id string) {
	if err := c.client.XAck(ctx, c.stream, c.group, id).Err(); err != nil {
		c.log.Warn("redisconsumer: XACK failed; the entry will be delivered again", "stream", c.stream, "entry", id, "error", err)
	}
}
