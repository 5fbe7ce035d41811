package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

var _ storage.Purger = (*Store)(nil)

// Purge implements storage.Purger: it deletes at most limit events synced
// more than olderThan ago (by the store's clock), oldest first, in one
// statement that finds them through the synced_at index and deletes them
// by seq. Pending and dead events are never touched. It returns how many
// it deleted.
//
// With watermarks, an event its partition's mark delivered has no
// synced_at, and its age is counted from its creation instead: it is
// purged once delivered and created more than olderThan ago (so one
// delivered late, after an outage longer than olderThan, is purged at
// once). Those are read per partition in save order from the oldest (see
// markedPurge), in a transaction of its own.
//
// With WithTimePartitions it deletes no row: it drops the oldest
// partition that ended more than olderThan ago and whose events were all
// delivered (none pending, none dead), and returns how many events it
// held, whatever limit says; a partition that holds a dead event is kept
// until the event is re-queued and delivered. Events thus stay up to
// olderThan plus a partition's period. See "Time partitions" in
// docs/databases-and-migrations.md.
func (s *Store) Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("sqlstore: purge: limit %d is not positive", limit)
	}
	if olderThan < 0 {
		return 0, fmt.Errorf("sqlstore: purge: age %v is negative", olderThan)
	}
	if s.tp != nil {
		n, err := s.purgeTimePartitions(ctx, olderThan)
		if err != nil {
			return n, fmt.Errorf("sqlstore: purge: %w", err)
		}
		return n, nil
	}
	q := newQuery(s.sx)
	var n int
	var err error
	if s.marks {
		s.markedPurge(q, s.sx.Time(s.now().Add(-olderThan)), limit)
		err = s.markedTx(ctx, true, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, q.String(), q.args...)
			if err != nil {
				return err
			}
			m, err := res.RowsAffected()
			n = int(m)
			return err
		})
	} else {
		s.d.purge(q, s.t.Quoted, s.sx.Time(s.now().Add(-olderThan)), limit)
		n, err = s.exec(ctx, q)
	}
	if err != nil {
		return n, fmt.Errorf("sqlstore: purge: %w", err)
	}
	return n, nil
}

// purgeBySeq writes the purge of Postgres and SQLite: the events to
// delete found through the synced_at index, deleted by seq.
func purgeBySeq(q *query, table string, cutoff any, limit int) {
	q.sql("DELETE FROM ", table, " WHERE seq IN (SELECT seq FROM ", table,
		" WHERE synced_at IS NOT NULL AND synced_at < ", q.arg(cutoff), " ORDER BY synced_at LIMIT ", q.arg(limit), ")")
}

// RequeueFilter selects the buried events Requeue gives back. IDs and Type
// narrow the selection together; All selects every buried event and
// cannot be combined with them. A filter that selects nothing in
// particular is an error, so that nothing is re-queued by accident.
type RequeueFilter struct {
	IDs  []string // buried events with these IDs
	Type string   // buried events of this type
	All  bool     // every buried event
}

// CountDead returns how many buried events wait for an operator: all of
// them, or with a non-empty eventType only those of that type. Unlike
// List it has no limit: it is one COUNT over the buried rows, read
// through the partial index on them (Postgres, SQLite) or the
// (synced_at, dead_at, event_type) index (MySQL).
func (s *Store) CountDead(ctx context.Context, eventType string) (int64, error) {
	q := newQuery(s.sx)
	q.sql("SELECT COUNT(*) FROM ", s.t.Quoted, " WHERE synced_at IS NULL AND dead_at IS NOT NULL")
	if eventType != "" {
		q.sql(" AND event_type = ", q.arg(eventType))
	}
	var n int64
	if err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlstore: count dead: %w", err)
	}
	return n, nil
}

// ErrEmptyFilter is returned by Requeue for a filter that names no IDs, no
// type and not All.
var ErrEmptyFilter = errors.New("sqlstore: requeue: empty filter (set IDs, Type, or All)")

// RequeuedErrorPrefix labels the last error of a re-queued event as
// history: Requeue keeps the error that buried the event, for the record,
// as RequeuedErrorPrefix + the error, so that once the event is delivered
// (or while it waits) nobody reads it as the outcome of its last attempt.
// A failure after the re-queue replaces it.
const RequeuedErrorPrefix = "before requeue: "

// Requeue gives buried events back to the relays: dead_at cleared,
// attempts 0, due now, no lease; the last error is kept as history,
// labelled with RequeuedErrorPrefix. Only buried events change (pending
// and synced ones never do), and it returns how many did. A re-queued
// event that heads its aggregate is delivered before the events it held
// back. With watermarks a re-queued event is delivered per row, as every
// event that failed is (one buried by a relay without watermarks keeps
// its transaction ID until then).
func (s *Store) Requeue(ctx context.Context, f RequeueFilter) (int, error) {
	if f.All && (len(f.IDs) > 0 || f.Type != "") {
		return 0, fmt.Errorf("sqlstore: requeue: All cannot be combined with IDs or Type: %w", outbox.ErrInvalidConfig)
	}
	if !f.All && len(f.IDs) == 0 && f.Type == "" {
		return 0, ErrEmptyFilter
	}
	now := s.sx.Time(s.now())
	// The aggregates these events held are read again by the next claim
	// (other Stores read them at their next heartbeat).
	defer s.c.requeued()
	build := func(q *query, ids []string) {
		q.sql("UPDATE ", s.t.Quoted, " SET dead_at = NULL, attempts = 0, next_attempt_at = ", q.arg(now),
			", claim_token = NULL, locked_until = NULL, last_error = ")
		if s.Dialect() == MySQL {
			q.sql("CONCAT(", q.arg(RequeuedErrorPrefix), ", last_error)")
		} else {
			q.sql(q.arg(RequeuedErrorPrefix), " || last_error")
		}
		q.sql(s.perRow(), " WHERE synced_at IS NULL AND dead_at IS NOT NULL")
		if f.Type != "" {
			q.sql(" AND event_type = ", q.arg(f.Type))
		}
		if ids != nil {
			q.sql(" AND ", q.in("id", ids, false))
		}
	}
	if len(f.IDs) == 0 {
		q := newQuery(s.sx)
		build(q, nil)
		n, err := s.exec(ctx, q)
		if err != nil {
			return n, fmt.Errorf("sqlstore: requeue: %w", err)
		}
		return n, nil
	}
	total := 0
	for _, chunk := range chunks(dedupe(f.IDs), s.sx.maxParams-4) {
		q := newQuery(s.sx)
		build(q, chunk)
		n, err := s.exec(ctx, q)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlstore: requeue: %w", err)
		}
	}
	return total, nil
}
