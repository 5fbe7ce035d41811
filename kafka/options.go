package kafka

import (
	"fmt"

	"github.com/eventsync/outbox"
)

// Option configures New, NewFromClient and NewFromProducer. Options only
// record their values; the constructor checks them all and returns an
// error wrapping outbox.ErrInvalidConfig that names the option and its
// limit for the first one out of range.
type Option func(*options)

type options struct {
	topic           func(*outbox.Event) string
	maxMessageBytes int
	lazy            bool
}

// WithTopic sets how an event's Kafka topic is chosen. Defaults to the
// event's Topic field; a nil fn is refused. An empty result fails that
// event permanently.
func WithTopic(fn func(e *outbox.Event) string) Option {
	return func(o *options) { o.topic = fn }
}

// WithMaxMessageBytes sets the largest record (as sarama measures it: key,
// value, headers and record overhead) that Publish sends; a larger event
// fails permanently before anything is sent. Defaults to the config's
// Producer.MaxMessageBytes for New and NewFromClient, and to
// DefaultMaxMessageBytes (1 MiB) for NewFromProducer, whose config the
// publisher cannot see; zero means the default. A negative n is refused,
// and so, for New and NewFromClient, is an n over the config's
// Producer.MaxMessageBytes, which sarama enforces anyway.
func WithMaxMessageBytes(n int) Option {
	return func(o *options) { o.maxMessageBytes = n }
}

// WithLazyConnect makes New return without contacting the cluster; the
// first Publish connects, and every Publish tries again while connecting
// fails (the events stay pending meanwhile). Use it so that a service can
// start while Kafka is down. Defaults to off: New connects at once and
// returns the error if it cannot.
func WithLazyConnect() Option {
	return func(o *options) { o.lazy = true }
}

// newOptions applies opts to the defaults and checks the result. limit is
// the producer's Producer.MaxMessageBytes, or 0 when it is not known.
func newOptions(opts []Option, limit int) (options, error) {
	o := options{topic: func(e *outbox.Event) string { return e.Topic }}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	switch {
	case o.topic == nil:
		return options{}, invalid("WithTopic: the topic function is nil")
	case o.maxMessageBytes < 0:
		return options{}, invalid("WithMaxMessageBytes: %d is negative", o.maxMessageBytes)
	case limit > 0 && o.maxMessageBytes > limit:
		return options{}, invalid("WithMaxMessageBytes: %d is over the config's Producer.MaxMessageBytes (%d)", o.maxMessageBytes, limit)
	}
	return o, nil
}

// invalid returns a configuration error: "kafka: invalid configuration: ...".
func invalid(format string, args ...any) error {
	return fmt.Errorf("kafka: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}
