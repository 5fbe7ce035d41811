package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
)

// State selects the events of one delivery state for Page, Count and
// RequeueMatching. It is finer than outbox.Status: StateFailed is the part
// of StatePending that failed at least once and backs off.
type State string

// The states Page reads.
const (
	StatePending State = "pending" // not synced, not dead (backing off included)
	StateFailed  State = "failed"  // pending after at least one failed attempt
	StateDead    State = "dead"    // buried
	StateSynced  State = "synced"  // acknowledged by the broker
)

// Limits of Page.
const (
	DefaultPageLimit = 50   // PageQuery.Limit when zero
	MaxPageLimit     = 1000 // larger limits are cut to this
)

// PageQuery selects one page of the events of a state. The filters narrow
// it together; empty or zero ones select everything.
type PageQuery struct {
	// State is the events' state; required.
	State State
	// Type, Topic and AggregateID select events with exactly that value.
	Type, Topic, AggregateID string
	// From and To, when not zero, select events created at or after From
	// and before To.
	From, To time.Time
	// After is the cursor of the page to read, Page.Next of the page
	// before it; "" reads the first page.
	After string
	// Limit caps the events of the page. Defaults to DefaultPageLimit; at
	// most MaxPageLimit.
	Limit int
}

// PageEvent is one event of a page with where it sits in the table.
type PageEvent struct {
	*outbox.Event
	// Seq is the event's sequence number: its position in save order.
	Seq int64
	// Partition is the partition of its aggregate.
	Partition int
}

// Page is one page of events, in the state's order: pending and failed
// ones as the relay takes them (higher priority first, then save order),
// dead ones newest first by sequence, synced ones most recently synced
// first.
type Page struct {
	Events []PageEvent
	// Next is the cursor of the next page; "" when this is the last.
	Next string
}

// ErrBadCursor is wrapped by Page for a cursor it did not write.
var ErrBadCursor = errors.New("sqlstore: page: bad cursor")

// cursor is the position of the last event of a page: its seq and, for
// the orders that need it, its priority or the micro second it was
// synced.
type cursor struct {
	seq  int64
	key  int64 // priority (pending, failed) or synced_at in Unix microseconds (synced)
	used bool
}

func (c cursor) String(st State) string {
	switch st {
	case StatePending, StateFailed, StateSynced:
		return strconv.FormatInt(c.key, 10) + "." + strconv.FormatInt(c.seq, 10)
	}
	return strconv.FormatInt(c.seq, 10)
}

func parseCursor(st State, s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	bad := fmt.Errorf("%w %q", ErrBadCursor, s)
	key, seq, two := strings.Cut(s, ".")
	if two != (st != StateDead) {
		return cursor{}, bad
	}
	if !two {
		seq = key
	}
	c := cursor{used: true}
	var err error
	if c.seq, err = strconv.ParseInt(seq, 10, 64); err != nil {
		return cursor{}, bad
	}
	if two {
		if c.key, err = strconv.ParseInt(key, 10, 64); err != nil {
			return cursor{}, bad
		}
	}
	return c, nil
}

// where writes the state's condition and the filters of pq.
func (s *Store) where(q *query, pq PageQuery) error {
	switch pq.State {
	case StatePending:
		q.sql(" WHERE synced_at IS NULL AND dead_at IS NULL")
	case StateFailed:
		q.sql(" WHERE synced_at IS NULL AND dead_at IS NULL AND attempts > 0")
	case StateDead:
		q.sql(" WHERE synced_at IS NULL AND dead_at IS NOT NULL")
	case StateSynced:
		q.sql(" WHERE synced_at IS NOT NULL")
	default:
		return fmt.Errorf("sqlstore: unknown state %q", pq.State)
	}
	s.filters(q, pq, "")
	return nil
}

// filters writes the filters of pq on the columns named with prefix (a
// table alias and a dot, or empty), each with a leading " AND ".
func (s *Store) filters(q *query, pq PageQuery, prefix string) {
	if pq.Type != "" {
		q.sql(" AND ", prefix, "event_type = ", q.arg(pq.Type))
	}
	if pq.Topic != "" {
		q.sql(" AND ", prefix, "topic = ", q.arg(pq.Topic))
	}
	if pq.AggregateID != "" {
		q.sql(" AND ", prefix, "aggregate_id = ", q.arg(pq.AggregateID))
	}
	if !pq.From.IsZero() {
		q.sql(" AND ", prefix, "created_at >= ", q.arg(s.sx.Time(pq.From.UTC())))
	}
	if !pq.To.IsZero() {
		q.sql(" AND ", prefix, "created_at < ", q.arg(s.sx.Time(pq.To.UTC())))
	}
}

// Page reads one page of the events of pq.State that match its filters,
// by keyset (the cursor names the last event read), never by OFFSET:
// pending and failed events through the index the relay's claims walk
// (priority, then seq), dead ones through the index of buried events,
// synced ones through the index on synced_at (from pq.From, when set, on),
// so a page costs the same however deep it is. The other filters are
// checked on the rows those indexes yield (an aggregate ID through the
// index of undelivered events where the planner prefers it): a filter
// that matches few of many rows reads many to fill a page.
//
// With watermarks the events partitions' marks delivered are synced, as
// of the time of the mark (see Get), and pending and failed events are
// read per partition as Stats reads them, ordered per partition: a page
// of them reads the pending events of every partition, and a synced page
// reads per partition back from its mark.
func (s *Store) Page(ctx context.Context, pq PageQuery) (Page, error) {
	limit := pq.Limit
	switch {
	case limit <= 0:
		limit = DefaultPageLimit
	case limit > MaxPageLimit:
		limit = MaxPageLimit
	}
	switch pq.State {
	case StatePending, StateFailed, StateDead, StateSynced:
	default:
		return Page{}, fmt.Errorf("sqlstore: page: unknown state %q", pq.State)
	}
	c, err := parseCursor(pq.State, pq.After)
	if err != nil {
		return Page{}, err
	}
	var rows []eventRow
	if s.marks && pq.State != StateDead {
		rows, err = s.readRows(ctx, s.markedPageQuery(pq, c, limit+1))
	} else if pq.State == StatePending || pq.State == StateFailed {
		rows, err = s.pendingPage(ctx, pq, c, limit+1)
	} else {
		q := s.pageQuery(pq, c, limit+1)
		rows, err = s.readRows(ctx, q)
	}
	if err != nil {
		return Page{}, fmt.Errorf("sqlstore: page: %w", err)
	}
	var p Page
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	for i := range rows {
		e, err := rows[i].event()
		if err != nil {
			return Page{}, err
		}
		p.Events = append(p.Events, PageEvent{Event: e, Seq: rows[i].Seq, Partition: int(rows[i].Partition.Int64)})
	}
	if more {
		last := rows[len(rows)-1]
		next := cursor{seq: last.Seq}
		switch pq.State {
		case StatePending, StateFailed:
			next.key = int64(last.Priority)
		case StateSynced:
			next.key = last.SyncedAt.UnixMicro()
		}
		p.Next = next.String(pq.State)
	}
	return p, nil
}

// pendingPage reads the pending (or failed) page after c in the relay's
// order, priority descending then seq: the rest of c's priority, then, if
// the page is not full, the lower priorities; each a range of the claim
// index.
func (s *Store) pendingPage(ctx context.Context, pq PageQuery, c cursor, limit int) ([]eventRow, error) {
	cols := selectColumns(s.sx, "") + ", partition_no"
	if !c.used {
		q := newQuery(s.sx).sql("SELECT ", cols, " FROM ", s.t.Quoted)
		if err := s.where(q, pq); err != nil {
			return nil, err
		}
		q.sql(" ORDER BY priority DESC, seq LIMIT ", q.arg(limit))
		return s.readRows(ctx, q)
	}
	q := newQuery(s.sx).sql("SELECT ", cols, " FROM ", s.t.Quoted)
	if err := s.where(q, pq); err != nil {
		return nil, err
	}
	q.sql(" AND priority = ", q.arg(c.key), " AND seq > ", q.arg(c.seq), " ORDER BY seq LIMIT ", q.arg(limit))
	rows, err := s.readRows(ctx, q)
	if err != nil || len(rows) >= limit {
		return rows, err
	}
	q = newQuery(s.sx).sql("SELECT ", cols, " FROM ", s.t.Quoted)
	if err := s.where(q, pq); err != nil {
		return nil, err
	}
	q.sql(" AND priority < ", q.arg(c.key), " ORDER BY priority DESC, seq LIMIT ", q.arg(limit-len(rows)))
	more, err := s.readRows(ctx, q)
	return append(rows, more...), err
}

// pageQuery writes the statement of a dead or synced page after c.
func (s *Store) pageQuery(pq PageQuery, c cursor, limit int) *query {
	q := newQuery(s.sx).sql("SELECT ", selectColumns(s.sx, ""), ", partition_no FROM ", s.t.Quoted)
	_ = s.where(q, pq) // the state is dead or synced: known
	if pq.State == StateDead {
		if c.used {
			q.sql(" AND seq < ", q.arg(c.seq))
		}
		q.sql(" ORDER BY seq DESC LIMIT ", q.arg(limit))
		return q
	}
	if !pq.From.IsZero() {
		// An event is synced after it was created: the creation time
		// bounds the range of the index on synced_at (with a minute to
		// spare for the clocks of different machines).
		q.sql(" AND synced_at >= ", q.arg(s.sx.Time(pq.From.UTC().Add(-time.Minute))))
	}
	if c.used {
		at := s.sx.Time(time.UnixMicro(c.key).UTC())
		q.sql(" AND synced_at <= ", q.arg(at), " AND (synced_at < ", q.arg(at), " OR seq < ", q.arg(c.seq), ")")
	}
	q.sql(" ORDER BY synced_at DESC, seq DESC LIMIT ", q.arg(limit))
	return q
}

func (s *Store) readRows(ctx context.Context, q *query) ([]eventRow, error) {
	if s.marks {
		var rows []eventRow
		err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error {
			r, err := tx.QueryxContext(ctx, q.String(), q.args...)
			if err == nil {
				rows, err = scanRows(r)
			}
			return err
		})
		return rows, err
	}
	r, err := s.db.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, err
	}
	return scanRows(r)
}

// Count returns how many events of pq.State match pq's filters (its
// cursor and limit play no part): one COUNT through the state's index.
// On a state of millions of rows it reads them all; the console uses it
// on dead events, to tell how many a re-queue would change. With
// watermarks it counts the states as Page reads them.
func (s *Store) Count(ctx context.Context, pq PageQuery) (int64, error) {
	q := newQuery(s.sx).sql("SELECT COUNT(*) FROM ", s.t.Quoted)
	if err := s.where(q, pq); err != nil {
		return 0, err
	}
	var n int64
	if s.marks && pq.State != StateDead {
		q = s.markedCountQuery(pq)
		err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error { return tx.QueryRowContext(ctx, q.String(), q.args...).Scan(&n) })
		if err != nil {
			return 0, fmt.Errorf("sqlstore: count: %w", err)
		}
		return n, nil
	}
	if err := s.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlstore: count: %w", err)
	}
	return n, nil
}

// requeueChunk is how many IDs RequeueMatching reads and re-queues at a
// time.
const requeueChunk = 500

// RequeueMatching re-queues, as Requeue does, every dead event that
// matches pq's filters (pq.State must be StateDead; its cursor and limit
// play no part): it reads their IDs a page at a time through the index of
// buried events and hands each page to Requeue. It returns how many
// events it re-queued; on an error, how many it had re-queued before.
func (s *Store) RequeueMatching(ctx context.Context, pq PageQuery) (int, error) {
	if pq.State != StateDead {
		return 0, fmt.Errorf("sqlstore: requeue matching: state %q: only dead events are re-queued: %w", pq.State, outbox.ErrInvalidConfig)
	}
	pq.After, pq.Limit = "", requeueChunk
	total := 0
	for {
		q := newQuery(s.sx).sql("SELECT id, seq FROM ", s.t.Quoted)
		_ = s.where(q, pq)
		if pq.After != "" {
			seq, _ := strconv.ParseInt(pq.After, 10, 64)
			q.sql(" AND seq < ", q.arg(seq))
		}
		q.sql(" ORDER BY seq DESC LIMIT ", q.arg(requeueChunk))
		rows, err := s.db.QueryContext(ctx, q.String(), q.args...)
		if err != nil {
			return total, fmt.Errorf("sqlstore: requeue matching: %w", err)
		}
		var ids []string
		var last int64
		for rows.Next() {
			var id string
			if err := rows.Scan(&id, &last); err != nil {
				rows.Close()
				return total, fmt.Errorf("sqlstore: requeue matching: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return total, fmt.Errorf("sqlstore: requeue matching: %w", err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		n, err := s.Requeue(ctx, RequeueFilter{IDs: ids})
		total += n
		if err != nil || len(ids) < requeueChunk {
			return total, err
		}
		pq.After = strconv.FormatInt(last, 10)
	}
}
