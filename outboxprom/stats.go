package outboxprom

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// StatsCollector is a prometheus.Collector that reads an
// outbox.StatsReader (sqlstore.Store, say) when scraped. A read is bounded
// by a timeout and its result answers every scrape for a while, so the
// store is read at most once per WithStatsCacheFor, however many
// Prometheus servers scrape. While the store cannot be read,
// outbox_stats_up is 0 and the other table figures are left out, so that
// alerts do not act on stale figures.
//
// A store that owns partitions of the table (sqlstore.Store: an Owned
// method) also gives outbox_partitions_owned, the partitions it owns
// now. That figure is the process's own, not the table's: it is asked
// of the store on every scrape (from memory, no query) and exported
// whether or not the table could be read.
//
// A store of a table partitioned by save time (sqlstore.Store
// WithTimePartitions: a storage.RunwayReader whose table is partitioned)
// also gives outbox_partition_runway_seconds, how far past now the
// partitions reach, and outbox_partition_default_rows, the rows in the
// DEFAULT partition (normally 0), read with the other table figures.
type StatsCollector struct {
	r      outbox.StatsReader
	owner  partitionOwner       // r, if it owns partitions; else nil
	runway storage.RunwayReader // r, if it may be partitioned by time; else nil
	cfg    config

	up, pending, oldest, dead, synced, avg, p99, owned, ahead, defaultRows *prometheus.Desc

	mu      sync.Mutex // one read at a time; guards the fields below
	readAt  time.Time
	stats   outbox.Stats
	readErr error
	rw      storage.Runway
	rwOK    bool // rw was read and the table is partitioned by time
}

var _ prometheus.Collector = (*StatsCollector)(nil)

// partitionOwner is a store that owns partitions of the table, as
// sqlstore.Store does: Owned returns those it owns now, from memory.
type partitionOwner interface {
	Owned() []int
}

// NewStatsCollector returns a collector of r's figures. Options:
// WithConstLabels, WithStatsTimeout, WithStatsCacheFor, WithStatsWindow.
// A nil r or an invalid option is an error wrapping
// outbox.ErrInvalidConfig.
func NewStatsCollector(r outbox.StatsReader, opts ...Option) (*StatsCollector, error) {
	if r == nil {
		return nil, invalid("the StatsReader is nil")
	}
	c, err := newConfig(forStats, opts)
	if err != nil {
		return nil, err
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, c.constLabels)
	}
	owner, _ := r.(partitionOwner)
	runway, _ := r.(storage.RunwayReader)
	return &StatsCollector{
		r: r, owner: owner, runway: runway, cfg: c,
		up:      desc("outbox_stats_up", "1 if the last read of the outbox store's figures succeeded, else 0."),
		pending: desc("outbox_events_pending", "Events committed but not yet acknowledged by the broker (not dead), by type.", "type"),
		oldest:  desc("outbox_oldest_pending_age_seconds", "Age of the oldest pending event; 0 when none is pending."),
		dead:    desc("outbox_events_dead", "Dead events in the table, waiting for an operator to re-queue them."),
		synced:  desc("outbox_events_synced_window", "Events synced within the stats window."),
		avg:     desc("outbox_sync_latency_avg_seconds", "Mean time from creation to acknowledgement of the events synced within the stats window."),
		p99:     desc("outbox_sync_latency_p99_seconds", "99th percentile of the time from creation to acknowledgement within the stats window."),
		owned:   desc("outbox_partitions_owned", "Partitions of the outbox table this process's store owns now (it relays their events)."),
		ahead: desc("outbox_partition_runway_seconds",
			"How far past now the time partitions of the outbox table reach; 0 or less when events are saved into the DEFAULT partition."),
		defaultRows: desc("outbox_partition_default_rows", "Rows in the DEFAULT partition of the time-partitioned outbox table (normally 0; counted up to 100,000)."),
	}, nil
}

// Describe implements prometheus.Collector.
func (s *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.up, s.pending, s.oldest, s.dead, s.synced, s.avg, s.p99} {
		ch <- d
	}
	if s.owner != nil {
		ch <- s.owned
	}
	if s.runway != nil {
		ch <- s.ahead
		ch <- s.defaultRows
	}
}

// Collect implements prometheus.Collector: it reads the store unless a
// recent enough read is cached.
func (s *StatsCollector) Collect(ch chan<- prometheus.Metric) {
	if s.owner != nil {
		ch <- prometheus.MustNewConstMetric(s.owned, prometheus.GaugeValue, float64(len(s.owner.Owned())))
	}
	st, err := s.read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	s.mu.Lock()
	rw, rwOK := s.rw, s.rwOK
	s.mu.Unlock()
	if rwOK {
		ch <- prometheus.MustNewConstMetric(s.ahead, prometheus.GaugeValue, rw.Ahead.Seconds())
		ch <- prometheus.MustNewConstMetric(s.defaultRows, prometheus.GaugeValue, float64(rw.DefaultRows))
	}
	ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 1)
	for typ, n := range st.PendingByType {
		ch <- prometheus.MustNewConstMetric(s.pending, prometheus.GaugeValue, float64(n), typ)
	}
	ch <- prometheus.MustNewConstMetric(s.oldest, prometheus.GaugeValue, st.OldestPendingAge.Seconds())
	ch <- prometheus.MustNewConstMetric(s.dead, prometheus.GaugeValue, float64(st.Dead))
	ch <- prometheus.MustNewConstMetric(s.synced, prometheus.GaugeValue, float64(st.Synced))
	ch <- prometheus.MustNewConstMetric(s.avg, prometheus.GaugeValue, st.AvgSyncLatency.Seconds())
	ch <- prometheus.MustNewConstMetric(s.p99, prometheus.GaugeValue, st.P99SyncLatency.Seconds())
}

// Stats returns the figures the last scrape exported, reading the store
// if they are older than the cache period, and the error of that read.
func (s *StatsCollector) Stats() (outbox.Stats, error) { return s.read() }

func (s *StatsCollector) read() (outbox.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.now()
	if !s.readAt.IsZero() && now.Sub(s.readAt) < s.cfg.cacheFor {
		return s.stats, s.readErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.timeout)
	defer cancel()
	st, err := s.r.Stats(ctx, s.cfg.window)
	s.rwOK = false
	if err == nil && s.runway != nil {
		// A runway that cannot be read is left out, not taken for the
		// table's figures being unreadable.
		if rw, ok, rerr := s.runway.Runway(ctx); rerr == nil {
			s.rw, s.rwOK = rw, ok
		}
	}
	// A failure is cached too: a database in trouble is not read again on
	// every scrape.
	s.readAt, s.stats, s.readErr = s.cfg.now(), st, err
	return st, err
}
