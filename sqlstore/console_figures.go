package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// MaxMinutes is the most minutes SyncedPerMinute reads.
const MaxMinutes = 24 * 60

// SyncedPerMinute returns how many events were synced in each of the last
// minutes whole minutes of the store's clock, oldest first, the current
// (partial) minute last, and the start of the first minute. It reads the
// index on synced_at over that range alone. With watermarks it adds the
// events of the relays' deliveries rows, each in the minute of the
// heartbeat that wrote it.
func (s *Store) SyncedPerMinute(ctx context.Context, minutes int) ([]int64, time.Time, error) {
	if minutes <= 0 || minutes > MaxMinutes {
		return nil, time.Time{}, fmt.Errorf("sqlstore: synced per minute: %d minutes is not within 1 and %d", minutes, MaxMinutes)
	}
	start := s.now().Truncate(time.Minute).Add(-time.Duration(minutes-1) * time.Minute)
	q := s.perMinuteQuery(start)
	if s.marks {
		q = s.markedPerMinuteQuery(start)
	}
	rows, err := s.db.QueryContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlstore: synced per minute: %w", err)
	}
	defer rows.Close()
	out := make([]int64, minutes)
	for rows.Next() {
		var b float64
		var n int64
		if err := rows.Scan(&b, &n); err != nil {
			return nil, time.Time{}, fmt.Errorf("sqlstore: synced per minute: %w", err)
		}
		// Events synced after the store's now (another clock) count in
		// the current minute.
		i := min(max(int(b), 0), minutes-1)
		out[i] += n
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("sqlstore: synced per minute: %w", err)
	}
	return out, start, nil
}

// perMinuteQuery counts the events synced since start by minute: each
// row's minute from start, and how many.
func (s *Store) perMinuteQuery(start time.Time) *query {
	q := newQuery(s.sx)
	at := s.sx.Time(start)
	var bucket string
	switch s.Dialect() {
	case Postgres:
		bucket = "FLOOR(EXTRACT(EPOCH FROM (synced_at - CAST(" + q.arg(at) + " AS TIMESTAMPTZ))) / 60)"
	case MySQL:
		bucket = "FLOOR(TIMESTAMPDIFF(MICROSECOND, " + q.arg(at) + ", synced_at) / 60000000)"
	default:
		bucket = "CAST(FLOOR((julianday(synced_at) - julianday(" + q.arg(at) + ")) * 1440) AS INTEGER)"
	}
	q.sql("SELECT b, COUNT(*) FROM (SELECT ", bucket, " AS b FROM ", s.t.Quoted,
		" WHERE synced_at >= ", q.arg(at), ") w GROUP BY b")
	return q
}

// LatencySample is the most events SyncLatency reads: the latest synced.
const LatencySample = 10000

// Latency is the sync latency (created → synced) of the latest events
// synced within a window.
type Latency struct {
	Events   int64         // events the percentiles are over: at most LatencySample
	P50, P99 time.Duration // 50th and 99th percentiles; 0 with none
}

// SyncLatency returns the median and 99th-percentile sync latency of the
// latest LatencySample events synced within the last window of the
// store's clock (all of them if fewer), read backwards through the index
// on synced_at, so its cost does not grow with the rate of deliveries:
// interpolated by percentile_cont on Postgres, the nearest-rank values on
// MySQL and SQLite. With watermarks the percentiles are read from the
// latency histogram of the relays' deliveries rows within the window and
// of the latest LatencySample events delivered per row within it (so
// Events may pass LatencySample), within 19 % of the exact values.
func (s *Store) SyncLatency(ctx context.Context, window time.Duration) (Latency, error) {
	if window <= 0 {
		return Latency{}, fmt.Errorf("sqlstore: sync latency: window %v is not positive", window)
	}
	cutoff := s.sx.Time(s.now().Add(-window))
	if s.marks {
		return s.markedSyncLatency(ctx, cutoff)
	}
	var l Latency
	if s.Dialect() == Postgres {
		q := s.percentilesQuery(cutoff)
		var p50, p99 sql.NullFloat64
		if err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&l.Events, &p50, &p99); err != nil {
			return Latency{}, fmt.Errorf("sqlstore: sync latency: %w", err)
		}
		l.P50, l.P99 = micros(p50), micros(p99)
		return l, nil
	}
	q := newQuery(s.sx).sql("SELECT COUNT(*) FROM ")
	s.latestSynced(q, cutoff)
	if err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&l.Events); err != nil {
		return Latency{}, fmt.Errorf("sqlstore: sync latency: %w", err)
	}
	for _, p := range []struct {
		f   float64
		out *time.Duration
	}{{0.5, &l.P50}, {0.99, &l.P99}} {
		if l.Events == 0 {
			break
		}
		rank := max(int64(math.Ceil(p.f*float64(l.Events))), 1)
		q := newQuery(s.sx).sql("SELECT latency FROM ")
		s.latestSynced(q, cutoff)
		q.sql(" ORDER BY latency LIMIT 1 OFFSET ", q.arg(rank-1))
		var v sql.NullFloat64
		err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&v)
		if err != nil && !errors.Is(err, sql.ErrNoRows) { // rows purged in between: no figure
			return Latency{}, fmt.Errorf("sqlstore: sync latency: %w", err)
		}
		*p.out = micros(v)
	}
	return l, nil
}

// latestSynced writes the derived table "(latest events synced since
// cutoff) w" with their latency, at most LatencySample of them.
func (s *Store) latestSynced(q *query, cutoff any) {
	q.sql("(SELECT ", s.d.latency(), " AS latency FROM ", s.t.Quoted, " WHERE synced_at >= ", q.arg(cutoff),
		" ORDER BY synced_at DESC LIMIT ", q.arg(LatencySample), ") w")
}

// percentilesQuery reads, on Postgres, the count and the interpolated
// median and 99th percentile of the latency of the latest events synced
// since cutoff.
func (s *Store) percentilesQuery(cutoff any) *query {
	q := newQuery(s.sx).sql("SELECT COUNT(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY latency), ",
		"percentile_cont(0.99) WITHIN GROUP (ORDER BY latency) FROM ")
	s.latestSynced(q, cutoff)
	return q
}

// Locate returns the event with the given ID as a page shows it, with
// its sequence number and partition, through the unique index on id. An
// unknown ID is an error wrapping ErrNotFound.
func (s *Store) Locate(ctx context.Context, id string) (PageEvent, error) {
	q := newQuery(s.sx)
	if s.marks {
		q.sql("SELECT ", s.pageCols(s.markedSynced()), " FROM ", s.t.Quoted, " c WHERE c.id = ", q.arg(id))
	} else {
		q.sql("SELECT ", selectColumns(s.sx, ""), ", partition_no FROM ", s.t.Quoted, " WHERE id = ", q.arg(id))
	}
	rows, err := s.readRows(ctx, q)
	if err != nil {
		return PageEvent{}, fmt.Errorf("sqlstore: locate %q: %w", id, err)
	}
	if len(rows) == 0 {
		return PageEvent{}, fmt.Errorf("sqlstore: locate %q: %w", id, ErrNotFound)
	}
	e, err := rows[0].event()
	if err != nil {
		return PageEvent{}, err
	}
	return PageEvent{Event: e, Seq: rows[0].Seq, Partition: int(rows[0].Partition.Int64)}, nil
}
