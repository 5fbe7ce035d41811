package outboxprom

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the options.
var (
	// DefaultPublishBuckets are the buckets of
	// outbox_publish_duration_seconds (WithPublishBuckets): 1 ms to 10 s.
	DefaultPublishBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	// DefaultLagBuckets are the buckets of outbox_sync_lag_seconds
	// (WithLagBuckets): 5 ms to 1 h, since a backlog is measured in
	// minutes.
	DefaultLagBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	// DefaultBatchBuckets are the buckets of outbox_relay_batch_size
	// (WithBatchBuckets), up to outbox.MaxBatchSize.
	DefaultBatchBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}
)

// Defaults of the StatsCollector options.
const (
	DefaultStatsTimeout  = 5 * time.Second  // WithStatsTimeout
	DefaultStatsCacheFor = 10 * time.Second // WithStatsCacheFor
	DefaultStatsWindow   = 5 * time.Minute  // WithStatsWindow
)

// Option configures New and NewStatsCollector. Each option says which of
// them it applies to; the other ignores it.
type Option func(*config)

type config struct {
	constLabels    prometheus.Labels
	publishBuckets []float64
	lagBuckets     []float64
	batchBuckets   []float64
	timeout        time.Duration
	cacheFor       time.Duration
	window         time.Duration
	now            func() time.Time
}

func newConfig(opts []Option) config {
	c := config{
		publishBuckets: DefaultPublishBuckets,
		lagBuckets:     DefaultLagBuckets,
		batchBuckets:   DefaultBatchBuckets,
		timeout:        DefaultStatsTimeout,
		cacheFor:       DefaultStatsCacheFor,
		window:         DefaultStatsWindow,
		now:            time.Now,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// WithConstLabels adds labels with fixed values to every metric, to tell
// apart several outboxes of one process (by table, say). Both New and
// NewStatsCollector. Defaults to none.
func WithConstLabels(l prometheus.Labels) Option {
	return func(c *config) { c.constLabels = l }
}

// WithPublishBuckets sets the buckets of outbox_publish_duration_seconds
// (New). Defaults to DefaultPublishBuckets; nil keeps the default.
func WithPublishBuckets(b []float64) Option {
	return func(c *config) {
		if b != nil {
			c.publishBuckets = b
		}
	}
}

// WithLagBuckets sets the buckets of outbox_sync_lag_seconds (New).
// Defaults to DefaultLagBuckets; nil keeps the default.
func WithLagBuckets(b []float64) Option {
	return func(c *config) {
		if b != nil {
			c.lagBuckets = b
		}
	}
}

// WithBatchBuckets sets the buckets of outbox_relay_batch_size (New).
// Defaults to DefaultBatchBuckets; nil keeps the default.
func WithBatchBuckets(b []float64) Option {
	return func(c *config) {
		if b != nil {
			c.batchBuckets = b
		}
	}
}

// WithStatsTimeout bounds one read of the store's figures
// (NewStatsCollector). Defaults to DefaultStatsTimeout (5s); zero or less
// keeps the default.
func WithStatsTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithStatsCacheFor sets how long a read of the store's figures answers
// scrapes before the next scrape reads again (NewStatsCollector). However
// many scrapers there are, the store is read at most once per period.
// Defaults to DefaultStatsCacheFor (10s); a negative value reads on every
// scrape (still one read at a time).
func WithStatsCacheFor(d time.Duration) Option {
	return func(c *config) {
		if d != 0 {
			c.cacheFor = max(d, 0)
		}
	}
}

// WithStatsWindow sets the window of the sync figures:
// outbox_events_synced_window and the latency gauges cover events synced
// within the last d (NewStatsCollector). Defaults to DefaultStatsWindow
// (5m); zero or less keeps the default.
func WithStatsWindow(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.window = d
		}
	}
}
