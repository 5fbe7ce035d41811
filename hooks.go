package outbox

import (
	"context"
	"fmt"
	"time"
)

// Hooks observe the outbox as data, so that metrics and tracing live
// outside this package (see WithHooks). A hook implements any of SaveHook,
// PublishHook, BreakerHook and DeadHook. Hooks run on the goroutine that
// does the work: keep them fast and never block.

// SaveHook is called by Save after validation, before the insert. It may
// add headers to the events (trace context, say).
type SaveHook interface {
	BeforeSave(ctx context.Context, events []*Event)
}

// PublishHook brackets every publication of a batch, by the relay or right
// after commit.
type PublishHook interface {
	// BeforePublish returns the context the publisher is given (one that
	// carries a span, say).
	BeforePublish(ctx context.Context, b PublishStart) context.Context
	// AfterPublish is told the outcome, once it has been recorded, with
	// the context BeforePublish returned (it may have ended by then).
	AfterPublish(ctx context.Context, r PublishDone)
}

// PublishStart describes a batch about to be published.
type PublishStart struct {
	Events    []*Event // the batch, in the order it is published
	Immediate bool     // published right after commit, not by the relay
}

// PublishDone describes a published batch.
type PublishDone struct {
	Events    []*Event         // the batch, as PublishStart had it
	Immediate bool             // published right after commit, not by the relay
	Duration  time.Duration    // spent in Publisher.Publish
	AckedAt   time.Time        // when the publisher returned
	Failed    map[string]error // events not acknowledged, by ID; the rest were
	Dead      []string         // IDs of the events that this batch made dead
	BrokerErr error            // set when the broker failed the whole batch
}

// BreakerHook is told when the circuit breaker opens or closes.
type BreakerHook interface {
	BreakerChanged(ctx context.Context, s BreakerState)
}

// DeadHook is told of each event the relay made dead (buried), with the
// error that did it, once that is recorded in the store.
type DeadHook interface {
	EventDead(ctx context.Context, e *Event, err error)
}

type hooks struct {
	save    []SaveHook
	publish []PublishHook
	breaker []BreakerHook
	dead    []DeadHook
}

func (h *hooks) add(v any) error {
	ok := false
	if x, is := v.(SaveHook); is {
		h.save, ok = append(h.save, x), true
	}
	if x, is := v.(PublishHook); is {
		h.publish, ok = append(h.publish, x), true
	}
	if x, is := v.(BreakerHook); is {
		h.breaker, ok = append(h.breaker, x), true
	}
	if x, is := v.(DeadHook); is {
		h.dead, ok = append(h.dead, x), true
	}
	if !ok {
		return fmt.Errorf("outbox: %w: hook %T implements none of SaveHook, PublishHook, BreakerHook, DeadHook", ErrInvalidConfig, v)
	}
	return nil
}

func (h *hooks) beforePublish(ctx context.Context, events []*Event, immediate bool) context.Context {
	for _, x := range h.publish {
		ctx = x.BeforePublish(ctx, PublishStart{Events: events, Immediate: immediate})
	}
	return ctx
}

func (h *hooks) afterPublish(ctx context.Context, d PublishDone) {
	for _, x := range h.publish {
		x.AfterPublish(ctx, d)
	}
}

func (h *hooks) breakerChanged(ctx context.Context, s BreakerState) {
	for _, x := range h.breaker {
		x.BreakerChanged(ctx, s)
	}
}

func (h *hooks) eventDead(ctx context.Context, e *Event, err error) {
	for _, x := range h.dead {
		x.EventDead(ctx, e, err)
	}
}
