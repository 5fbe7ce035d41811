package outboxprom

import (
	"fmt"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/outbox"
)

// Defaults of the bucket options. An unset or empty bucket option takes
// its default.
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

// Defaults and sentinels of the StatsCollector options. A zero or unset
// option takes its default.
const (
	DefaultStatsTimeout  = 5 * time.Second  // WithStatsTimeout
	DefaultStatsCacheFor = 10 * time.Second // WithStatsCacheFor
	DefaultStatsWindow   = 5 * time.Minute  // WithStatsWindow

	// NoStatsCache, passed to WithStatsCacheFor, has every scrape read the
	// store (still one read at a time).
	NoStatsCache time.Duration = -1
)

// Option configures New and NewStatsCollector. Each option says which of
// them it applies to; given to the other, it is a construction error.
type Option func(*config)

// The constructors an option applies to.
type target int

const (
	forMetrics target = 1 << iota // New
	forStats                      // NewStatsCollector
)

var constructorName = map[target]string{forMetrics: "New", forStats: "NewStatsCollector"}

type config struct {
	ctor target // the constructor being configured

	constLabels    prometheus.Labels
	publishBuckets []float64
	lagBuckets     []float64
	batchBuckets   []float64
	timeout        time.Duration
	cacheFor       time.Duration
	window         time.Duration
	now            func() time.Time

	misplaced error // the first option given to a constructor it does not apply to
}

// option returns the Option named name that applies to the constructors
// in to and sets what set sets.
func option(name string, to target, set func(*config)) Option {
	return func(c *config) {
		if to&c.ctor == 0 {
			if c.misplaced == nil {
				c.misplaced = invalid("%s is an option of %s, not of %s", name, constructorName[to], constructorName[c.ctor])
			}
			return
		}
		set(c)
	}
}

// newConfig applies opts for the constructor ctor, takes the defaults and
// checks every value.
func newConfig(ctor target, opts []Option) (config, error) {
	c := config{ctor: ctor, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.misplaced != nil {
		return config{}, c.misplaced
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.timeout, DefaultStatsTimeout)
	def(&c.cacheFor, DefaultStatsCacheFor)
	def(&c.window, DefaultStatsWindow)
	for _, b := range []struct {
		name string
		v    *[]float64
		def  []float64
	}{
		{"WithPublishBuckets", &c.publishBuckets, DefaultPublishBuckets},
		{"WithLagBuckets", &c.lagBuckets, DefaultLagBuckets},
		{"WithBatchBuckets", &c.batchBuckets, DefaultBatchBuckets},
	} {
		if len(*b.v) == 0 {
			*b.v = b.def
		}
		if err := checkBuckets(b.name, *b.v); err != nil {
			return config{}, err
		}
	}
	switch {
	case c.timeout < 0:
		return config{}, invalid("WithStatsTimeout %v is negative", c.timeout)
	case c.cacheFor < 0 && c.cacheFor != NoStatsCache:
		return config{}, invalid("WithStatsCacheFor %v is negative; pass NoStatsCache to read on every scrape", c.cacheFor)
	case c.window < 0:
		return config{}, invalid("WithStatsWindow %v is negative", c.window)
	}
	if err := checkConstLabels(c.constLabels); err != nil {
		return config{}, err
	}
	return c, nil
}

// checkConstLabels checks the labels the way Prometheus will: by
// registering, in a registry of its own, a metric with those labels and
// the variable labels of this package's metrics. An error here would
// otherwise come at registration, or as a panic during a scrape.
func checkConstLabels(l prometheus.Labels) error {
	if len(l) == 0 {
		return nil
	}
	probe := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "outbox_const_labels_check", Help: "-", ConstLabels: l},
		[]string{"topic", "type", "mode"})
	if err := prometheus.NewPedanticRegistry().Register(probe); err != nil {
		return invalid("WithConstLabels %v: %v", l, err)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("outboxprom: %w: "+format, append([]any{outbox.ErrInvalidConfig}, args...)...)
}

// checkBuckets checks that b are histogram buckets: strictly increasing
// numbers, none NaN.
func checkBuckets(name string, b []float64) error {
	for i, v := range b {
		if math.IsNaN(v) || i > 0 && !(b[i-1] < v) {
			return invalid("%s %v: the buckets must be strictly increasing numbers", name, b)
		}
	}
	return nil
}

// WithConstLabels adds labels with fixed values to every metric, to tell
// apart several outboxes of one process (by table, say). Both New and
// NewStatsCollector. The names must be valid Prometheus label names other
// than topic, type and mode. Defaults to none.
func WithConstLabels(l prometheus.Labels) Option {
	return option("WithConstLabels", forMetrics|forStats, func(c *config) { c.constLabels = l })
}

// WithPublishBuckets sets the buckets of outbox_publish_duration_seconds
// (New): strictly increasing. Defaults to DefaultPublishBuckets; nil or
// empty takes the default.
func WithPublishBuckets(b []float64) Option {
	return option("WithPublishBuckets", forMetrics, func(c *config) { c.publishBuckets = b })
}

// WithLagBuckets sets the buckets of outbox_sync_lag_seconds (New):
// strictly increasing. Defaults to DefaultLagBuckets; nil or empty takes
// the default.
func WithLagBuckets(b []float64) Option {
	return option("WithLagBuckets", forMetrics, func(c *config) { c.lagBuckets = b })
}

// WithBatchBuckets sets the buckets of outbox_relay_batch_size (New):
// strictly increasing. Defaults to DefaultBatchBuckets; nil or empty
// takes the default.
func WithBatchBuckets(b []float64) Option {
	return option("WithBatchBuckets", forMetrics, func(c *config) { c.batchBuckets = b })
}

// WithStatsTimeout bounds one read of the store's figures
// (NewStatsCollector). Defaults to DefaultStatsTimeout (5s); zero takes
// the default, a negative value is refused.
func WithStatsTimeout(d time.Duration) Option {
	return option("WithStatsTimeout", forStats, func(c *config) { c.timeout = d })
}

// WithStatsCacheFor sets how long a read of the store's figures answers
// scrapes before the next scrape reads again (NewStatsCollector). However
// many scrapers there are, the store is read at most once per period.
// Defaults to DefaultStatsCacheFor (10s); zero takes the default,
// NoStatsCache reads on every scrape, any other negative value is refused.
func WithStatsCacheFor(d time.Duration) Option {
	return option("WithStatsCacheFor", forStats, func(c *config) { c.cacheFor = d })
}

// WithStatsWindow sets the window of the sync figures:
// outbox_events_synced_window and the latency gauges cover events synced
// within the last d (NewStatsCollector). Defaults to DefaultStatsWindow
// (5m); zero takes the default, a negative value is refused.
func WithStatsWindow(d time.Duration) Option {
	return option("WithStatsWindow", forStats, func(c *config) { c.window = d })
}
