package natsjs

import (
	"fmt"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// Defaults and limits of the options.
const (
	// DefaultAckTimeout is how long Publish waits for JetStream to
	// acknowledge one message before it counts the message as failed.
	DefaultAckTimeout = 5 * time.Second
	// MinAckTimeout is the shortest WithAckTimeout accepts.
	MinAckTimeout = 10 * time.Millisecond
	// DefaultMaxPending is how many messages one Publisher may have in
	// flight, unacknowledged, at once: the relay's largest batch.
	DefaultMaxPending = 10_000
)

// Option configures New.
type Option func(*config) error

type config struct {
	subject    func(*outbox.Event) string
	ackTimeout time.Duration
	maxPending int
}

func defaultConfig() config {
	return config{subject: SubjectByTopic, ackTimeout: DefaultAckTimeout, maxPending: DefaultMaxPending}
}

// SubjectByTopic is the default subject mapping: an event is published on
// the subject that is its Topic ("inventory.events").
func SubjectByTopic(e *outbox.Event) string { return e.Topic }

// SubjectByAggregate publishes an event on "<topic>.<aggregate>", one
// subject per aggregate, so a consumer can filter on one aggregate
// ("inventory.events.sku-42") or on all of them ("inventory.events.*").
// The stream must then capture "<topic>.*". The aggregate becomes one
// subject token: bytes a token cannot hold ('.', '*', '>', '%', space and
// other control or non-ASCII bytes) are percent-encoded ("a.b" becomes
// "a%2Eb"), an empty aggregate ID becomes "_" and an aggregate ID of "_"
// becomes "%5F". The aggregate_id header always carries the ID unchanged.
func SubjectByAggregate(e *outbox.Event) string {
	return e.Topic + "." + AggregateToken(e.AggregateID)
}

// AggregateToken returns the subject token SubjectByAggregate uses for an
// aggregate ID.
func AggregateToken(aggregateID string) string {
	switch aggregateID {
	case "":
		return "_"
	case "_":
		return "%5F"
	}
	var b strings.Builder
	for i := 0; i < len(aggregateID); i++ {
		c := aggregateID[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// WithSubject sets the function that names the subject an event is
// published on. It is called once per event and Publish, so it must be
// fast and deterministic. An event it maps to an invalid subject ("",
// whitespace, an empty token, a wildcard) is not published and fails
// permanently. Order holds per stream, so an aggregate's events must map
// to subjects of one stream. Defaults to SubjectByTopic.
func WithSubject(f func(*outbox.Event) string) Option {
	return func(c *config) error {
		if f == nil {
			return invalid("WithSubject: the subject function is nil")
		}
		c.subject = f
		return nil
	}
}

// WithAckTimeout bounds the wait for each message's acknowledgement; a
// message not acknowledged in time counts as failed (its outcome is
// unknown, and JetStream's duplicate window drops it if the relay's retry
// finds it stored). At least MinAckTimeout. Defaults to DefaultAckTimeout.
// Publish also stops waiting when its ctx ends.
func WithAckTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d < MinAckTimeout {
			return invalid("WithAckTimeout: %v is shorter than the minimum %v", d, MinAckTimeout)
		}
		c.ackTimeout = d
		return nil
	}
}

// WithMaxPending sets how many messages may be in flight at once across
// all Publish calls of the Publisher; a Publish beyond it waits for
// acknowledgements. At least 1. Defaults to DefaultMaxPending.
func WithMaxPending(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return invalid("WithMaxPending: %d; it must be at least 1", n)
		}
		c.maxPending = n
		return nil
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("natsjs: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}
