package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
)

// The figures of a Store with watermarks (see marked.go). What relays
// delivered by their marks has no synced_at: each heartbeat of such a
// relay writes a row of it to <table>_deliveries (how many, their
// latency's sum, maximum and histogram), and the figures add those rows
// to the events delivered per row (synced_at, with no transaction ID:
// an event delivered ahead of any read and written at a handoff keeps
// its ID and is counted in a deliveries row already). Percentiles come
// from the merged histogram, four buckets a doubling, each read as its
// middle: within 19 % of the exact value (a bucket spans a factor of
// 2^(1/4) = 1.19).

// markedPendingStatsQuery counts the pending events of a Store with
// watermarks by type, with the oldest creation time of each.
func (s *Store) markedPendingStatsQuery() string {
	q := newQuery(s.sx).sql("SELECT c.event_type, COUNT(*), ", s.sx.timeCol("MIN(c.created_at)"), " FROM (")
	s.pendingUnion(q, markedRead{cols: func(string) string { return "c.event_type, c.created_at" }})
	q.sql(") c GROUP BY c.event_type")
	return q.String()
}

// queryer is what the figures read through: the database or a
// transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// deliveredSince reads what was delivered since cutoff: the deliveries
// rows and, bucketed in the same histogram, the latency of the events
// delivered per row (with sample > 0, of the latest sample of those).
func (s *Store) deliveredSince(ctx context.Context, db queryer, cutoff any, sample int) (deliveries, error) {
	var d deliveries
	q := newQuery(s.sx)
	q.sql("SELECT events, latency_sum_us, latency_max_us, latency_hist FROM ", s.t.Sibling(deliveriesSuffix), " WHERE at >= ", q.arg(cutoff))
	rows, err := db.QueryContext(ctx, q.String(), q.args...)
	if err != nil {
		return d, err
	}
	for rows.Next() {
		var r deliveries
		var hist string
		if err := rows.Scan(&r.events, &r.sumUS, &r.maxUS, &hist); err != nil {
			rows.Close()
			return d, err
		}
		r.parseHist(hist)
		d.merge(r)
	}
	if err := rows.Close(); err != nil {
		return d, err
	}
	// The bucket as latencyBucket computes it, of whole microseconds.
	greatest := "GREATEST"
	if s.Dialect() == SQLite {
		greatest = "MAX" // of two arguments: the larger
	}
	q = newQuery(s.sx)
	q.sql("SELECT FLOOR(4 * LN(1 + l) / LN(2)), COUNT(*), CAST(SUM(l) AS BIGINT), MAX(l) FROM (SELECT CAST(", greatest, "(FLOOR(",
		s.d.latency(), "), 0) AS BIGINT) AS l FROM ", s.t.Quoted, " WHERE synced_at >= ", q.arg(cutoff), " AND xid IS NULL")
	if sample > 0 {
		q.sql(" ORDER BY synced_at DESC LIMIT ", q.arg(sample))
	}
	q.sql(") r GROUP BY 1")
	rows, err = db.QueryContext(ctx, q.String(), q.args...)
	if err != nil {
		return d, err
	}
	defer rows.Close()
	for rows.Next() {
		var b float64
		var r deliveries
		if err := rows.Scan(&b, &r.events, &r.sumUS, &r.maxUS); err != nil {
			return d, err
		}
		r.buckets = map[int]int64{int(b): r.events}
		d.merge(r)
	}
	return d, rows.Err()
}

// markedSyncStats fills the synced figures of Stats for a Store with
// watermarks: the count and mean exact, the 99th percentile from the
// histogram.
func (s *Store) markedSyncStats(ctx context.Context, tx *sql.Tx, cutoff time.Time, st *outbox.Stats) error {
	d, err := s.deliveredSince(ctx, tx, s.sx.Time(cutoff), 0)
	if err != nil {
		return err
	}
	st.Synced = d.events
	if d.events == 0 {
		return nil
	}
	st.AvgSyncLatency = time.Duration(math.Round(float64(d.sumUS)/float64(d.events))) * time.Microsecond
	st.P99SyncLatency, _ = d.percentile(0.99)
	return nil
}

// markedPerMinuteQuery counts by minute from start the events delivered
// per row and those of the deliveries rows (at their heartbeat's time).
func (s *Store) markedPerMinuteQuery(start time.Time) *query {
	q := newQuery(s.sx)
	at := s.sx.Time(start)
	minute := func(col string) string {
		if s.Dialect() == SQLite {
			return "CAST(FLOOR((julianday(" + col + ") - julianday(" + q.arg(at) + ")) * 1440) AS INTEGER)"
		}
		return "FLOOR(EXTRACT(EPOCH FROM (" + col + " - CAST(" + q.arg(at) + " AS TIMESTAMPTZ))) / 60)"
	}
	q.sql("SELECT b, SUM(n) FROM (SELECT ", minute("synced_at"), " AS b, 1 AS n FROM ", s.t.Quoted, " WHERE synced_at >= ", q.arg(at),
		" AND xid IS NULL UNION ALL SELECT ", minute("at"), ", events FROM ", s.t.Sibling(deliveriesSuffix), " WHERE at >= ", q.arg(at), ") w GROUP BY b")
	return q
}

// markedSyncLatency is SyncLatency for a Store with watermarks: over the
// deliveries rows of the window and the latest LatencySample events of it
// delivered per row, percentiles from their histogram.
func (s *Store) markedSyncLatency(ctx context.Context, cutoff any) (Latency, error) {
	d, err := s.deliveredSince(ctx, s.db, cutoff, LatencySample)
	if err != nil {
		return Latency{}, fmt.Errorf("sqlstore: sync latency: %w", err)
	}
	l := Latency{Events: d.events}
	l.P50, _ = d.percentile(0.5)
	l.P99, _ = d.percentile(0.99)
	return l, nil
}

// markedPending is Pending for a Store with watermarks. It reads at most
// PendingExactLimit+1 pending events (any of them) by type; up to the
// limit that is every one, and the figures are exact. Past it the total
// is the planner's estimate of the events after the partitions' marks
// and of those delivered per row (the events of late transactions left
// out), shared among the types as among the events read; the oldest age
// is that of the first pending event in save order of each partition,
// and of the transactions its mark saw in progress.
func (s *Store) markedPending(ctx context.Context) (PendingFigures, error) {
	var f PendingFigures
	err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error {
		var err error
		f, err = s.markedPendingIn(ctx, tx)
		return err
	})
	return f, err
}

func (s *Store) markedPendingIn(ctx context.Context, db queryer) (PendingFigures, error) {
	q := newQuery(s.sx).sql("SELECT c.event_type, COUNT(*), MIN(c.created_at) FROM (SELECT * FROM (")
	s.pendingUnion(q, markedRead{cols: func(string) string { return "c.event_type, c.created_at" }})
	q.sql(") c LIMIT ", strconv.Itoa(PendingExactLimit+1), ") c GROUP BY c.event_type")
	rows, err := db.QueryContext(ctx, q.String())
	if err != nil {
		return PendingFigures{}, fmt.Errorf("sqlstore: pending: %w", err)
	}
	f := PendingFigures{ByType: map[string]int64{}}
	var oldest time.Time
	for rows.Next() {
		var typ string
		var n int64
		var first dbTime
		if err := rows.Scan(&typ, &n, &first); err != nil {
			rows.Close()
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: %w", err)
		}
		f.ByType[typ] = n
		f.Total += n
		if !first.IsZero() && (oldest.IsZero() || first.Before(oldest)) {
			oldest = first.Time
		}
	}
	if err := rows.Close(); err != nil {
		return PendingFigures{}, fmt.Errorf("sqlstore: pending: %w", err)
	}
	if f.Total > PendingExactLimit {
		if oldest, err = s.markedOldest(ctx, db); err != nil {
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: oldest: %w", err)
		}
		if err := s.markedEstimate(ctx, db, &f); err != nil {
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: estimate: %w", err)
		}
	}
	if !oldest.IsZero() {
		f.OldestAge = max(s.now().Sub(oldest), 0)
	}
	return f, nil
}

// markedOldest reads the oldest creation time among the first pending
// event after each partition's mark, the first delivered per row of each
// partition, and those of the transactions each mark saw in progress:
// one probe each.
func (s *Store) markedOldest(ctx context.Context, db queryer) (time.Time, error) {
	var oldest dbTime
	if err := db.QueryRowContext(ctx, s.markedOldestQuery()).Scan(&oldest); err != nil {
		return time.Time{}, err
	}
	return oldest.Time, nil
}

func (s *Store) markedOldestQuery() string {
	t, parts := s.t.Quoted, s.t.Sibling(partitionsSuffix)
	const pending = " AND c.synced_at IS NULL AND c.dead_at IS NULL"
	return "SELECT MIN(c.created_at) FROM ((SELECT c.created_at FROM " + parts + " w CROSS JOIN LATERAL (SELECT c.created_at FROM " + t +
		" c WHERE c.partition_no = w.partition_no AND c.xid IS NOT NULL AND c.seq > w.mark_seq AND c.seq <= " + unbounded + pending +
		" ORDER BY c.seq LIMIT 1) c) UNION ALL (SELECT c.created_at FROM " + parts + " w CROSS JOIN LATERAL (SELECT c.created_at FROM " + t +
		" c WHERE c.partition_no = w.partition_no AND c.xid IS NULL" + pending + " ORDER BY c.seq LIMIT 1) c) UNION ALL (SELECT c.created_at FROM " +
		parts + " w CROSS JOIN LATERAL txid_snapshot_xip(w.mark_snap) x(xid) CROSS JOIN LATERAL (SELECT c.created_at, c.seq FROM " + t +
		" c WHERE c.partition_no = w.partition_no AND c.xid = x.xid" + pending + " OFFSET 0) c WHERE c.seq <= w.mark_seq)) c"
}

// markedEstimate replaces f's total by the planner's estimate of the
// pending events, from the marks as the partitions table holds them now,
// and shares it among f's types in their proportions.
func (s *Store) markedEstimate(ctx context.Context, db queryer, f *PendingFigures) error {
	rows, err := db.QueryContext(ctx, "SELECT partition_no, mark_seq FROM "+s.t.Sibling(partitionsSuffix)+" ORDER BY partition_no")
	if err != nil {
		return err
	}
	q := newQuery(s.sx).sql("EXPLAIN (FORMAT JSON) SELECT 1 FROM ", s.t.Quoted, " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND (c.xid IS NULL")
	for rows.Next() {
		var p, seq int64
		if err := rows.Scan(&p, &seq); err != nil {
			rows.Close()
			return err
		}
		q.sql(" OR (c.partition_no = ", strconv.FormatInt(p, 10), " AND c.xid IS NOT NULL AND c.seq > ", q.arg(seq), ")")
	}
	if err := rows.Close(); err != nil {
		return err
	}
	q.sql(")")
	var plan string
	if err := db.QueryRowContext(ctx, q.String(), q.args...).Scan(&plan); err != nil {
		return err
	}
	var p []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		}
	}
	if err := json.Unmarshal([]byte(plan), &p); err != nil || len(p) == 0 {
		return fmt.Errorf("cannot read the plan %q", plan)
	}
	total, read := int64(p[0].Plan.Rows), f.Total
	f.Total, f.Estimated = 0, true
	for typ, n := range f.ByType {
		f.ByType[typ] = int64(math.Round(float64(total) * float64(n) / float64(read)))
		f.Total += f.ByType[typ]
	}
	return nil
}
