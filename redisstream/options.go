package redisstream

import (
	"fmt"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// Option configures New. Options only record their values; New checks
// them all and returns an error wrapping outbox.ErrInvalidConfig that
// names the option and its limit for the first one out of range.
type Option func(*config)

type config struct {
	stream    func(*outbox.Event) string
	maxLen    int64
	compress  bool        // WithCompression was given
	codec     Codec       // WithCompression's codec
	threshold int         // compress payloads longer than this
	dedup     dedupConfig // WithIdempotence, WithDedupKeyPrefix
	wait      waitConfig  // WithWaitReplicas
}

// newConfig applies opts to the defaults and checks the result.
func newConfig(opts []Option) (config, error) {
	c := config{stream: StreamByTopic, dedup: dedupConfig{prefix: DefaultDedupKeyPrefix}}
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	if c.compress && c.threshold == 0 {
		c.threshold = DefaultCompressionThreshold
	}
	if c.dedup.on && c.dedup.window == 0 {
		c.dedup.window = DefaultDedupWindow
	}
	switch {
	case c.stream == nil:
		return config{}, invalid("WithStream: the stream function is nil")
	case c.maxLen < 0:
		return config{}, invalid("WithMaxLen: MaxLen is %d; it must be 0 (no trimming) or positive", c.maxLen)
	case c.compress && c.codec != Gzip && c.codec != Zstd:
		return config{}, invalid("WithCompression: unknown codec %q (want %q or %q)", c.codec, Gzip, Zstd)
	case c.compress && c.threshold < 0:
		return config{}, invalid("WithCompression: threshold %d is negative", c.threshold)
	case c.dedup.on && c.dedup.window < MinDedupWindow:
		return config{}, invalid("WithIdempotence: window %v is shorter than MinDedupWindow (%v)", c.dedup.window, MinDedupWindow)
	case c.dedup.prefix == "" || strings.ContainsAny(c.dedup.prefix, "{}"):
		return config{}, invalid("WithDedupKeyPrefix: %q must be non-empty and hold no '{' or '}'", c.dedup.prefix)
	case c.wait.on && c.wait.n < 1:
		return config{}, invalid("WithWaitReplicas: n is %d; it must be at least 1", c.wait.n)
	case c.wait.on && c.wait.timeout < time.Millisecond:
		return config{}, invalid("WithWaitReplicas: timeout %v is shorter than 1ms", c.wait.timeout)
	}
	return c, nil
}

// StreamByTopic is the default stream mapping: an event goes to the stream
// whose key is its Topic.
func StreamByTopic(e *outbox.Event) string { return e.Topic }

// WithStream sets the function that names the stream key an event is added
// to. It is called once per event and per Publish, so it must be fast and
// deterministic; an event it maps to "" is not published and is reported as
// a permanent failure. Order is kept within a stream only, so events whose
// relative order matters (those of one aggregate) must map to the same
// key. Defaults to StreamByTopic; a nil f is refused by New.
func WithStream(f func(*outbox.Event) string) Option {
	return func(c *config) { c.stream = f }
}

// WithMaxLen caps every stream the publisher writes at about n entries:
// each XADD carries MAXLEN ~ n, so Redis trims whole macro nodes of the
// oldest entries and a stream may hold somewhat more than n. Zero means
// no trimming, the default: streams grow until something else trims
// them. A negative n is refused by New.
func WithMaxLen(n int64) Option {
	return func(c *config) { c.maxLen = n }
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("redisstream: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}
