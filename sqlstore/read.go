package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/eventsync/outbox"
)

// Limits of List.
const (
	DefaultListLimit = 100   // ListFilter.Limit when zero
	MaxListLimit     = 10000 // larger limits are cut to this
)

// ListFilter selects the events List returns. Zero fields select
// everything.
type ListFilter struct {
	// Status selects pending (oldest first), synced or dead events (newest
	// first). Empty lists events of every status, newest first.
	Status outbox.Status
	// Type selects events of one type.
	Type string
	// Limit caps how many events are returned. Defaults to
	// DefaultListLimit; at most MaxListLimit.
	Limit int
}

// Stats is a snapshot of the outbox table, the figures operators watch.
type Stats struct {
	Pending          int64            // events not yet acknowledged (not dead)
	PendingByType    map[string]int64 // Pending by event type
	OldestPendingAge time.Duration    // age of the oldest pending event; 0 if none
	Synced           int64            // events acknowledged by the broker
	Dead             int64            // events buried after failures
}

// Get returns the event with the given ID and its delivery state. An
// unknown ID is an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*outbox.Event, error) {
	q := newQuery(s.d)
	q.sql("SELECT ", selectColumns(s.d), " FROM ", s.t.quoted, " WHERE id = ", q.arg(id))
	var row eventRow
	if err := s.db.GetContext(ctx, &row, q.String(), q.args...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("sqlstore: get %q: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("sqlstore: get %q: %w", id, err)
	}
	return row.event()
}

// List returns events with their delivery state: pending ones oldest first
// (the order the relay delivers them), synced and dead ones newest first.
func (s *Store) List(ctx context.Context, f ListFilter) ([]*outbox.Event, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = DefaultListLimit
	case limit > MaxListLimit:
		limit = MaxListLimit
	}
	q := newQuery(s.d)
	q.sql("SELECT ", selectColumns(s.d), " FROM ", s.t.quoted, " WHERE ")
	order := "DESC"
	switch f.Status {
	case "":
		q.sql("1 = 1")
	case outbox.StatusPending:
		q.sql("synced_at IS NULL AND dead_at IS NULL")
		order = "ASC"
	case outbox.StatusSynced:
		q.sql("synced_at IS NOT NULL")
	case outbox.StatusDead:
		q.sql("synced_at IS NULL AND dead_at IS NOT NULL")
	default:
		return nil, fmt.Errorf("sqlstore: list: unknown status %q", f.Status)
	}
	if f.Type != "" {
		q.sql(" AND event_type = ", q.arg(f.Type))
	}
	q.sql(" ORDER BY seq ", order, " LIMIT ", q.arg(limit))
	r, err := s.db.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list: %w", err)
	}
	rows, err := scanRows(r)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list: %w", err)
	}
	events := make([]*outbox.Event, 0, len(rows))
	for i := range rows {
		e, err := rows[i].event()
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, nil
}

// Stats counts events by status, pending ones by type, and measures the
// age of the oldest pending event against the store's clock. The pending
// figures read the pending index; Synced and Dead scan the table.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{PendingByType: map[string]int64{}}
	pending := "SELECT event_type, COUNT(*), " + s.d.timeCol("MIN(created_at)") + " FROM " + s.t.quoted +
		" WHERE synced_at IS NULL AND dead_at IS NULL GROUP BY event_type"
	rows, err := s.db.QueryContext(ctx, pending)
	if err != nil {
		return Stats{}, fmt.Errorf("sqlstore: stats: %w", err)
	}
	defer rows.Close()
	var oldest time.Time
	for rows.Next() {
		var typ string
		var n int64
		var first dbTime
		if err := rows.Scan(&typ, &n, &first); err != nil {
			return Stats{}, fmt.Errorf("sqlstore: stats: %w", err)
		}
		st.PendingByType[typ] = n
		st.Pending += n
		if oldest.IsZero() || (!first.IsZero() && first.Before(oldest)) {
			oldest = first.Time
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, fmt.Errorf("sqlstore: stats: %w", err)
	}
	if !oldest.IsZero() {
		st.OldestPendingAge = max(s.now().Sub(oldest), 0)
	}
	done := "SELECT " +
		"COUNT(CASE WHEN synced_at IS NOT NULL THEN 1 END), " +
		"COUNT(CASE WHEN synced_at IS NULL AND dead_at IS NOT NULL THEN 1 END) FROM " + s.t.quoted
	if err := s.db.QueryRowContext(ctx, done).Scan(&st.Synced, &st.Dead); err != nil {
		return Stats{}, fmt.Errorf("sqlstore: stats: %w", err)
	}
	return st, nil
}
