package redisstream

import (
	"fmt"

	"github.com/eventsync/outbox"
)

// DefaultMaxLen is the default of WithMaxLen: streams are not trimmed.
const DefaultMaxLen int64 = 0

// Option configures New.
type Option func(*config) error

type config struct {
	stream    func(*outbox.Event) string
	maxLen    int64
	codec     Codec       // "" for none (WithCompression)
	threshold int         // compress payloads longer than this
	dedup     dedupConfig // WithIdempotence, WithDedupKeyPrefix
}

func defaultConfig() config {
	return config{stream: StreamByTopic, maxLen: DefaultMaxLen, dedup: dedupConfig{prefix: DefaultDedupKeyPrefix}}
}

// StreamByTopic is the default stream mapping: an event goes to the stream
// whose key is its Topic.
func StreamByTopic(e *outbox.Event) string { return e.Topic }

// WithStream sets the function that names the stream key an event is added
// to. It is called once per event and per Publish, so it must be fast and
// deterministic; an event it maps to "" is not published and is reported as
// a permanent failure. Order is kept within a stream only, so events whose
// relative order matters (those of one aggregate) must map to the same
// key. Defaults to StreamByTopic.
func WithStream(f func(*outbox.Event) string) Option {
	return func(c *config) error {
		if f == nil {
			return invalid("WithStream: the stream function is nil")
		}
		c.stream = f
		return nil
	}
}

// WithMaxLen caps every stream the publisher writes at about n entries:
// each XADD carries MAXLEN ~ n, so Redis trims whole macro nodes of the
// oldest entries and a stream may hold somewhat more than n. Zero disables
// trimming; a negative n is refused by New. Defaults to DefaultMaxLen (0,
// no trimming).
func WithMaxLen(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return invalid("WithMaxLen: MaxLen is %d; it must be 0 (no trimming) or positive", n)
		}
		c.maxLen = n
		return nil
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("redisstream: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}
