package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// Claim leases up to req.Limit due events for req.Lease under a fresh
// token and returns them in save (seq) order with their Delivery state.
// Due means pending, not dead, next_attempt_at reached and no live lease.
// With req.IDs set only those events are considered. No transaction
// outlives the call.
//
// Which due events it takes: higher Event.Priority first, then lower seq.
// With req.Unordered that is all; by default (ordered) it also keeps
// per-aggregate order: an event with a non-empty aggregate ID is claimed
// only as part of a gapless prefix of its aggregate's undelivered events,
// that is, together with or after every event of the aggregate with a
// lower seq that is not yet synced, and never while such an event is
// leased elsewhere, backing off, or buried (buried ones are passed over
// when req.SkipDead is set). A run claimed together has one priority: an
// event whose earlier undelivered events have another priority waits
// until they are delivered. Events with an empty aggregate ID are
// unordered.
//
// Order is by seq among committed events. A transaction that took a lower
// seq may commit after one that took a higher seq, so an event can become
// visible after a later event of its aggregate was already claimed. Events
// of one aggregate written by concurrent transactions are therefore
// delivered in seq order only if the business transactions serialise on
// the aggregate (for example by locking its row, as any update of it
// does); otherwise they are delivered in commit order as the relays see
// it, each still exactly once, and neither can be said to come first.
//
// How: on Postgres one statement locks candidate rows (FOR UPDATE SKIP
// LOCKED, skipping rows that visibly wait behind an earlier event),
// counts, per candidate aggregate, its undelivered events up to its last
// candidate, and leases the candidates of the aggregates whose count
// equals their number of candidates (rows that other relays are claiming
// at that moment are invisible to the lock but not to the count). MySQL
// and MariaDB, without UPDATE ... RETURNING, run the same steps as one
// short READ COMMITTED transaction: the locking read also reads each
// candidate's aggregate head, which settles a lone candidate (most of a
// drain's), and only aggregates with several candidates are counted. Dropped candidates stay
// claimable. Without order, Postgres claims in one UPDATE ... RETURNING.
// SQLite has one writer at a time, so one UPDATE ... RETURNING, whose
// subquery takes only rows with no earlier blocking event, is exact.
func (s *Store) Claim(ctx context.Context, req storage.ClaimRequest) (*outbox.Claim, error) {
	if req.Limit <= 0 {
		return nil, fmt.Errorf("sqlstore: claim: limit %d is not positive", req.Limit)
	}
	if req.Lease <= 0 {
		return nil, fmt.Errorf("sqlstore: claim: lease %v is not positive", req.Lease)
	}
	cr := claimRun{
		token:    outbox.NewID(),
		now:      s.now(),
		ordered:  !req.Unordered,
		passDead: req.SkipDead,
	}
	cr.until = cr.now.Add(req.Lease).Truncate(time.Microsecond)
	return s.c.claim(ctx, req, cr)
}

// decodeClaimed turns the claimed rows (in seq order) into events. A row
// that cannot be decoded (headers that are not a JSON object of strings,
// written by hand or by another producer) would fail every claim that
// meets it, so it is buried at once under the claim's token, with the
// reason as its last error, and left out. When the claim keeps order
// without passing buried events, the later events of its aggregate in
// this claim are released, not returned: they wait behind it as behind
// any buried event. If burying fails, the whole claim is released and
// the error returned.
func (s *Store) decodeClaimed(ctx context.Context, cr claimRun, rows []eventRow) ([]*outbox.Event, error) {
	events := make([]*outbox.Event, 0, len(rows))
	var buried []storage.Failure
	var held []eventRow
	blocked := map[string]bool{}
	for i := range rows {
		if cr.ordered && !cr.passDead && blocked[rows[i].AggregateID] {
			held = append(held, rows[i])
			continue
		}
		e, err := rows[i].event()
		if err != nil {
			buried = append(buried, storage.Failure{ID: rows[i].ID, Err: err.Error(), Dead: true})
			if rows[i].AggregateID != "" {
				blocked[rows[i].AggregateID] = true
			}
			continue
		}
		events = append(events, e)
	}
	if len(buried) == 0 {
		return events, nil
	}
	if _, err := s.Fail(context.WithoutCancel(ctx), cr.token, buried); err != nil {
		s.releaseRows(ctx, cr.token, rows)
		return nil, fmt.Errorf("sqlstore: claim: bury %d events that cannot be decoded: %w", len(buried), err)
	}
	if len(held) > 0 {
		s.releaseRows(ctx, cr.token, held)
	}
	return events, nil
}

// claimRun is what one Claim call's statements share.
type claimRun struct {
	token      string
	now, until time.Time
	ordered    bool
	passDead   bool
	// unowned, when set, appends to a row-lease claim's conditions that
	// the row (its partition column col) is in a partition no live relay
	// owns: a claim by IDs of partition ownership (owner.unowned).
	unowned func(q *query, col string)
	// inMemory, when set, holds the partitions whose order the take
	// checks in memory (a claim by IDs with watermarks, readIDsMarked):
	// the candidates of those are not checked by the statement.
	inMemory map[int]mark
	// fenceIDs, for a claim by IDs on Postgres with watermarks, takes
	// the candidates from the CTE ids, which reads them by ID: there, the
	// indexes of pending events hold every event until it is purged, and
	// a generic plan made on an empty table walked one of them, filtered
	// by ID (idsMarkedQuery).
	fenceIDs bool
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// releaseRows gives back rows claimed by a Claim that then failed.
func (s *Store) releaseRows(ctx context.Context, token string, rows []eventRow) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	_, _ = s.Release(context.WithoutCancel(ctx), token, ids)
}

// candidates appends the FROM and WHERE of the rows a claim may take, as
// table c: due, of ids if not nil, and when ordered not visibly waiting
// behind an earlier event of their aggregate. head, if not "", is a
// subquery for the seq of c's aggregate's first undelivered event: a
// candidate at the head is let through without the check (MySQL's
// shortcut, see mysqlDialect.claim).
func (s *Store) candidates(q *query, cr claimRun, ids []string, head string) {
	now := s.sx.Time(cr.now)
	from := s.t.Quoted
	if cr.fenceIDs && ids != nil {
		from = "ids" // read by ID in the statement's CTE (idsMarkedQuery)
	}
	q.sql(" FROM ", from, " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND c.next_attempt_at <= ", q.arg(now),
		" AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")", s.notMarked("c"))
	if ids != nil && !cr.fenceIDs {
		q.sql(" AND ", q.in("c.id", ids, false))
	}
	if cr.unowned != nil {
		cr.unowned(q, "c.partition_no")
	}
	if !cr.ordered {
		return
	}
	// An earlier undelivered event e of the aggregate blocks c unless it
	// could be claimed with c: due, not leased, not dead (unless passed),
	// of c's priority and, for a claim by IDs, one of them.
	q.sql(" AND (c.aggregate_id = '' OR ")
	if len(cr.inMemory) > 0 {
		ps := slices.Sorted(maps.Keys(cr.inMemory))
		ns := make([]int64, len(ps))
		for i, p := range ps {
			ns[i] = int64(p)
		}
		q.sql("c.partition_no IN (", intList(ns), ") OR ")
	}
	if head != "" {
		q.sql(head, " = c.seq OR ")
	}
	q.sql("NOT EXISTS (SELECT 1 ", s.undelivered("e", "c.aggregate_id", false), " AND e.seq < c.seq AND (")
	if cr.passDead {
		q.sql("e.dead_at IS NULL AND (")
	} else {
		q.sql("e.dead_at IS NOT NULL OR ")
	}
	q.sql("e.next_attempt_at > ", q.arg(now), " OR e.locked_until > ", q.arg(now), " OR e.priority <> c.priority")
	if ids != nil {
		q.sql(" OR ", q.in("e.id", ids, true))
	}
	if cr.passDead {
		q.sql(")")
	}
	q.sql(")))")
}

// claimOrder appends the order in which a claim takes candidates (higher
// priority first, then lower seq) and its limit.
func claimOrder(q *query, limit int) {
	q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit))
}

// undelivered is the FROM and WHERE of the undelivered events, as table
// alias, of the aggregate agg (an SQL expression); with skipDead buried
// ones are left out.
func (s *Store) undelivered(alias, agg string, skipDead bool) string {
	w := "FROM " + s.t.Quoted + " " + alias + " WHERE " + alias + ".aggregate_id = " + agg + " AND " + alias + ".synced_at IS NULL" + s.notMarked(alias)
	if skipDead {
		w += " AND " + alias + ".dead_at IS NULL"
	}
	return w
}

// notMarked is, for a Store with watermarks, the condition (with a
// leading AND) that the event (as alias) is not delivered by its
// partition's recorded mark; "" without.
func (s *Store) notMarked(alias string) string {
	if !s.marks {
		return ""
	}
	if s.Dialect() == SQLite {
		return " AND NOT (" + alias + ".xid IS NOT NULL AND EXISTS (SELECT 1 FROM " + s.t.Sibling(partitionsSuffix) + " w WHERE w.partition_no = " + alias +
			".partition_no AND " + sqliteMarked(alias) + "))"
	}
	return " AND NOT (" + alias + ".xid IS NOT NULL AND EXISTS (SELECT 1 FROM " + s.t.Sibling(partitionsSuffix) + " w WHERE w.partition_no = " + alias +
		".partition_no AND " + alias + ".seq <= w.mark_seq AND txid_visible_in_snapshot(" + alias + ".xid, w.mark_snap)))"
}

// perRow is, for a Store with watermarks, the SET (with a leading comma)
// that makes an event's delivery recorded per row from now on (its
// synced_at, attempts or dead_at), not by its partition's mark; ""
// without.
func (s *Store) perRow() string {
	if !s.marks {
		return ""
	}
	return ", xid = NULL"
}

// prefixCount is the order check of an aggregate with several candidates:
// a subquery counting the undelivered events of aggregate agg up to seq
// maxSeq (buried ones left out with cr.passDead). The candidates are a
// gapless prefix of the aggregate iff the count equals their number. It
// sees rows that other relays hold locked, which a locking read with SKIP
// LOCKED passes over: that is what makes such a claim safe.
func (s *Store) prefixCount(cr claimRun, agg, maxSeq string) string {
	return "(SELECT COUNT(*) " + s.undelivered("e", agg, cr.passDead) + " AND e.seq <= " + maxSeq + ")"
}

// lease appends the UPDATE of the table (as alias: "" or " t") that
// leases rows to cr.
func (s *Store) lease(q *query, alias string, cr claimRun) {
	q.sql("UPDATE ", s.t.Quoted, alias, " SET claim_token = ", q.arg(cr.token), ", locked_until = ", q.arg(s.sx.Time(cr.until)))
}

// claimRows runs the claim statement q on db (the pool or the claim's
// transaction) and reads the rows it returns.
func claimRows(ctx context.Context, db sqlx.QueryerContext, q *query) ([]eventRow, error) {
	r, err := db.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	rows, err := scanRows(r)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	return rows, nil
}

// scanRows reads rows of selectColumns (and the extra columns head,
// partition_no, leased) into eventRows, scanning straight into each
// field: no reflection per row, which a claim of a thousand rows notices.
func scanRows(r *sqlx.Rows) ([]eventRow, error) {
	defer r.Close()
	cols, err := r.Columns()
	if err != nil {
		return nil, err
	}
	var rows []eventRow
	dest := make([]any, len(cols))
	for r.Next() {
		rows = append(rows, eventRow{})
		row := &rows[len(rows)-1]
		for i, c := range cols {
			if dest[i] = row.field(c); dest[i] == nil {
				return nil, fmt.Errorf("unexpected column %q", c)
			}
		}
		if err := r.Scan(dest...); err != nil {
			return nil, err
		}
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return rows, r.Close()
}
