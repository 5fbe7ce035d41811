package docs

import (
	"context"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/inbox"
	"github.com/eventsync/outbox/inbox/redisconsumer"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/outboxotel"
	"github.com/eventsync/outbox/outboxprom"
	"github.com/eventsync/outbox/sqlstore"
)

// The Go blocks of docs/ are excerpts of the functions below, which
// snippets_run_test.go runs where no server beyond SQLite and an
// in-process Redis is needed.

// stats is docs/operations.md, "Figures: Stats".
func stats(ctx context.Context, store *sqlstore.Store) (outbox.Stats, error) {
	st, err := store.Stats(ctx, time.Hour) // one consistent snapshot of the table
	if err != nil {
		return outbox.Stats{}, err
	}
	// st.Pending, st.PendingByType, st.OldestPendingAge, st.Dead,
	// st.Synced, st.AvgSyncLatency, st.P99SyncLatency (the last three: synced within the hour)
	return st, nil
}

// timePartitioned is docs/databases-and-migrations.md, "Time partitions".
func timePartitioned(ctx context.Context, db *sqlx.DB) (*sqlstore.Store, error) {
	store, err := sqlstore.New(db, sqlstore.WithTimePartitions(24*time.Hour, 2*24*time.Hour)) // a day each, two days ahead
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx); err != nil { // creates the table partitioned, and the days ahead
		return nil, err
	}
	return store, nil
}

// metrics is docs/operations.md, "Metrics: outboxprom".
func metrics(store *sqlstore.Store, pub outbox.Publisher, mux *http.ServeMux) (*outbox.Outbox, error) {
	m, err := outboxprom.New() // hook: counters, histograms, breaker
	if err != nil {
		return nil, err
	}
	stats, err := outboxprom.NewStatsCollector(store) // table figures on scrape: 5s timeout, cached 10s
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, stats)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return outbox.New(store, pub, outbox.WithHooks(m))
}

// tracing is docs/operations.md, "Tracing: outboxotel".
func tracing(store *sqlstore.Store, pub outbox.Publisher) (*outbox.Outbox, error) {
	tr, err := outboxotel.New() // WithTracerProvider, WithPropagator; nil is an error
	if err != nil {
		return nil, err
	}
	return outbox.New(store, pub, outbox.WithHooks(tr))
}

// readiness is docs/operations.md, "Alerts and readiness".
func readiness(ob *outbox.Outbox, mux *http.ServeMux) {
	r := outbox.Readiness{MaxPendingAge: 5 * time.Minute, MaxBreakerOpen: time.Minute}
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if err := ob.Ready(req.Context(), r); err != nil { // wraps outbox.ErrNotReady
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
}

// kafkaOutbox is docs/brokers-and-wire-format.md, "Kafka".
func kafkaOutbox(store *sqlstore.Store) error {
	pub, err := kafka.New([]string{"kafka-1:9092"}, nil) // nil: kafka.NewConfig()
	if err != nil {
		return err
	}
	defer pub.Close()
	ob, err := outbox.New(store, pub)
	if err != nil {
		return err
	}
	return ob.Run(context.Background())
}

// consume is docs/effectively-once.md.
func consume(ctx context.Context, db *sqlx.DB, client redis.UniversalClient, hostname string) error {
	in, err := inbox.New(db) // the consumer's database; creates inbox_events
	if err != nil {
		return err
	}
	if err := in.Migrate(ctx); err != nil {
		return err
	}
	cons, err := redisconsumer.New(client, "inventory.events", "billing", hostname)
	if err != nil {
		return err
	}
	return cons.Run(ctx, func(ctx context.Context, e *outbox.Event) error {
		_, err := in.Handle(ctx, e, func(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error {
			_, err := tx.ExecContext(ctx, `UPDATE accounts SET reserved = reserved + 1 WHERE id = $1`, e.AggregateID)
			return err
		})
		return err // nil: XACK; an error: the entry stays pending and is retried
	})
}

// myPublisher is docs/testing-and-fault-injection.md, "A publisher of
// your own".
type myPublisher struct {
	send func(ctx context.Context, e *outbox.Event) error
}

func (p *myPublisher) Publish(ctx context.Context, events []*outbox.Event) error {
	var b outbox.BatchErrors
	for _, e := range events {
		if b.HeldBack(e) {
			continue // an earlier event of its aggregate failed
		}
		if err := p.send(ctx, e); err != nil {
			b.Fail(e, err) // mark it outbox.Permanent or outbox.Unavailable where that applies
		}
	}
	return b.Err()
}
