package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/eventsync/outbox"
)

var _ outbox.StatsReader = (*Store)(nil)

// Stats implements outbox.StatsReader: the pending events (in all and by
// type), the age of the oldest one, the buried events, and of the events
// synced within the last window how many there were and their mean and
// 99th-percentile sync latency (created → synced). Ages and the window
// are measured against the store's clock. A window of zero or less skips
// the synced figures.
//
// Every figure reads an index, so Stats stays fast on a table of millions
// of rows: the pending figures read only the pending events (through
// outbox_events_pending_type_idx, migration 003), the dead count only the
// buried ones, and the synced figures only the events synced within the
// window (through the index on synced_at). The 99th percentile is
// interpolated by percentile_cont on Postgres; on MySQL and SQLite it is
// the nearest-rank value, read by ordering the window's events by latency.
//
// With watermarks (WithWatermarks) the pending figures read, per
// partition, the events after its mark, those of transactions its mark
// did not see and those delivered per row, through the indexes of the
// relays' reads: they cost what the pending events cost, however many
// delivered events the table retains. The synced figures add the events
// delivered per row within the window to what the relays' heartbeats
// recorded in <table>_deliveries within it (kept for a day, so the window
// is at most a day): count and mean exact, the 99th percentile read from
// their latency histogram, within 19 % of the exact value.
//
// The figures are one snapshot of the table: their statements run in one
// read-only transaction, at REPEATABLE READ on Postgres and MySQL (one
// snapshot for the whole transaction) and as one read transaction on
// SQLite, so an event marked while Stats runs is counted once, as pending
// or as synced, never as both or neither.
func (s *Store) Stats(ctx context.Context, window time.Duration) (outbox.Stats, error) {
	opts := &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	if s.Dialect() == SQLite {
		opts.Isolation = sql.LevelDefault // a read transaction is one snapshot (WAL)
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return outbox.Stats{}, fmt.Errorf("sqlstore: stats: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: nothing to undo
	if s.marks && s.Dialect() == Postgres {
		if _, err := tx.ExecContext(ctx, noJIT); err != nil {
			return outbox.Stats{}, fmt.Errorf("sqlstore: stats: begin: %w", err)
		}
	}
	st := outbox.Stats{PendingByType: map[string]int64{}}
	if err := s.pendingStats(ctx, tx, &st); err != nil {
		return outbox.Stats{}, fmt.Errorf("sqlstore: stats: pending: %w", err)
	}
	if hook, ok := statsHooks.Load(s); ok {
		hook.(func())()
	}
	dead := "SELECT COUNT(*) FROM " + s.t.Quoted + " WHERE synced_at IS NULL AND dead_at IS NOT NULL"
	if err := tx.QueryRowContext(ctx, dead).Scan(&st.Dead); err != nil {
		return outbox.Stats{}, fmt.Errorf("sqlstore: stats: dead: %w", err)
	}
	if window > 0 {
		if err := s.syncStats(ctx, tx, window, &st); err != nil {
			return outbox.Stats{}, fmt.Errorf("sqlstore: stats: synced: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return outbox.Stats{}, fmt.Errorf("sqlstore: stats: end: %w", err)
	}
	return st, nil
}

// statsHooks holds, by Store, a function Stats calls between its first
// read and the others: the test of its snapshot writes there. It is
// empty outside that test.
var statsHooks sync.Map

// pendingStatsQuery counts the pending events by type, with the oldest
// creation time of each.
func (s *Store) pendingStatsQuery() string {
	if s.marks {
		return s.markedPendingStatsQuery()
	}
	return "SELECT c.event_type, COUNT(*), " + s.sx.timeCol("MIN(c.created_at)") + " FROM " + s.t.Quoted +
		" c WHERE c.synced_at IS NULL AND c.dead_at IS NULL GROUP BY c.event_type"
}

func (s *Store) pendingStats(ctx context.Context, tx *sql.Tx, st *outbox.Stats) error {
	rows, err := tx.QueryContext(ctx, s.pendingStatsQuery())
	if err != nil {
		return err
	}
	defer rows.Close()
	var oldest time.Time
	for rows.Next() {
		var typ string
		var n int64
		var first dbTime
		if err := rows.Scan(&typ, &n, &first); err != nil {
			return err
		}
		st.PendingByType[typ] = n
		st.Pending += n
		if !first.IsZero() && (oldest.IsZero() || first.Before(oldest)) {
			oldest = first.Time
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if !oldest.IsZero() {
		st.OldestPendingAge = max(s.now().Sub(oldest), 0)
	}
	return nil
}

// syncStatsQuery returns the statement that counts the events synced
// since cutoff and averages their latency (and, on Postgres, takes the
// 99th percentile), with its arguments.
func (s *Store) syncStatsQuery(cutoff time.Time) *query {
	lat := s.d.latency()
	q := newQuery(s.sx).sql("SELECT COUNT(*), AVG(", lat, ")")
	if p99 := s.d.percentile(lat); p99 != "" {
		q.sql(", ", p99)
	}
	q.sql(" FROM ", s.t.Quoted, " WHERE synced_at >= ")
	q.sql(q.arg(s.sx.Time(cutoff)))
	return q
}

// p99Query returns the statement that reads the latency of nearest rank
// 99% among the events synced since cutoff, given that there are n of
// them: ordered from the slowest, it skips the slowest n-rank.
func (s *Store) p99Query(cutoff time.Time, n int64) *query {
	rank := int64(math.Ceil(0.99 * float64(n)))
	q := newQuery(s.sx).sql("SELECT ", s.d.latency(), " AS latency FROM ", s.t.Quoted, " WHERE synced_at >= ")
	q.sql(q.arg(s.sx.Time(cutoff)), " ORDER BY latency DESC LIMIT 1 OFFSET ", q.arg(n-rank))
	return q
}

func (s *Store) syncStats(ctx context.Context, tx *sql.Tx, window time.Duration, st *outbox.Stats) error {
	cutoff := s.now().Add(-window)
	if s.marks {
		return s.markedSyncStats(ctx, tx, cutoff, st)
	}
	q := s.syncStatsQuery(cutoff)
	var avg, p99 sql.NullFloat64
	dest := []any{&st.Synced, &avg}
	interpolated := s.d.percentile(s.d.latency()) != ""
	if interpolated {
		dest = append(dest, &p99)
	}
	if err := tx.QueryRowContext(ctx, q.String(), q.args...).Scan(dest...); err != nil {
		return err
	}
	if st.Synced == 0 {
		return nil
	}
	if !interpolated {
		q := s.p99Query(cutoff, st.Synced)
		err := tx.QueryRowContext(ctx, q.String(), q.args...).Scan(&p99)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	st.AvgSyncLatency = micros(avg)
	st.P99SyncLatency = micros(p99)
	return nil
}

func micros(v sql.NullFloat64) time.Duration {
	if !v.Valid || v.Float64 < 0 {
		return 0
	}
	return time.Duration(math.Round(v.Float64)) * time.Microsecond
}
