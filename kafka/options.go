package kafka

import "github.com/eventsync/outbox"

// Option configures New, NewFromClient and NewFromProducer.
type Option func(*options)

type options struct {
	topic           func(*outbox.Event) string
	maxMessageBytes int
	lazy            bool
}

// WithTopic sets how an event's Kafka topic is chosen. Defaults to the
// event's Topic field. An empty result fails that event permanently.
func WithTopic(fn func(e *outbox.Event) string) Option {
	return func(o *options) { o.topic = fn }
}

// WithMaxMessageBytes sets the largest record (as sarama measures it: key,
// value, headers and record overhead) that Publish sends; a larger event
// fails permanently before anything is sent. Defaults to the config's
// Producer.MaxMessageBytes for New and NewFromClient, and to
// DefaultMaxMessageBytes for NewFromProducer, whose config the publisher
// cannot see.
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

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.topic == nil {
		o.topic = func(e *outbox.Event) string { return e.Topic }
	}
	return o
}
