package sqlstore

import (
	"fmt"
	"time"

	"github.com/eventsync/outbox"
)

// The lists, pages and purge of a Store with watermarks (see marked.go).
// A page of pending (or failed) events takes, per partition and branch,
// the first limit in claim order (priority, then seq) and then the first
// limit of those; a page of synced events the latest limit delivered per
// row (by synced_at) and, per partition, the latest limit its mark
// delivered (by seq, all at the mark's time), and then the first limit
// of those in (delivery time, seq) order, newest first.

// markedList writes List's statement for a Store with watermarks (every
// status but dead, which reads as without).
func (s *Store) markedList(f ListFilter, limit int) (*query, error) {
	q := newQuery(s.sx)
	byType := func(q *query) {
		if f.Type != "" {
			q.sql(" AND c.event_type = ", q.arg(f.Type))
		}
	}
	newest := func(q *query) { q.sql(" ORDER BY c.seq DESC LIMIT ", q.arg(limit)) }
	switch f.Status {
	case "":
		q.sql("SELECT ", s.eventCols(s.markedSynced()), " FROM ", s.t.Quoted, " c WHERE 1 = 1")
		byType(q)
		newest(q)
	case outbox.StatusPending:
		s.pendingUnion(q, markedRead{cols: s.eventCols, filter: byType, bound: func(q *query) {
			q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit))
		}})
		q.sql(" ORDER BY priority DESC, seq LIMIT ", q.arg(limit))
	case outbox.StatusSynced:
		r := markedRead{cols: s.eventCols, filter: byType, bound: newest}
		s.syncedBranch(q, r)
		q.sql(" UNION ALL ")
		s.coveredBranch(q, r, nil)
		q.sql(" ORDER BY seq DESC LIMIT ", q.arg(limit))
	default:
		return nil, fmt.Errorf("sqlstore: list: unknown status %q", f.Status)
	}
	return q, nil
}

// markedPageQuery writes the statement of a page of pending, failed or
// synced events after c for a Store with watermarks.
func (s *Store) markedPageQuery(pq PageQuery, c cursor, limit int) *query {
	q := newQuery(s.sx)
	if pq.State == StatePending || pq.State == StateFailed {
		s.pendingUnion(q, markedRead{cols: s.pageCols, filter: func(q *query) {
			s.stateFilters(q, pq)
			if c.used {
				q.sql(" AND (c.priority < ", q.arg(c.key), " OR (c.priority = ", q.arg(c.key), " AND c.seq > ", q.arg(c.seq), "))")
			}
		}, bound: func(q *query) {
			q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit))
		}})
		q.sql(" ORDER BY priority DESC, seq LIMIT ", q.arg(limit))
		return q
	}
	var at any
	if c.used {
		at = s.sx.Time(time.UnixMicro(c.key).UTC())
	}
	s.syncedBranch(q, markedRead{cols: s.pageCols, filter: func(q *query) {
		s.syncedFilters(q, pq)
		if c.used {
			q.sql(" AND c.synced_at <= ", q.arg(at), " AND (c.synced_at < ", q.arg(at), " OR c.seq < ", q.arg(c.seq), ")")
		}
	}, bound: func(q *query) {
		q.sql(" ORDER BY c.synced_at DESC, c.seq DESC LIMIT ", q.arg(limit))
	}})
	q.sql(" UNION ALL ")
	s.coveredBranch(q, markedRead{cols: s.pageCols, filter: func(q *query) {
		s.filters(q, pq, "c.")
		if c.used {
			q.sql(" AND (w.mark_at < ", q.arg(at), " OR c.seq < ", q.arg(c.seq), ")")
		}
	}, bound: func(q *query) {
		q.sql(" ORDER BY c.seq DESC LIMIT ", q.arg(limit))
	}}, func(q *query) {
		if c.used {
			q.sql(" AND w.mark_at <= ", q.arg(at))
		}
	})
	q.sql(" ORDER BY synced_at DESC, seq DESC LIMIT ", q.arg(limit))
	return q
}

// stateFilters writes pq's filters, and for failed events the failure.
func (s *Store) stateFilters(q *query, pq PageQuery) {
	if pq.State == StateFailed {
		q.sql(" AND c.attempts > 0")
	}
	s.filters(q, pq, "c.")
}

// syncedFilters writes pq's filters on events synced per row, with the
// bound From sets on synced_at (an event is synced after it was created,
// with a minute to spare for the clocks of different machines).
func (s *Store) syncedFilters(q *query, pq PageQuery) {
	s.filters(q, pq, "c.")
	if !pq.From.IsZero() {
		q.sql(" AND c.synced_at >= ", q.arg(s.sx.Time(pq.From.UTC().Add(-time.Minute))))
	}
}

// markedCountQuery writes Count's statement for pending, failed or synced
// events of a Store with watermarks.
func (s *Store) markedCountQuery(pq PageQuery) *query {
	q := newQuery(s.sx).sql("SELECT COUNT(*) FROM (")
	seq := func(string) string { return "c.seq" }
	if pq.State == StatePending || pq.State == StateFailed {
		s.pendingUnion(q, markedRead{cols: seq, filter: func(q *query) { s.stateFilters(q, pq) }})
	} else {
		s.syncedBranch(q, markedRead{cols: seq, filter: func(q *query) { s.syncedFilters(q, pq) }})
		q.sql(" UNION ALL ")
		s.coveredBranch(q, markedRead{cols: seq, filter: func(q *query) { s.filters(q, pq, "c.") }}, nil)
	}
	return q.sql(") c")
}

// markedPurge writes Purge's statement for a Store with watermarks: at
// most limit events synced per row before cutoff (through the index on
// synced_at, oldest first) or delivered by their partition's mark and
// created before cutoff. Those of a mark are taken among the first limit
// it delivered of each partition in save order (the oldest, through the
// index on partition and seq): an event created after cutoff there keeps
// back the purge of the partition's later events only while it is among
// those (that is, past the first limit of them, nothing is read).
func (s *Store) markedPurge(q *query, cutoff any, limit int) {
	t := s.t.Quoted
	q.sql("DELETE FROM ", t, " WHERE seq IN (SELECT seq FROM (", s.openBranch(), "SELECT seq FROM ", t, " WHERE synced_at IS NOT NULL AND synced_at < ", q.arg(cutoff),
		" ORDER BY synced_at LIMIT ", q.arg(limit), ") UNION ALL ")
	s.coveredBranch(q, markedRead{cols: func(string) string { return "c.seq" }, bound: func(q *query) {
		q.sql(" ORDER BY c.seq LIMIT ", q.arg(limit))
	}}, func(q *query) { q.sql(" AND c.created_at < ", q.arg(cutoff)) })
	q.sql(") d LIMIT ", q.arg(limit), ")")
}
