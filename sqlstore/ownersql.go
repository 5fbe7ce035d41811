package sqlstore

import (
	"context"
	"maps"
	"slices"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// The statements of partition ownership that read events and fence
// writes; those of membership are in membership.go.

// read selects up to limit undelivered, not dead events of the owned
// partitions in claim order (priority, then save order), writing
// nothing. Ordered, an event is left out when an earlier undelivered
// event of its aggregate has a lower priority (it would come later in
// this order): it waits for that one. Events never attempted are due
// (see ledger.take): their next_attempt_at is the time of the save on the
// saving Store's clock, not a delay. With every event at one priority,
// the common case, that check is the comparison with the lowest pending
// priority and no index is probed. Events without an aggregate that are
// not due or are leased are left out; those with one are read, so that
// they hold their aggregate (see ledger.take).
//
// Every read starts from the oldest pending event: a read that went on
// from where the last one stopped (a cursor) passed over an event whose
// transaction took its seq before the cursor passed it and committed
// after, and took the next event of its aggregate first.
func (o *owner) read(ctx context.Context, cr claimRun, owned map[int]int64, limit int, skipAggs []string, skipSeqs []int64) ([]eventRow, error) {
	s := o.s
	now := s.sx.Time(cr.now)
	q := newQuery(s.sx)
	q.sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no, ", leasedCol(q, now), " AS leased FROM ", s.t.Quoted,
		" c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND ", partIn("c.partition_no", owned))
	perRowDue(q, cr, now, skipAggs, skipSeqs)
	if cr.ordered {
		// The lowest pending priority, read from the end of the claim
		// index (priority DESC, seq) as one entry.
		q.sql(" AND (c.aggregate_id = '' OR c.priority = (SELECT m.priority FROM ", s.t.Quoted,
			" m WHERE m.synced_at IS NULL AND m.dead_at IS NULL ORDER BY m.priority, m.seq DESC LIMIT 1) OR NOT EXISTS (SELECT 1 ", s.undelivered("e", "c.aggregate_id", cr.passDead),
			" AND e.seq < c.seq AND e.priority < c.priority))")
	}
	claimOrder(q, limit)
	return claimRows(ctx, s.db, q)
}

// leasedCol is 1 for a row leased to a claim by IDs (see owner.claim),
// else 0.
func leasedCol(q *query, now any) string {
	return "CASE WHEN c.locked_until > " + q.arg(now) + " THEN 1 ELSE 0 END"
}

// readIDs selects the events of ids that a claim by IDs may take, with
// the general claim's conditions (see Store.candidates), writing nothing,
// and returns those of owned partitions (for take) and the others.
func (o *owner) readIDs(ctx context.Context, cr claimRun, owned map[int]int64, limit int, ids []string) (mine, others []eventRow, err error) {
	s := o.s
	for _, chunk := range chunks(ids, (s.sx.maxParams-16)/2) {
		q := newQuery(s.sx).sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no")
		if s.marks {
			q.sql(", c.xid")
		}
		s.candidates(q, cr, chunk, "")
		claimOrder(q, limit)
		r, err := claimRows(ctx, s.db, q)
		if err != nil {
			return nil, nil, err
		}
		for _, row := range r {
			if _, ok := owned[int(row.Partition.Int64)]; ok {
				mine = append(mine, row)
			} else {
				others = append(others, row)
			}
		}
	}
	return mine, others, nil
}

// unowned appends, to the conditions of a row-lease claim by IDs, that
// the row's partition has no live owner, read under a share lock (see
// owner.claim): a relay that takes the partition at the same moment
// waits for the claim, or the claim sees the new owner. A partition row
// that a heartbeat holds locked (renewing, giving back or taking it) is
// skipped, as owned: a claim right after commit never waits for a relay,
// not even one paused in the middle of its heartbeat, and what it skips
// is left to the relays.
func (o *owner) unowned(q *query, col string) {
	s := o.s
	lock := s.d.shareLock()
	if lock != "" {
		lock += " SKIP LOCKED"
	}
	q.sql(" AND ", col, " IN (SELECT p.partition_no FROM ", s.t.Sibling(partitionsSuffix), " p WHERE p.lease_until <= ", s.d.dbNow(), lock, ")")
}

// partIn is the condition "col is one of the partitions", written out:
// partition numbers are small integers the Store read from its own table.
func partIn(col string, parts map[int]int64) string {
	ps := slices.Sorted(maps.Keys(parts))
	ns := make([]int64, len(ps))
	for i, p := range ps {
		ns[i] = int64(p)
	}
	return col + " IN (" + intList(ns) + ")"
}

// fence appends the condition that the row's partition is still owned by
// the Store under the tokens of a claim (tokens: partition -> token),
// read under a share lock of the partitions' rows, so that a heartbeat's
// give-back or another relay's take waits for the write, or the write
// sees the new owner and changes nothing.
func (o *owner) fence(q *query, col string, tokens map[int]int64) {
	s := o.s
	q.sql(" AND ", col, " IN (SELECT p.partition_no FROM ", s.t.Sibling(partitionsSuffix), " p WHERE p.owner = ", q.arg(o.name), " AND (")
	for i, p := range slices.Sorted(maps.Keys(tokens)) {
		if i > 0 {
			q.sql(" OR ")
		}
		q.sql("(p.partition_no = ", strconv.Itoa(p), " AND p.token = ", q.arg(tokens[p]), ")")
	}
	q.sql(")", s.d.shareLock(), ")")
}

// fencedExec runs a write fenced by partition tokens, again if the
// database rolled it back to break a deadlock (see deadlockRetries).
func (o *owner) fencedExec(ctx context.Context, q *query) (int, error) {
	var n int
	err := o.retryDeadlock(ctx, func() error {
		var err error
		n, err = o.s.exec(ctx, q)
		return err
	})
	return n, err
}

// ownedIn reads the partitions the Store owns under a lease that holds,
// with their tokens.
func (o *owner) ownedIn(ctx context.Context, tx sqlx.QueryerContext, parts string) (map[int]int64, error) {
	q := newQuery(o.s.sx)
	q.sql("SELECT partition_no, token FROM ", parts, " WHERE owner = ", q.arg(o.name), " AND lease_until > ", o.s.d.dbNow())
	rows, err := tx.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, beatErr("read owned", err)
	}
	defer rows.Close()
	mine := map[int]int64{}
	for rows.Next() {
		var p int
		var tok int64
		if err := rows.Scan(&p, &tok); err != nil {
			return nil, beatErr("read owned", err)
		}
		mine[p] = tok
	}
	if err := rows.Err(); err != nil {
		return nil, beatErr("read owned", err)
	}
	return mine, nil
}

// deadAggregates reads, by partition, the aggregates of the partitions
// whose undelivered events include a dead one.
func (o *owner) deadAggregates(ctx context.Context, parts map[int]int64) (map[int]map[string]bool, error) {
	out := map[int]map[string]bool{}
	if len(parts) == 0 {
		return out, nil
	}
	s := o.s
	rows, err := s.db.QueryxContext(ctx, "SELECT DISTINCT partition_no, aggregate_id FROM "+s.t.Quoted+
		" WHERE synced_at IS NULL AND dead_at IS NOT NULL AND aggregate_id <> '' AND "+partIn("partition_no", parts))
	if err != nil {
		return nil, beatErr("read dead aggregates", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int
		var agg string
		if err := rows.Scan(&p, &agg); err != nil {
			return nil, beatErr("read dead aggregates", err)
		}
		if out[p] == nil {
			out[p] = map[string]bool{}
		}
		out[p][agg] = true
	}
	if err := rows.Err(); err != nil {
		return nil, beatErr("read dead aggregates", err)
	}
	return out, nil
}
