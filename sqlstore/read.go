package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

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

// Get returns the event with the given ID and its delivery state. An
// unknown ID is an error wrapping ErrNotFound.
//
// With watermarks, an event its partition's mark delivered has no
// synced_at of its own: its SyncedAt is the time the partition's mark was
// last recorded, and reads as "delivered by": the broker acknowledged it
// before, up to a heartbeat before for a recent mark, and the time moves
// on with each mark the partition records after it.
func (s *Store) Get(ctx context.Context, id string) (*outbox.Event, error) {
	q := newQuery(s.sx)
	if s.marks {
		q.sql("SELECT ", s.eventCols(s.markedSynced()), " FROM ", s.t.Quoted, " c WHERE c.id = ", q.arg(id))
	} else {
		q.sql("SELECT ", selectColumns(s.sx, ""), " FROM ", s.t.Quoted, " WHERE id = ", q.arg(id))
	}
	var row eventRow
	if err := s.db.GetContext(ctx, &row, q.String(), q.args...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("sqlstore: get %q: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("sqlstore: get %q: %w", id, err)
	}
	return row.event()
}

// List returns events with their delivery state: pending ones in the
// order the relay delivers them (higher priority first, then oldest
// first), synced and dead ones newest first. With watermarks the events
// partitions' marks delivered are synced, their SyncedAt the time of the
// mark (see Get), and the pending ones are read as Stats reads them.
func (s *Store) List(ctx context.Context, f ListFilter) ([]*outbox.Event, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = DefaultListLimit
	case limit > MaxListLimit:
		limit = MaxListLimit
	}
	if s.marks && f.Status != outbox.StatusDead {
		q, err := s.markedList(f, limit)
		if err != nil {
			return nil, err
		}
		return s.listRows(ctx, q)
	}
	q := newQuery(s.sx)
	q.sql("SELECT ", selectColumns(s.sx, ""), " FROM ", s.t.Quoted, " WHERE ")
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
	if order == "ASC" {
		// The relay's order, read from the index its claims walk.
		q.sql(" ORDER BY priority DESC, seq LIMIT ", q.arg(limit))
	} else {
		q.sql(" ORDER BY seq DESC LIMIT ", q.arg(limit))
	}
	return s.listRows(ctx, q)
}

func (s *Store) listRows(ctx context.Context, q *query) ([]*outbox.Event, error) {
	rows, err := s.readRows(ctx, q)
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
