package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// runOriginal measures the algorithm the SDK replaces, run back to back
// instead of every 10 s: fetch 100 pending events (synced_at IS NULL),
// publish each with its own XADD round trip, then one UPDATE marking the
// successful IDs, in its own table shaped like the original one.
func runOriginal(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.original(ctx, b.cfg.events) })
	if err != nil {
		return err
	}
	r.Note = "fetch 100, one XADD round trip per event, one UPDATE; no sleep between passes"
	b.res.add(r)
	b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	return nil
}

func (b *bench) original(ctx context.Context, n int) (*Result, error) {
	table := b.name("original")
	b.own(b.pg, table)
	defer b.drop(b.pg, table)
	if _, err := b.pg.ExecContext(ctx, `CREATE TABLE `+table+` (
	id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregate_id VARCHAR(255) NOT NULL,
	event_type   VARCHAR(255) NOT NULL,
	payload      JSONB        NOT NULL,
	created_at   TIMESTAMPTZ  NOT NULL DEFAULT now(),
	synced_at    TIMESTAMPTZ  NULL)`); err != nil {
		return nil, err
	}
	if _, err := b.pg.ExecContext(ctx, `CREATE INDEX ON `+table+` (created_at) WHERE synced_at IS NULL`); err != nil {
		return nil, err
	}
	pl := string(newEvents(1, 1, 256, "")[0].Payload)
	pl = pl[:strings.LastIndex(pl, "}")] // a complete JSON document for JSONB
	pl = pl[:strings.LastIndex(pl, "}")+1] + "]}"
	if _, err := b.pg.ExecContext(ctx, `INSERT INTO `+table+` (aggregate_id, event_type, payload, created_at)
SELECT 'sku-' || (i % 1000), 'stock.updated', $1::jsonb, now() + i * interval '1 microsecond' FROM generate_series(1, $2) AS i`, pl, n); err != nil {
		return nil, err
	}
	if err := analyze(ctx, b.pg, table); err != nil {
		return nil, err
	}
	key := b.stream("original")
	defer b.rdb.Del(ctx, key)

	start := time.Now()
	total := 0
	for {
		rows, err := b.pg.QueryContext(ctx, `SELECT id, aggregate_id, event_type, payload, created_at FROM `+table+
			` WHERE synced_at IS NULL ORDER BY created_at LIMIT 100`)
		if err != nil {
			return nil, err
		}
		type ev struct {
			id, agg, typ string
			payload      []byte
			created      time.Time
		}
		var batch []ev
		for rows.Next() {
			var e ev
			if err := rows.Scan(&e.id, &e.agg, &e.typ, &e.payload, &e.created); err != nil {
				rows.Close()
				return nil, err
			}
			batch = append(batch, e)
		}
		rows.Close()
		if len(batch) == 0 {
			break
		}
		var ok []string
		for _, e := range batch {
			err := b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
				"id", e.id, "type", e.typ, "aggregate_id", e.agg, "created_at", e.created.UTC().Format(time.RFC3339Nano), "payload", e.payload}}).Err()
			if err == nil {
				ok = append(ok, e.id)
			}
		}
		if _, err := b.pg.ExecContext(ctx, `UPDATE `+table+` SET synced_at = now() WHERE id = ANY($1::uuid[])`, ok); err != nil {
			return nil, err
		}
		total += len(ok)
	}
	d := time.Since(start)
	if total != n {
		return nil, fmt.Errorf("original: synced %d of %d", total, n)
	}
	return throughput("original_algorithm_back_to_back", n, d), nil
}
