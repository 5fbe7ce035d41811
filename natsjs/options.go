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

// Option configures New. Options only record their values; New checks
// them all and returns an error wrapping outbox.ErrInvalidConfig that
// names the option and its limit for the first one out of range.
type Option func(*config)

type config struct {
	subject    func(*outbox.Event) string
	ackTimeout time.Duration
	maxPending int
}

// newConfig applies opts to the defaults and checks the result.
func newConfig(opts []Option) (config, error) {
	c := config{subject: SubjectByTopic}
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	if c.ackTimeout == 0 {
		c.ackTimeout = DefaultAckTimeout
	}
	if c.maxPending == 0 {
		c.maxPending = DefaultMaxPending
	}
	switch {
	case c.subject == nil:
		return config{}, invalid("WithSubject: the subject function is nil")
	case c.ackTimeout < MinAckTimeout:
		return config{}, invalid("WithAckTimeout: %v is shorter than MinAckTimeout (%v)", c.ackTimeout, MinAckTimeout)
	case c.maxPending < 1:
		return config{}, invalid("WithMaxPending: %d is not positive", c.maxPending)
	}
	return c, nil
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
// to subjects of one stream. Defaults to SubjectByTopic; a nil f is
// refused by New.
func WithSubject(f func(*outbox.Event) string) Option {
	return func(c *config) { c.subject = f }
}

// WithAckTimeout bounds the wait for each message's acknowledgement; a
// message not acknowledged in time counts as failed (its outcome is
// unknown, and JetStream's duplicate window drops it if the relay's retry
// finds it stored). Publish also stops waiting when its ctx ends.
// Defaults to DefaultAckTimeout (5s), also when d is 0; New refuses a d
// shorter than MinAckTimeout (10ms).
func WithAckTimeout(d time.Duration) Option {
	return func(c *config) { c.ackTimeout = d }
}

// WithMaxPending sets how many messages may be in flight at once across
// all Publish calls of the Publisher; a Publish beyond it waits for
// acknowledgements. Defaults to DefaultMaxPending (10,000), also when n
// is 0; New refuses a negative n.
func WithMaxPending(n int) Option {
	return func(c *config) { c.maxPending = n }
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("natsjs: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}
