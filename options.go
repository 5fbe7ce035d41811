package outbox

import (
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"
)

// Defaults and limits of the options. A zero or unset option takes its
// default.
const (
	DefaultInterval = 10 * time.Second // WithInterval
	MinInterval     = time.Millisecond

	DefaultBatchSize = 100 // WithBatchSize
	MaxBatchSize     = 10000

	DefaultTimeout = 30 * time.Second // WithTimeout
	MinTimeout     = 10 * time.Millisecond

	DefaultMaxAttempts = 20 // WithMaxAttempts

	DefaultBackoffMin = time.Second     // WithBackoff
	DefaultBackoffMax = 5 * time.Minute // WithBackoff
	MaxBackoff        = 24 * time.Hour  // the longest WithBackoff accepts

	DefaultMaxPayloadBytes = 1 << 20 // WithMaxPayloadBytes

	DefaultBreakerThreshold = 3                      // WithBreaker; -1 disables the breaker
	DefaultProbeMin         = 100 * time.Millisecond // WithBreaker
	DefaultProbeMax         = 5 * time.Second        // WithBreaker
	MaxProbe                = time.Hour              // the longest probe delay WithBreaker accepts
)

// Option configures New.
type Option func(*config)

type config struct {
	interval    time.Duration
	batchSize   int
	timeout     time.Duration
	lease       time.Duration
	maxAttempts int
	backoffMin  time.Duration
	backoffMax  time.Duration
	maxPayload  int
	logger      *slog.Logger

	unordered bool // per-aggregate order off
	skipDead  bool // a dead event does not hold its aggregate

	breakerThreshold int
	probeMin         time.Duration
	probeMax         time.Duration

	deadLetterTopic string
	retention       time.Duration

	hooks   hooks
	hookErr error
}

// WithHooks adds hooks that observe the outbox: values implementing any
// of SaveHook, PublishHook, BreakerHook and DeadHook (a metrics or a
// tracing adapter, say). A value implementing none is a construction
// error.
func WithHooks(hs ...any) Option {
	return func(c *config) {
		for _, h := range hs {
			if err := c.hooks.add(h); err != nil && c.hookErr == nil {
				c.hookErr = err
			}
		}
	}
}

// WithInterval sets how often the relay looks for due events when nothing
// wakes it sooner. Defaults to DefaultInterval (10s); at least MinInterval.
func WithInterval(d time.Duration) Option { return func(c *config) { c.interval = d } }

// WithBatchSize sets how many events one relay pass claims and publishes.
// Defaults to DefaultBatchSize (100); at most MaxBatchSize.
func WithBatchSize(n int) Option { return func(c *config) { c.batchSize = n } }

// WithTimeout bounds one relay pass (claim, publish, mark) and one
// immediate publication. Defaults to DefaultTimeout (30s); at least
// MinTimeout.
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithLease sets how long a claim holds its events before another relay
// may take them (the crash-recovery delay). It must be longer than the
// timeout. Defaults to twice the timeout.
func WithLease(d time.Duration) Option { return func(c *config) { c.lease = d } }

// WithMaxAttempts sets after how many failed attempts an event is buried.
// Defaults to DefaultMaxAttempts (20).
func WithMaxAttempts(n int) Option { return func(c *config) { c.maxAttempts = n } }

// WithBackoff sets the delay before the first retry and its cap. The delay
// doubles with each attempt, with jitter. Defaults to DefaultBackoffMin
// (1s) and DefaultBackoffMax (5m).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = min, max }
}

// WithMaxPayloadBytes sets the largest payload Save accepts. Defaults to
// DefaultMaxPayloadBytes (1 MiB).
func WithMaxPayloadBytes(n int) Option { return func(c *config) { c.maxPayload = n } }

// WithLogger sets where the outbox logs. Defaults to discarding logs.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithPerAggregateOrder switches per-aggregate order on or off. When on,
// the default, events with the same aggregate ID reach the broker in the
// order they were saved, and a failing event holds back the later events
// of its aggregate (only those). Off, any due event may be claimed by any
// relay, for throughput when consumers do not care about order.
func WithPerAggregateOrder(on bool) Option { return func(c *config) { c.unordered = !on } }

// WithSkipDead says what a dead event does to the later events of its
// aggregate: with skip false, the default, it holds them until it is
// re-queued, so order is never broken; with skip true they go past it.
func WithSkipDead(skip bool) Option { return func(c *config) { c.skipDead = skip } }

// WithBreaker configures the circuit breaker around the publisher. After
// threshold passes in a row in which the broker failed a whole batch
// (unreachable, timed out), the relay stops sending and probes the broker,
// first after probeMin, doubling up to probeMax, with the publisher's Ping
// if it has one (see Pinger) or else with a batch of one event. The first
// successful probe closes the breaker and the backlog drains at full speed.
// Defaults to DefaultBreakerThreshold (3), DefaultProbeMin (100ms) and
// DefaultProbeMax (5s); a threshold of -1 disables the breaker.
func WithBreaker(threshold int, probeMin, probeMax time.Duration) Option {
	return func(c *config) { c.breakerThreshold, c.probeMin, c.probeMax = threshold, probeMin, probeMax }
}

// WithDeadLetterTopic makes the relay publish a copy of each event it
// buries to topic before burying it, with the headers HeaderDeadError and
// HeaderDeadTopic added. If that copy cannot be published, the event is
// not buried yet but retried later. Defaults to no dead-letter topic.
func WithDeadLetterTopic(topic string) Option { return func(c *config) { c.deadLetterTopic = topic } }

// WithRetention makes Run delete events synced longer than age ago, once a
// minute, in batches of the batch size so the table is never
// locked for long. The store must implement storage.Purger. Defaults to 0: synced
// events are kept, and the table doubles as an audit log.
func WithRetention(age time.Duration) Option { return func(c *config) { c.retention = age } }

func newConfig(opts []Option) (config, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.interval, DefaultInterval)
	def(&c.timeout, DefaultTimeout)
	def(&c.lease, 2*c.timeout)
	def(&c.backoffMin, DefaultBackoffMin)
	def(&c.backoffMax, DefaultBackoffMax)
	if c.batchSize == 0 {
		c.batchSize = DefaultBatchSize
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxPayload == 0 {
		c.maxPayload = DefaultMaxPayloadBytes
	}
	if c.breakerThreshold == 0 {
		c.breakerThreshold = DefaultBreakerThreshold
	}
	def(&c.probeMin, DefaultProbeMin)
	def(&c.probeMax, DefaultProbeMax)
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}

	bad := func(format string, args ...any) (config, error) {
		return config{}, fmt.Errorf("outbox: %w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.interval < MinInterval:
		return bad("Interval %v is shorter than MinInterval (%v)", c.interval, MinInterval)
	case c.batchSize < 1 || c.batchSize > MaxBatchSize:
		return bad("BatchSize %d is outside 1..%d", c.batchSize, MaxBatchSize)
	case c.timeout < MinTimeout:
		return bad("Timeout %v is shorter than MinTimeout (%v)", c.timeout, MinTimeout)
	case c.lease <= c.timeout:
		return bad("Lease %v must be longer than Timeout (%v)", c.lease, c.timeout)
	case c.maxAttempts < 1:
		return bad("MaxAttempts %d must be at least 1", c.maxAttempts)
	case c.backoffMin < 0 || c.backoffMax < c.backoffMin || c.backoffMax > MaxBackoff:
		return bad("Backoff %v..%v is not a range of non-negative durations up to MaxBackoff (%v)", c.backoffMin, c.backoffMax, MaxBackoff)
	case c.maxPayload < 0:
		return bad("MaxPayloadBytes %d is negative", c.maxPayload)
	case c.breakerThreshold < -1:
		return bad("BreakerThreshold %d must be positive, or -1 to disable", c.breakerThreshold)
	case c.probeMin <= 0 || c.probeMax < c.probeMin || c.probeMax > MaxProbe:
		return bad("Breaker probe delays %v..%v are not a range of positive durations up to MaxProbe (%v)", c.probeMin, c.probeMax, MaxProbe)
	case c.hookErr != nil:
		return config{}, c.hookErr
	case c.retention < 0:
		return bad("Retention %v is negative", c.retention)
	case c.deadLetterTopic != "" && (len(c.deadLetterTopic) > MaxNameLength || !utf8.ValidString(c.deadLetterTopic)):
		return bad("DeadLetterTopic must be valid UTF-8 of at most %d bytes", MaxNameLength)
	}
	return c, nil
}
