package outbox

import (
	"context"
	"fmt"
	"time"
)

// Hooks observe the outbox as data, so that metrics and tracing live
// outside this package (see WithHooks). A hook implements any of SaveHook,
// PublishHook, BreakerHook and AlertHook. Hooks run on the goroutine that
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
	Events    []*Event
	Immediate bool // published right after commit, not by the relay
}

// PublishDone describes a published batch.
type PublishDone struct {
	Events    []*Event
	Immediate bool
	Duration  time.Duration    // spent in Publisher.Publish
	AckedAt   time.Time        // when the publisher returned
	Failed    map[string]error // events not acknowledged, by ID; the rest were
	Buried    []string         // IDs of the events buried now
	BrokerErr error            // set when the broker failed the whole batch
}

// BreakerHook is told when the circuit breaker opens or closes.
type BreakerHook interface {
	BreakerChanged(ctx context.Context, s BreakerState)
}

// AlertHook is told when a threshold of WithAlerts is crossed, and again
// when it clears.
type AlertHook interface {
	Alert(ctx context.Context, a Alert)
}

// Alert is a change of an alert's state.
type Alert struct {
	Firing bool   // crossed (true) or cleared (false)
	Reason string // which threshold, with the figures
	Stats  Stats  // what the store reported
}

// Stats are the figures operators watch. A Store that can compute them
// implements StatsReader.
type Stats struct {
	Pending          int64            // committed, not yet acknowledged, not buried
	PendingByType    map[string]int64 // Pending by event type
	OldestPendingAge time.Duration    // age of the oldest pending event; 0 with none
	Dead             int64            // buried events
	Synced           int64            // events acknowledged within the window asked for
	AvgSyncLatency   time.Duration    // mean created → synced within the window
	P99SyncLatency   time.Duration    // 99th percentile of the same
}

// StatsReader is implemented by a Store that computes Stats. window bounds
// Synced and the latencies to events synced in the last window.
type StatsReader interface {
	Stats(ctx context.Context, window time.Duration) (Stats, error)
}

type hooks struct {
	save    []SaveHook
	publish []PublishHook
	breaker []BreakerHook
	alert   []AlertHook
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
	if x, is := v.(AlertHook); is {
		h.alert, ok = append(h.alert, x), true
	}
	if !ok {
		return fmt.Errorf("%w: hook %T implements none of SaveHook, PublishHook, BreakerHook, AlertHook", ErrInvalidConfig, v)
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
