package outboxprom_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxprom"
)

// newMetrics returns outboxprom.New(opts...), failing the test on an error.
func newMetrics(t *testing.T, opts ...outboxprom.Option) *outboxprom.Metrics {
	t.Helper()
	m, err := outboxprom.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newStats returns outboxprom.NewStatsCollector(r, opts...), failing the
// test on an error.
func newStats(t *testing.T, r outbox.StatsReader, opts ...outboxprom.Option) *outboxprom.StatsCollector {
	t.Helper()
	c, err := outboxprom.NewStatsCollector(r, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInvalidOptions: every invalid value is an error of the constructor,
// wrapping outbox.ErrInvalidConfig and naming the option.
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	r := &fakeStats{}
	cases := []struct {
		name  string
		stats bool // NewStatsCollector, else New
		opt   outboxprom.Option
		want  string
	}{
		{"decreasing buckets", false, outboxprom.WithPublishBuckets([]float64{1, 0.5}), "WithPublishBuckets"},
		{"repeated bucket", false, outboxprom.WithLagBuckets([]float64{1, 1}), "WithLagBuckets"},
		{"NaN bucket", false, outboxprom.WithBatchBuckets([]float64{math.NaN()}), "WithBatchBuckets"},
		{"empty label name", false, outboxprom.WithConstLabels(prometheus.Labels{"": "x"}), "WithConstLabels"},
		{"label of the metrics", false, outboxprom.WithConstLabels(prometheus.Labels{"type": "x"}), "WithConstLabels"},
		{"reserved label", true, outboxprom.WithConstLabels(prometheus.Labels{"__name__": "x"}), "WithConstLabels"},
		{"invalid label value", true, outboxprom.WithConstLabels(prometheus.Labels{"table": "\xff"}), "WithConstLabels"},
		{"negative timeout", true, outboxprom.WithStatsTimeout(-time.Second), "WithStatsTimeout -1s is negative"},
		{"negative cache period", true, outboxprom.WithStatsCacheFor(-time.Second), "WithStatsCacheFor -1s is negative; pass NoStatsCache"},
		{"negative window", true, outboxprom.WithStatsWindow(-time.Minute), "WithStatsWindow -1m0s is negative"},
		{"stats option given to New", false, outboxprom.WithStatsWindow(time.Minute), "WithStatsWindow is an option of NewStatsCollector, not of New"},
		{"metrics option given to NewStatsCollector", true, outboxprom.WithLagBuckets([]float64{1}), "WithLagBuckets is an option of New, not of NewStatsCollector"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if c.stats {
				var s *outboxprom.StatsCollector
				s, err = outboxprom.NewStatsCollector(r, c.opt)
				if s != nil {
					t.Errorf("a collector beside the error")
				}
			} else {
				var m *outboxprom.Metrics
				m, err = outboxprom.New(c.opt)
				if m != nil {
					t.Errorf("metrics beside the error")
				}
			}
			if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "outboxprom: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want an outboxprom: error wrapping ErrInvalidConfig that says %q", err, c.want)
			}
		})
	}
	if _, err := outboxprom.NewStatsCollector(nil); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("a nil StatsReader: %v, want ErrInvalidConfig", err)
	}
}

// TestValidOptions: the limits themselves, zero values and the documented
// sentinels are accepted.
func TestValidOptions(t *testing.T) {
	t.Parallel()
	newMetrics(t, outboxprom.WithPublishBuckets(nil), outboxprom.WithLagBuckets([]float64{}),
		outboxprom.WithBatchBuckets([]float64{1, math.Inf(1)}),
		outboxprom.WithConstLabels(prometheus.Labels{"table": "outbox_events"}), nil)
	newStats(t, &fakeStats{}, outboxprom.WithStatsTimeout(0), outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache),
		outboxprom.WithStatsWindow(0), outboxprom.WithConstLabels(prometheus.Labels{"table": "outbox_events"}))
}
