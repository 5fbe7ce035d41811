package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// walEnv is where one run of the wal group counts: its schema, and the
// schema of the pg_walinspect extension ("" without it: then only the
// cluster's WAL position is read).
type walEnv struct {
	schema  string
	inspect string
}

// walCount is the WAL of one phase: the distance the cluster's WAL
// insert position moved (everything any session wrote), and with
// pg_walinspect the records that are the phase's own.
type walCount struct {
	cluster int64
	mine    int64 // -1 without pg_walinspect
	fpi     int64 // of mine: full-page images
	parts   []walPart
}

// bytes is the phase's WAL: its own records when they could be told apart,
// else the cluster's.
func (c walCount) bytes() int64 {
	if c.mine >= 0 {
		return c.mine
	}
	return c.cluster
}

// walPart is the phase's records of one relation and record type.
type walPart struct {
	rel, kind   string
	records     int64
	bytes, fpis int64
}

// walInspect makes pg_walinspect available in the run's schema, unless
// the database has it already, and returns the schema it is in ("" when
// the server does not offer it). Created in the run's schema, it goes
// with that schema.
func (b *bench) walInspect(ctx context.Context, schema string) string {
	var at string
	if err := b.pg.GetContext(ctx, &at, "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_walinspect'"); err == nil {
		return at
	}
	if _, err := b.pg.ExecContext(ctx, "CREATE EXTENSION pg_walinspect SCHEMA "+schema); err != nil {
		b.logf("wal: no pg_walinspect (%v): counting the cluster's WAL, which includes other sessions' writes", err)
		return ""
	}
	return schema
}

// walOwn returns the WAL of [from, to) that is the run's: the records
// that change a relation of the run's schema (tables, indexes, their
// TOAST), and every record of a transaction that wrote one (its commit
// record, its row locks, and what it writes on other relations, such as
// pruning a catalog page it read), with the space each takes in the log (aligned
// to 8 bytes; page headers, 24 bytes in 8 KB, are left out). to must be
// flushed. The parts are grouped by relation and record type.
func (b *bench) walOwn(ctx context.Context, env walEnv, from, to string) (walCount, error) {
	q := `WITH rels AS (
    SELECT c.relfilenode::text AS node, c.relname::text AS name FROM pg_class c
    WHERE c.relnamespace = $3::regnamespace AND c.relfilenode <> 0
    UNION ALL
    SELECT t.relfilenode::text, c.relname || ' (toast)' FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid
    WHERE c.relnamespace = $3::regnamespace
    UNION ALL
    SELECT ti.relfilenode::text, c.relname || ' (toast index)' FROM pg_class c JOIN pg_index i ON i.indrelid = c.reltoastrelid
    JOIN pg_class ti ON ti.oid = i.indexrelid WHERE c.relnamespace = $3::regnamespace
), r AS (
    SELECT w.xid, w.resource_manager || ':' || w.record_type AS kind, (w.record_length + 7) / 8 * 8 AS len, w.fpi_length,
        (regexp_match(w.block_ref, 'rel \d+/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/(\d+)'))[1] AS node
    FROM ` + env.inspect + `.pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) w
), x AS (
    SELECT DISTINCT r.xid FROM r JOIN rels ON rels.node = r.node WHERE r.xid <> 0
)
SELECT COALESCE(rels.name, CASE WHEN r.node IS NULL THEN '(no relation)' ELSE '(relation ' || r.node || ', not the run''s)' END) AS rel, r.kind, count(*) AS records, sum(r.len) AS bytes, sum(r.fpi_length) AS fpis
FROM r LEFT JOIN rels ON rels.node = r.node
WHERE rels.node IS NOT NULL OR r.xid IN (SELECT xid FROM x)
GROUP BY 1, 2 ORDER BY 4 DESC`
	rows, err := b.pg.QueryContext(ctx, q, from, to, env.schema)
	if err != nil {
		return walCount{}, fmt.Errorf("pg_walinspect: %w", err)
	}
	defer rows.Close()
	var c walCount
	for rows.Next() {
		var p walPart
		if err := rows.Scan(&p.rel, &p.kind, &p.records, &p.bytes, &p.fpis); err != nil {
			return walCount{}, err
		}
		c.parts = append(c.parts, p)
		c.mine += p.bytes
		c.fpi += p.fpis
	}
	return c, rows.Err()
}

// walMeasure runs a CHECKPOINT, then f, and returns the WAL written from
// the end of the checkpoint to the end of f. The cluster's figure is the
// distance the insert position moved (pg_current_wal_insert_lsn, where
// the next record goes, rather than pg_current_wal_lsn, which lags it by
// what the WAL writer has not written yet). The run's own is read with
// pg_walinspect, up to a position flushed after f: a transaction that
// takes an ID commits, which flushes the log up to its commit record.
func (b *bench) walMeasure(ctx context.Context, env walEnv, f func() error) (walCount, float64, error) {
	if _, err := b.pg.ExecContext(ctx, "CHECKPOINT"); err != nil {
		return walCount{}, 0, fmt.Errorf("checkpoint: %w", err)
	}
	const pos = "SELECT pg_current_wal_insert_lsn()::text, pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
	var from, to string
	var before, after int64
	if err := b.pg.QueryRowContext(ctx, pos).Scan(&from, &before); err != nil {
		return walCount{}, 0, err
	}
	start := time.Now()
	if err := f(); err != nil {
		return walCount{}, 0, err
	}
	d := time.Since(start)
	if err := b.pg.QueryRowContext(ctx, pos).Scan(&to, &after); err != nil {
		return walCount{}, 0, err
	}
	c := walCount{cluster: after - before, mine: -1}
	if env.inspect == "" {
		return c, d.Seconds(), nil
	}
	// The WAL writer flushes what commits did not within
	// wal_writer_delay (200 ms by default).
	for flushed := false; !flushed; {
		if err := b.pg.GetContext(ctx, &flushed, "SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn", to); err != nil {
			return walCount{}, 0, err
		}
		if !flushed {
			time.Sleep(20 * time.Millisecond)
		}
	}
	own, err := b.walOwn(ctx, env, from, to)
	if err != nil {
		return walCount{}, 0, err
	}
	own.cluster = c.cluster
	return own, d.Seconds(), nil
}

// printWALParts writes a phase's records by relation and type, the
// largest first, at most max lines.
func printWALParts(w io.Writer, name string, events int, parts []walPart, max int) {
	fmt.Fprintf(w, "  %s, by relation and record type (bytes/event, records/event, of which full-page images):\n", name)
	parts = slices.Clone(parts)
	for i, p := range parts {
		if i == max {
			var rest walPart
			for _, q := range parts[i:] {
				rest.records += q.records
				rest.bytes += q.bytes
				rest.fpis += q.fpis
			}
			fmt.Fprintf(w, "    %-44s %-28s %9.2f %8.3f %9.2f\n", "(the rest)", "", float64(rest.bytes)/float64(events), float64(rest.records)/float64(events), float64(rest.fpis)/float64(events))
			return
		}
		fmt.Fprintf(w, "    %-44s %-28s %9.2f %8.3f %9.2f\n", p.rel, p.kind, float64(p.bytes)/float64(events), float64(p.records)/float64(events), float64(p.fpis)/float64(events))
	}
}

// subtractParts returns the parts of a, less those of b, whose relation
// names are a's with prefix from in place of to (the same statements on
// a table of another name); parts that cancel out are left out.
func subtractParts(a, b []walPart, from, to string) []walPart {
	type key struct{ rel, kind string }
	sum := map[key]walPart{}
	var order []key
	add := func(p walPart, sign int64) {
		k := key{p.rel, p.kind}
		q, ok := sum[k]
		if !ok {
			order = append(order, k)
			q = walPart{rel: p.rel, kind: p.kind}
		}
		q.records += sign * p.records
		q.bytes += sign * p.bytes
		q.fpis += sign * p.fpis
		sum[k] = q
	}
	for _, p := range a {
		add(p, 1)
	}
	for _, p := range b {
		if r, ok := strings.CutPrefix(p.rel, from); ok {
			p.rel = to + r
		}
		add(p, -1)
	}
	var out []walPart
	for _, k := range order {
		if p := sum[k]; p.records != 0 || p.bytes != 0 {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(x, y walPart) int { return cmpFloat(float64(y.bytes), float64(x.bytes)) })
	return out
}
