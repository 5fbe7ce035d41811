package sqlstore

import (
	"context"
	"maps"
	"slices"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// The statements of watermarks (see watermark.go): the bulk read, and
// what a heartbeat and Leave write.

// readMarks is the bulk read of a Store with watermarks: in one
// statement, under one snapshot, for each claimable partition its events
// after its front (range) and those of transactions the front's snapshot
// did not see (late), and the events delivered per row that are pending
// (with the skip lists and the due conditions of read), all in save
// order, at most limit. Events delivered ahead are left out (at most
// maxSkip of them). Each row carries the statement's snapshot.
func (o *owner) readMarks(ctx context.Context, cr claimRun, owned map[int]int64, limit int, skipAggs []string, skipSeqs []int64) ([]eventRow, map[int]markRead, error) {
	s := o.s
	now := s.sx.Time(cr.now)
	fronts := o.l.fronts(owned)
	ahead := o.l.aheadSeqs(owned, maxSkip)
	q := newQuery(s.sx)
	cols := selectColumns(s.sx, "c.") + ", c.partition_no, c.xid, " + leasedCol(q, now) + " AS leased"
	q.sql("SELECT ", cols, ", txid_current_snapshot()::text AS snap FROM (")
	branch := func(where func()) {
		q.sql("(SELECT c.* FROM ", s.t.Quoted, " c WHERE ")
		where()
		q.sql(" ORDER BY c.seq LIMIT ", q.arg(limit), ") UNION ALL ")
	}
	notAhead := func() {
		if len(ahead) > 0 {
			q.sql(" AND NOT (", q.seqIn("c.seq", ahead), ")")
		}
	}
	for _, p := range slices.Sorted(maps.Keys(fronts)) {
		f := fronts[p]
		pn := strconv.Itoa(p)
		branch(func() {
			q.sql("c.partition_no = ", pn, " AND c.xid IS NOT NULL AND c.synced_at IS NULL AND c.dead_at IS NULL AND c.seq > ", q.arg(f.seq))
			notAhead()
		})
		if f.snap != "" {
			branch(func() {
				sn := q.arg(f.snap) + "::txid_snapshot"
				q.sql("c.partition_no = ", pn, " AND c.xid IS NOT NULL AND c.synced_at IS NULL AND c.dead_at IS NULL AND c.seq <= ", q.arg(f.seq),
					" AND (c.xid >= txid_snapshot_xmax(", sn, ") OR c.xid IN (SELECT txid_snapshot_xip(", sn, ")))")
				notAhead()
			})
		}
	}
	q.sql("(SELECT c.* FROM ", s.t.Quoted, " c WHERE c.xid IS NULL AND c.synced_at IS NULL AND c.dead_at IS NULL AND ", partIn("c.partition_no", owned))
	if cr.ordered {
		q.sql(" AND (c.aggregate_id <> '' OR ((c.attempts = 0 OR c.next_attempt_at <= ", q.arg(now), ") AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")))")
	} else {
		q.sql(" AND (c.attempts = 0 OR c.next_attempt_at <= ", q.arg(now), ") AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")")
	}
	if len(skipAggs) > 0 {
		q.sql(" AND ", q.in("c.aggregate_id", skipAggs, true))
	}
	if len(skipSeqs) > 0 {
		q.sql(" AND NOT (", q.seqIn("c.seq", skipSeqs), ")")
	}
	q.sql(" ORDER BY c.seq LIMIT ", q.arg(limit), ")) c ORDER BY c.seq LIMIT ", q.arg(limit))
	rows, err := claimRows(ctx, s.db, q)
	if err != nil {
		return nil, nil, err
	}
	marks := make(map[int]markRead, len(fronts))
	late := map[int]int{}
	for _, r := range rows {
		p := int(r.Partition.Int64)
		if f, ok := fronts[p]; ok && r.Xid.Valid && r.Seq <= f.seq {
			late[p]++
		}
	}
	for p, f := range fronts {
		marks[p] = markRead{front: f, lateFull: late[p] >= limit}
	}
	return rows, marks, nil
}

// ownedMarks reads the marks the table holds for the partitions of mine.
func (o *owner) ownedMarks(ctx context.Context, tx sqlx.QueryerContext, parts string, mine map[int]int64) (map[int]mark, error) {
	out := map[int]mark{}
	if o.l.marks == nil || len(mine) == 0 {
		return out, nil
	}
	rows, err := tx.QueryxContext(ctx, "SELECT partition_no, mark_seq, COALESCE(mark_snap::text, '') FROM "+parts+" WHERE "+partIn("partition_no", mine))
	if err != nil {
		return nil, beatErr("read marks", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int
		var seq int64
		var snap string
		if err := rows.Scan(&p, &seq, &snap); err != nil {
			return nil, beatErr("read marks", err)
		}
		m, err := newMark(seq, snap)
		if err != nil {
			return nil, beatErr("read marks", err)
		}
		out[p] = m
	}
	if err := rows.Err(); err != nil {
		return nil, beatErr("read marks", err)
	}
	return out, nil
}

// park makes per-row, in a heartbeat's or Leave's transaction, the events
// that the segments recorded there leave undelivered (held, released):
// their xid becomes NULL, fenced by the partitions' tokens.
func (o *owner) park(ctx context.Context, tx sqlx.ExecerContext, recs map[int]record, tokens map[int]int64) error {
	s := o.s
	var seqs []int64
	fence := map[int]int64{}
	for p, r := range recs {
		if len(r.park) > 0 {
			seqs = append(seqs, r.park...)
			fence[p] = tokens[p]
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	slices.Sort(seqs)
	for _, chunk := range chunks(seqs, s.sx.maxParams-2-2*len(fence)) {
		q := newQuery(s.sx)
		q.sql("UPDATE ", s.t.Quoted, " SET xid = NULL WHERE ", q.seqIn("seq", chunk), " AND xid IS NOT NULL AND synced_at IS NULL")
		o.fence(q, "partition_no", fence)
		if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
			return beatErr("park", err)
		}
	}
	return nil
}

// setMarks appends to an UPDATE of the partitions table the SET of the
// marks recs records ("" when there are none).
func setMarks(q *query, recs map[int]record) {
	if len(recs) == 0 {
		return
	}
	ps := slices.Sorted(maps.Keys(recs))
	q.sql(", mark_seq = CASE partition_no")
	for _, p := range ps {
		q.sql(" WHEN ", strconv.Itoa(p), " THEN ", q.arg(recs[p].to.seq), "::bigint")
	}
	q.sql(" ELSE mark_seq END, mark_snap = CASE partition_no")
	for _, p := range ps {
		q.sql(" WHEN ", strconv.Itoa(p), " THEN ", q.arg(recs[p].to.snap), "::txid_snapshot")
	}
	q.sql(" ELSE mark_snap END")
}

// flushAhead writes synced_at for events delivered ahead of any read in
// partitions about to be given back, in the transaction that gives them
// back, fenced by their tokens.
func (o *owner) flushAhead(ctx context.Context, tx sqlx.ExecerContext, ids []string, give []int, tokens map[int]int64) error {
	if len(ids) == 0 {
		return nil
	}
	s := o.s
	fence := map[int]int64{}
	for _, p := range give {
		fence[p] = tokens[p]
	}
	now := s.sx.Time(s.now())
	for _, chunk := range chunks(ids, s.sx.maxParams-2-2*len(fence)) {
		q := newQuery(s.sx)
		q.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", q.arg(now), " WHERE ", q.in("id", chunk, false), " AND synced_at IS NULL")
		o.fence(q, "partition_no", fence)
		if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
			return beatErr("record delivered", err)
		}
	}
	return nil
}

// handBack gives partitions back outside a heartbeat (Leave), in one
// transaction that first records their marks (watermarks) and the events
// delivered ahead of any read.
func (o *owner) handBack(ctx context.Context, give []int, ahead []string, recs map[int]record) error {
	s := o.s
	parts := s.t.Sibling(partitionsSuffix)
	if o.l.marks == nil {
		q := newQuery(s.sx)
		q.sql("UPDATE ", parts, " SET owner = NULL, lease_until = ", s.d.dbNow(), " WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", toSet(give)))
		_, err := s.db.ExecContext(ctx, q.String(), q.args...)
		return err
	}
	tokens := o.l.tokens()
	tx, err := s.db.BeginTxx(ctx, s.d.txOptions())
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	mine := map[int]record{}
	for _, p := range give {
		if r, ok := recs[p]; ok {
			mine[p] = r
		}
	}
	if err := o.park(ctx, tx, mine, tokens); err != nil {
		return err
	}
	if err := o.flushAhead(ctx, tx, ahead, give, tokens); err != nil {
		return err
	}
	q := newQuery(s.sx)
	q.sql("UPDATE ", parts, " SET owner = NULL, lease_until = ", s.d.dbNow())
	setMarks(q, mine)
	q.sql(" WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", toSet(give)))
	if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	o.l.recorded(mine, tokens)
	return nil
}

// tokens returns the owned partitions with their tokens.
func (l *ledger) tokens() map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokensLocked()
}
