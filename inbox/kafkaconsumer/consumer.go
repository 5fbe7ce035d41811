// Package kafkaconsumer reads events that the kafka package published
// back through a sarama consumer group, and marks a record's offset only
// after the handler returned nil. Delivery is at least once (a rebalance
// or crash redelivers records after the last committed offset); run the
// handler through inbox.Handle to process each event once.
package kafkaconsumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/IBM/sarama"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
)

// Defaults of the options.
const (
	DefaultRetryMin = 100 * time.Millisecond // first wait before a failed handler is called again
	DefaultRetryMax = 5 * time.Second        // longest wait between two calls
)

// Handler processes one event. An error makes Run call it again for the
// same record, with backoff, holding back the partition's later records,
// so a partition (and so an aggregate) is processed in order.
type Handler func(ctx context.Context, e *outbox.Event) error

// Option configures New.
type Option func(*Consumer)

// WithRetry sets the backoff between calls of a failing handler: it
// doubles from min up to max. Defaults to DefaultRetryMin and
// DefaultRetryMax.
func WithRetry(min, max time.Duration) Option {
	return func(c *Consumer) { c.retryMin, c.retryMax = min, max }
}

// WithLogger sets the logger of malformed records and handler failures.
// Defaults to discarding.
func WithLogger(l *slog.Logger) Option { return func(c *Consumer) { c.log = l } }

// Consumer consumes topics as a member of a sarama consumer group.
type Consumer struct {
	group              sarama.ConsumerGroup
	topics             []string
	retryMin, retryMax time.Duration
	log                *slog.Logger
}

// New returns a Consumer of topics in group, a sarama.ConsumerGroup the
// caller owns and closes (after Run returned). It does no I/O.
func New(group sarama.ConsumerGroup, topics []string, opts ...Option) (*Consumer, error) {
	if group == nil || len(topics) == 0 {
		return nil, fmt.Errorf("kafkaconsumer: %w: a consumer group and at least one topic are required", outbox.ErrInvalidConfig)
	}
	c := &Consumer{group: group, topics: append([]string(nil), topics...), retryMin: DefaultRetryMin, retryMax: DefaultRetryMax,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		if opt != nil {
			opt(c)
		}
	}
	if c.retryMin <= 0 || c.retryMax < c.retryMin {
		return nil, fmt.Errorf("kafkaconsumer: %w: WithRetry(%v, %v): min must be positive and max at least min", outbox.ErrInvalidConfig, c.retryMin, c.retryMax)
	}
	return c, nil
}

// Run joins the group and consumes until ctx ends, rejoining after each
// rebalance; it returns nil when ctx ends, or the group's error when it
// was closed. A record that does not decode is marked and logged: no
// retry can fix it.
func (c *Consumer) Run(ctx context.Context, handle Handler) error {
	h := &groupHandler{c: c, handle: handle}
	for {
		err := c.group.Consume(ctx, c.topics, h)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			return fmt.Errorf("kafkaconsumer: %w", err)
		}
		if err != nil {
			c.log.Warn("kafkaconsumer: consume failed; rejoining", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(c.retryMin):
			}
		}
	}
}

type groupHandler struct {
	c      *Consumer
	handle Handler
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !h.process(ctx, msg) {
				return nil // the session ended while the handler failed
			}
			sess.MarkMessage(msg, "")
		}
	}
}

// process handles one record, calling the handler until it succeeds; it
// reports false when ctx ended first.
func (h *groupHandler) process(ctx context.Context, msg *sarama.ConsumerMessage) bool {
	e, err := kafka.Decode(msg)
	if err != nil {
		h.c.log.Error("kafkaconsumer: malformed record marked and skipped", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset, "error", err)
		return true
	}
	wait := h.c.retryMin
	for {
		err := h.handle(ctx, e)
		if err == nil {
			return true
		}
		h.c.log.Warn("kafkaconsumer: handler failed; retrying", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset, "event_id", e.ID, "error", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, h.c.retryMax)
	}
}
