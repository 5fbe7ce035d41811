package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxotel"
	"github.com/eventsync/outbox/outboxprom"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	// The database drivers DATABASE_URL can name.
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// readiness is when GET /readyz fails: the relay is not keeping up or the
// broker has been down for a while.
var readiness = outbox.Readiness{MaxPendingAge: 5 * time.Minute, MaxBreakerOpen: time.Minute}

// app is the wired service: database, outbox, publisher and HTTP API.
type app struct {
	cfg   config
	log   *slog.Logger
	db    *database
	store *sqlstore.Store
	ob    *outbox.Outbox
	api   *api

	// Set when the publisher is Redis: the client, and the in-process
	// server when REDIS_URL is unset.
	redis     *redis.Client
	miniredis *miniredis.Miniredis

	closers []func() error // run in reverse order by close
}

// newApp opens the database, creates the tables, and connects the outbox
// to the configured publisher. The broker need not be up: events wait in
// the table until it is.
func newApp(ctx context.Context, cfg config, log *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			_ = a.close() // what was opened before the failure
		}
	}()

	if err := a.openDB(ctx); err != nil {
		return nil, err
	}
	pub, err := a.publisher(ctx)
	if err != nil {
		return nil, err
	}
	// Metrics: the relay's counters through a hook, the table's figures
	// read (and cached) on scrape. Tracing: trace context in the event
	// headers, spans to the global TracerProvider (a no-op until the
	// service installs an SDK).
	metrics, err := outboxprom.New()
	if err != nil {
		return nil, err
	}
	stats, err := outboxprom.NewStatsCollector(a.store)
	if err != nil {
		return nil, err
	}
	tracing, err := outboxotel.New()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics, stats,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := append([]outbox.Option{outbox.WithLogger(log), outbox.WithHooks(metrics, tracing)}, cfg.Outbox...)
	a.ob, err = outbox.New(a.store, pub, opts...)
	if err != nil {
		return nil, err
	}
	w := &writer{db: a.db, ob: a.ob, topic: cfg.Topic, log: log, get: a.store.Get}
	a.api = &api{
		stock:        &StockService{w: w},
		reservations: &ReservationService{w: w},
		events:       a.store,
		db:           a.db,
		log:          log,
		metrics:      promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}),
		ready:        readyHandler(a.ob, readiness, 5*time.Second),
	}
	return a, nil
}

func (a *app) openDB(ctx context.Context) error {
	c := a.cfg.DB
	db, err := sqlx.Open(c.Driver, c.DSN)
	if err != nil {
		return fmt.Errorf("open %s: %w", c.Safe, err)
	}
	a.closers = append(a.closers, db.Close)
	if c.Driver == "sqlite" {
		// One connection: SQLite runs one writer at a time anyway, and
		// this way writers queue in the pool instead of failing busy.
		db.SetMaxOpenConns(1)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		return fmt.Errorf("connect to %s: %w", c.Safe, err)
	}
	a.db = &database{DB: db, driver: c.Driver, stock: a.cfg.stockTable(), resv: a.cfg.reservationsTable()}
	if err := a.db.createTables(ctx); err != nil {
		return err
	}
	storeOpts := []sqlstore.Option{sqlstore.WithTable(a.cfg.eventsTable())}
	if a.cfg.Watermarks {
		storeOpts = append(storeOpts, sqlstore.WithWatermarks())
	}
	a.store, err = sqlstore.New(db, storeOpts...)
	if err != nil {
		return err
	}
	if err := a.store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate the events table: %w", err)
	}
	a.log.Info("database ready", "database", c.Safe, "events_table", a.cfg.eventsTable(), "watermarks", a.cfg.Watermarks)
	return nil
}

func (a *app) publisher(ctx context.Context) (outbox.Publisher, error) {
	switch a.cfg.Publisher {
	case publisherNoop:
		a.log.Info("publisher: noop (events are marked synced without being sent)")
		return outbox.Noop{}, nil
	case publisherKafka:
		return a.kafkaPublisher(ctx)
	case publisherRedis:
		return a.redisPublisher(ctx)
	}
	return nil, fmt.Errorf("%s: unknown publisher %q", envPublisher, a.cfg.Publisher)
}

func (a *app) redisPublisher(ctx context.Context) (outbox.Publisher, error) {
	var opts *redis.Options
	if a.cfg.RedisURL == "" {
		a.miniredis = miniredis.NewMiniRedis()
		if err := a.miniredis.Start(); err != nil {
			return nil, fmt.Errorf("start the embedded Redis: %w", err)
		}
		a.closers = append(a.closers, func() error { a.miniredis.Close(); return nil })
		opts = &redis.Options{Addr: a.miniredis.Addr()}
		a.log.Info("publisher: embedded Redis (miniredis; set REDIS_URL for a real one)", "addr", a.miniredis.Addr(), "stream", a.cfg.Topic)
	} else {
		var err error
		if opts, err = redis.ParseURL(a.cfg.RedisURL); err != nil {
			return nil, fmt.Errorf("%s: %v", envRedisURL, redactURLError(err))
		}
		a.log.Info("publisher: Redis", "addr", opts.Addr, "stream", a.cfg.Topic)
	}
	// Fail fast when Redis is away: the request that saved an event should
	// not wait for it, and the relay retries with its own backoff.
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 3 * time.Second
	opts.WriteTimeout = 3 * time.Second
	opts.DialerRetries = 1
	opts.MaxRetries = 1
	a.redis = redis.NewClient(opts)
	a.closers = append(a.closers, a.redis.Close)
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := a.redis.Ping(pctx).Err(); err != nil {
		// Not fatal: events wait in the table until Redis is reachable.
		a.log.Warn("Redis is not reachable yet; events will stay pending until it is", "err", err)
	}
	return redisstream.New(a.redis)
}

// run runs the outbox's relay until ctx ends; it returns once the relay
// has marked or released its batch.
func (a *app) run(ctx context.Context) error { return a.ob.Run(ctx) }

// close releases everything newApp opened, last opened first.
func (a *app) close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	a.closers = nil
	return errors.Join(errs...)
}
