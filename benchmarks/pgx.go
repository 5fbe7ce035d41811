package main

import (
	"context"

	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxpgx"
	"github.com/eventsync/outbox/sqlstore"
)

// runPgx compares, in one run and with runs interleaved, the Postgres
// store on database/sql (sqlstore on sqlx over pgx's stdlib driver, what
// every other Postgres scenario uses) with outboxpgx's store on a
// pgxpool.Pool: the relay's drain to Redis, and Save through a *sql.Tx
// versus through a pgx.Tx (one event a call, and 5,000 in one call, as
// the INSERT that database/sql sends and as the COPY that Exec sends).
func runPgx(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	pcfg, err := pgxpool.ParseConfig(b.cfg.postgres)
	if err != nil {
		return err
	}
	pcfg.MaxConns = 16 // as the sqlx pool
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	onPool := func(st *sqlstore.Store) (relayStore, func(), error) {
		ps, err := outboxpgx.New(pool, sqlstore.WithTable(st.Table()))
		if err != nil {
			return nil, nil, err
		}
		return ps, func() { ps.Close() }, nil
	}
	relays := []struct {
		name    string
		relays  int
		relayOn func(*sqlstore.Store) (relayStore, func(), error)
		base    string
	}{
		{"pgx_relay_sqlx_redis_1r", 1, nil, ""},
		{"pgx_relay_pool_redis_1r", 1, onPool, "pgx_relay_sqlx_redis_1r"},
		{"pgx_relay_sqlx_redis_2r", 2, nil, ""},
		{"pgx_relay_pool_redis_2r", 2, onPool, "pgx_relay_sqlx_redis_2r"},
	}
	all := make([][]*Result, len(relays))
	for range b.cfg.runs {
		for i, s := range relays {
			r, err := b.drain(ctx, drainOpts{name: s.name, db: b.pg, what: "pgx", relays: s.relays, n: b.cfg.events,
				ordered: true, publisher: b.redisPublisher(), relayOn: s.relayOn})
			if err != nil {
				return err
			}
			all[i] = append(all[i], r)
		}
	}
	for i, s := range relays {
		r := b.res.add(medianBy(all[i], func(r *Result) float64 { return r.EventsPerSec }))
		b.res.relate(r, s.base)
		b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	}
	return b.pgxSaves(ctx, pool)
}

// medianBy returns the median of rs by key, with Runs set.
func medianBy(rs []*Result, key func(*Result) float64) *Result {
	slices.SortFunc(rs, func(x, y *Result) int { return cmpFloat(key(x), key(y)) })
	r := rs[len(rs)/2]
	r.Runs = len(rs)
	return r
}

// pgxSaves times Save on database/sql and on pgx, on one table.
func (b *bench) pgxSaves(ctx context.Context, pool *pgxpool.Pool) error {
	st, table, err := b.newStore(ctx, b.pg, "pgxsave")
	if err != nil {
		return err
	}
	defer b.drop(b.pg, table)
	ob, err := outbox.New(st, outbox.Noop{})
	if err != nil {
		return err
	}
	n, big := 2000, 5000
	if b.cfg.quick {
		n, big = 200, 500
	}
	// Each timed function saves events per at a time in one transaction
	// it commits, and returns the time of each call.
	sqlTx := func(events []*outbox.Event, per int) ([]time.Duration, error) {
		tx, err := b.pg.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		lat, err := timeCalls(events, per, func(es []*outbox.Event) error { return ob.Save(ctx, tx, es...) })
		if err != nil {
			return nil, err
		}
		return lat, tx.Commit()
	}
	pgxTx := func(events []*outbox.Event, per int) ([]time.Duration, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback(ctx)
		lat, err := timeCalls(events, per, func(es []*outbox.Event) error { return ob.Save(ctx, outboxpgx.Exec(tx), es...) })
		if err != nil {
			return nil, err
		}
		return lat, tx.Commit(ctx)
	}
	// insertOnly hides pgx.Tx's CopyFrom, so that Exec sends a large
	// Save as sqlstore's multi-row INSERT.
	insertTx := func(events []*outbox.Event, per int) ([]time.Duration, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback(ctx)
		lat, err := timeCalls(events, per, func(es []*outbox.Event) error {
			return ob.Save(ctx, outboxpgx.Exec(insertOnly{tx}), es...)
		})
		if err != nil {
			return nil, err
		}
		return lat, tx.Commit(ctx)
	}
	cases := []struct {
		name   string
		n, per int
		f      func([]*outbox.Event, int) ([]time.Duration, error)
		base   string
	}{
		{"pgx_save_sqlx_1_event", n, 1, sqlTx, ""},
		{"pgx_save_pgx_1_event", n, 1, pgxTx, "pgx_save_sqlx_1_event"},
		{fmt.Sprintf("pgx_save_sqlx_%d_in_1_call", big), big, big, sqlTx, ""},
		{fmt.Sprintf("pgx_save_pgx_insert_%d_in_1_call", big), big, big, insertTx, fmt.Sprintf("pgx_save_sqlx_%d_in_1_call", big)},
		{fmt.Sprintf("pgx_save_pgx_copy_%d_in_1_call", big), big, big, pgxTx, fmt.Sprintf("pgx_save_sqlx_%d_in_1_call", big)},
	}
	runs := max(b.cfg.runs, 3)
	all := make([][]*Result, len(cases))
	for range runs {
		for i, c := range cases {
			events := newEvents(c.n, 100, 256, "t")
			start := time.Now()
			lat, err := c.f(events, c.per)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			r := throughput(c.name, c.n, time.Since(start))
			slices.Sort(lat)
			r.P50us, r.P99us = percentile(lat, 50), percentile(lat, 99)
			all[i] = append(all[i], r)
		}
	}
	for i, c := range cases {
		r := b.res.add(medianBy(all[i], func(r *Result) float64 { return r.P50us }))
		if base := b.res.get(c.base); base != nil && base.P50us > 0 {
			r.Baseline = c.base
			r.RatioToBaseline = round(r.P50us/base.P50us, 2)
			r.Note = "ratio is of the median time per call (p50), not of events/s"
		}
		b.logf("%s: p50 %.0f us a call", r.Scenario, r.P50us)
	}
	return nil
}

// timeCalls calls save on events per at a time and returns each call's
// time.
func timeCalls(events []*outbox.Event, per int, save func([]*outbox.Event) error) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, len(events)/per+1)
	for i := 0; i < len(events); i += per {
		t := time.Now()
		if err := save(events[i:min(i+per, len(events))]); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t))
	}
	return lat, nil
}

// insertOnly is a pgx.Tx with only Exec: no CopyFrom.
type insertOnly struct{ tx pgx.Tx }

func (i insertOnly) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return i.tx.Exec(ctx, sql, args...)
}
