// Package outboxprom exports the outbox's figures as Prometheus metrics,
// on github.com/prometheus/client_golang, so that the outbox package
// itself imports no metrics library.
//
// Two collectors, registered separately:
//
//   - Metrics counts what a relay and the immediate publications of one
//     process do. It is a hook: pass it to outbox.New
//     with outbox.WithHooks, and register it.
//
//   - StatsCollector reads the store's figures (pending, oldest pending
//     age, dead, sync latency) when Prometheus scrapes, with a timeout,
//     and caches them so that frequent scrapes do not load the database.
//     Any process may export it, not only one that runs a relay; given
//     the relay's own store it also exports the partitions that store
//     owns.
//
// Wiring them up:
//
//	m, err := outboxprom.New()
//	if err != nil { ... }
//	stats, err := outboxprom.NewStatsCollector(store)
//	if err != nil { ... }
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(m, stats)
//	ob, err := outbox.New(store, pub, outbox.WithHooks(m))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Labels are only ever topic and type (and the const labels you add),
// never an event or aggregate ID, so the number of series is bounded by
// the number of topics and event types.
//
// Options follow one rule: an unset or zero option takes its default
// (the exported Default constants), and an invalid one is an error from
// the constructor that wraps outbox.ErrInvalidConfig and names the
// option.
//
// # Metrics
//
// From Metrics (this process's publications):
//
//	outbox_events_published_total{topic,type}   counter    events acknowledged by the broker
//	outbox_events_failed_total{topic,type}      counter    failed attempts (the event is retried)
//	outbox_events_dead_total{topic,type}        counter    events declared dead (dead-lettered)
//	outbox_publish_duration_seconds{mode}       histogram  time in Publisher.Publish per batch; mode is relay or immediate
//	outbox_sync_lag_seconds                     histogram  created → acknowledged, per acknowledged event
//	outbox_relay_batch_size                     histogram  events per relay batch
//	outbox_broker_failures_total                counter    batches the broker failed as a whole
//	outbox_circuit_breaker_open                 gauge      1 while the relay's circuit breaker is open
//
// From StatsCollector (the whole table, on scrape):
//
//	outbox_events_pending{type}                 gauge      committed, not yet acknowledged, not dead
//	outbox_oldest_pending_age_seconds           gauge      age of the oldest pending event (0 with none)
//	outbox_events_dead                          gauge      dead events in the table
//	outbox_sync_latency_avg_seconds             gauge      mean created → synced over the window
//	outbox_sync_latency_p99_seconds             gauge      99th percentile of the same
//	outbox_events_synced_window                 gauge      events synced within the window
//	outbox_stats_up                             gauge      1 if the last read of the store succeeded
//
// From StatsCollector too, when the store owns partitions of the table
// (sqlstore.Store; this process's own figure, read from the store's
// memory on every scrape, and exported while the table cannot be read):
//
//	outbox_partitions_owned                     gauge      partitions this process's store owns now
package outboxprom
