package outboxprom

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/outbox"
)

// Metrics counts, for one process, what the relay and the immediate
// publications do. It is an outbox.PublishHook and an outbox.BreakerHook
// (pass it with outbox.WithHooks) and a prometheus.Collector (register
// it). One Metrics may observe several Outboxes; use WithConstLabels and
// one Metrics each to tell them apart. It is safe for concurrent use.
type Metrics struct {
	published      *prometheus.CounterVec
	failed         *prometheus.CounterVec
	dead           *prometheus.CounterVec
	publishSeconds *prometheus.HistogramVec
	lag            prometheus.Histogram
	batchSize      prometheus.Histogram
	brokerFailures prometheus.Counter
	breakerOpen    prometheus.Gauge
}

var (
	_ outbox.PublishHook   = (*Metrics)(nil)
	_ outbox.BreakerHook   = (*Metrics)(nil)
	_ prometheus.Collector = (*Metrics)(nil)
)

// The modes of outbox_publish_duration_seconds.
const (
	ModeRelay     = "relay"     // a batch the relay claimed
	ModeImmediate = "immediate" // events published right after their commit
)

// New returns the metrics of publication, all at zero. See the package
// documentation for their names. Options: WithConstLabels,
// WithPublishBuckets, WithLagBuckets, WithBatchBuckets. An invalid option
// is an error wrapping outbox.ErrInvalidConfig.
func New(opts ...Option) (*Metrics, error) {
	c, err := newConfig(forMetrics, opts)
	if err != nil {
		return nil, err
	}
	byEvent := []string{"topic", "type"}
	return &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_events_published_total", ConstLabels: c.constLabels,
			Help: "Events the broker acknowledged.",
		}, byEvent),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_events_failed_total", ConstLabels: c.constLabels,
			Help: "Failed publish attempts; each such event is retried or, past the limit, dead.",
		}, byEvent),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_events_dead_total", ConstLabels: c.constLabels,
			Help: "Events declared dead (dead-lettered) after too many attempts or a permanent failure.",
		}, byEvent),
		publishSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_publish_duration_seconds", ConstLabels: c.constLabels, Buckets: c.publishBuckets,
			Help: "Time the publisher took for one batch (mode relay) or one post-commit publication (mode immediate).",
		}, []string{"mode"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "outbox_sync_lag_seconds", ConstLabels: c.constLabels, Buckets: c.lagBuckets,
			Help: "Time from an event's creation to the broker's acknowledgement.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "outbox_relay_batch_size", ConstLabels: c.constLabels, Buckets: c.batchBuckets,
			Help: "Events in each batch the relay published.",
		}),
		brokerFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_broker_failures_total", ConstLabels: c.constLabels,
			Help: "Batches the broker failed as a whole (unreachable, timed out).",
		}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_circuit_breaker_open", ConstLabels: c.constLabels,
			Help: "1 while the relay's circuit breaker is open (the broker is considered down), else 0.",
		}),
	}, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.published, m.failed, m.dead, m.publishSeconds, m.lag, m.batchSize, m.brokerFailures, m.breakerOpen}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// BeforePublish implements outbox.PublishHook. It returns ctx unchanged.
func (m *Metrics) BeforePublish(ctx context.Context, _ outbox.PublishStart) context.Context {
	return ctx
}

// AfterPublish implements outbox.PublishHook: it counts the acknowledged,
// failed and dead events and observes the batch. An event held back
// behind a failed event of its aggregate (outbox.ErrHeldBack) was not
// attempted and is not counted as failed.
func (m *Metrics) AfterPublish(_ context.Context, d outbox.PublishDone) {
	mode := ModeRelay
	if d.Immediate {
		mode = ModeImmediate
	} else {
		m.batchSize.Observe(float64(len(d.Events)))
	}
	m.publishSeconds.WithLabelValues(mode).Observe(d.Duration.Seconds())
	if d.BrokerErr != nil {
		m.brokerFailures.Inc()
	}
	dead := make(map[string]bool, len(d.Dead))
	for _, id := range d.Dead {
		dead[id] = true
	}
	for _, e := range d.Events {
		if e == nil {
			continue
		}
		err, bad := d.Failed[e.ID]
		switch {
		case !bad:
			m.published.WithLabelValues(e.Topic, e.Type).Inc()
			if !e.CreatedAt.IsZero() && !d.AckedAt.IsZero() {
				m.lag.Observe(max(d.AckedAt.Sub(e.CreatedAt).Seconds(), 0))
			}
		case dead[e.ID]:
			m.failed.WithLabelValues(e.Topic, e.Type).Inc()
			m.dead.WithLabelValues(e.Topic, e.Type).Inc()
		case !errors.Is(err, outbox.ErrHeldBack):
			m.failed.WithLabelValues(e.Topic, e.Type).Inc()
		}
	}
}

// BreakerChanged implements outbox.BreakerHook.
func (m *Metrics) BreakerChanged(_ context.Context, s outbox.BreakerState) {
	if s.Open {
		m.breakerOpen.Set(1)
	} else {
		m.breakerOpen.Set(0)
	}
}
