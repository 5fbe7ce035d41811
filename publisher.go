package outbox

import "context"

// Publisher sends events to a broker. The redisstream, kafka and natsjs
// packages implement it.
//
// Publish returns nil only when the broker acknowledged every event. For a
// partial failure it returns a *PublishError naming the events that were
// not acknowledged; any other error means none of them counts as
// acknowledged. An outcome it cannot know (a timeout after sending) is a
// failure, never an acknowledgement. Events of one aggregate must reach the
// broker in the order of the slice; an event that fails before it is sent
// holds back the later events of its aggregate in the batch (report them
// with ErrHeldBack); BatchErrors does both for a publisher. Mark errors
// that retrying cannot fix with Permanent, and per-event errors that the
// broker or the connection caused (not the event) with Unavailable.
type Publisher interface {
	Publish(ctx context.Context, events []*Event) error
}

// PublisherFunc adapts a function to the Publisher interface.
type PublisherFunc func(ctx context.Context, events []*Event) error

// Publish calls f(ctx, events).
func (f PublisherFunc) Publish(ctx context.Context, events []*Event) error { return f(ctx, events) }

// Noop is a Publisher that acknowledges every event without sending it
// anywhere: a relay over it marks the whole backlog synced.
type Noop struct{}

// Publish acknowledges events without sending them.
func (Noop) Publish(context.Context, []*Event) error { return nil }

// Pinger is implemented by a Publisher that can check its broker cheaply
// (a Redis PING, a Kafka metadata request). The circuit breaker probes
// with it; without it, a probe is a batch of one event.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Headers added to the copy of a buried event published to the
// dead-letter topic (WithDeadLetterTopic).
const (
	HeaderDeadError = "outbox-dead-error" // the error that buried the event
	HeaderDeadTopic = "outbox-dead-topic" // the topic the event was meant for
)
