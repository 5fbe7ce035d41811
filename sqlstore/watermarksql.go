package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// The statements of watermarks (see watermark.go): the bulk read, and
// what a heartbeat and Leave write.

// readMarks is the bulk read of a Store with watermarks. One statement,
// under one snapshot, reads for each claimable partition its events after
// its front in save order (range) and those of transactions the front's
// snapshot did not see (late); the events of priority above 0 after the
// fronts, highest first (priority); and the pending events delivered per
// row, with the skip lists and the due conditions of read (per-row). Each
// branch reads at most limit. Events delivered ahead are left out (at
// most maxSkip of them).
//
// Of those, the claim gets at most limit in (priority, save) order, an
// event whose earlier undelivered event of its aggregate has another
// priority left out (a run claimed together has one priority). Each
// partition's front moves over the prefix of its range that the claim
// got, only if it got all of the partition's late events (pickMarks).
func (o *owner) readMarks(ctx context.Context, cr claimRun, owned map[int]int64, limit int, skipAggs []string, skipSeqs []int64) ([]eventRow, map[int]markRead, string, error) {
	if o.s.Dialect() == SQLite {
		return o.readMarksSQLite(ctx, cr, owned, limit, skipAggs, skipSeqs)
	}
	fronts := o.l.fronts(owned)
	n := o.readRoom(owned, limit)
	lateral := o.marksLateral(limit)
	q := o.marksQuery(cr, owned, fronts, limit, n, skipAggs, skipSeqs, lateral)
	// One plan per statement text, kept by the connection: the text is
	// the same from claim to claim (the owned partitions, their bounds as
	// parameters), and planning its branches costs more than running
	// them. The transaction is repeatable read: a read that returns
	// nothing still has a snapshot, the one its statement read under,
	// which the fronts may move to over the events delivered ahead (an
	// idle partition's immediate deliveries are recorded, not left
	// pending until its next event).
	settings := markReadSettings + mergedReadSettings
	if lateral {
		settings = markReadSettings + loopReadSettings
	}
	rows, snap, err := o.s.markedRead(ctx, settings, q)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sqlstore: claim: %w", err)
	}
	o.lastRead.Store(int64(len(rows)))
	return rows, markReads(rows, fronts, n), snap, nil
}

// markReads returns what a watermark read that returned rows, with a
// seq-ordered part of at most n rows, tells take of each partition of
// fronts. The seq-ordered part returned the n lowest seqs: if it is
// full, a partition's rows above its highest seq were cut (cutoff).
func markReads(rows []eventRow, fronts map[int]mark, n int) map[int]markRead {
	var inSeq int
	var cutoff int64
	for _, r := range rows {
		if r.Branch.String != "p" {
			inSeq++
			cutoff = max(cutoff, r.Seq)
		}
	}
	if inSeq < n {
		cutoff = 0
	}
	marks := make(map[int]markRead, len(fronts))
	for p, f := range fronts {
		marks[p] = markRead{front: f, cutoff: cutoff}
	}
	return marks
}

// readRoom is how many rows each part of a watermark read returns at
// most: the claim's limit and room for the rows take passes over (those
// in flight or delivered ahead, and an eighth of the limit for the later
// events of their aggregates), at most twice the limit. Twice the limit
// always, as it was, read and scanned every row of a backlog twice.
func (o *owner) readRoom(owned map[int]int64, limit int) int {
	return limit + min(limit, o.l.passing(owned)+limit/8)
}

// markReadSettings are the settings of a watermark read, beside jit off
// (markedTx): neither bitmap scans, sequential scans nor parallel workers
// (each branch reads a short index range).
const markReadSettings = ", set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true), set_config('max_parallel_workers_per_gather', '0', true)"

// loopReadSettings are added for the loop over the partitions
// (marksLateral): one plan per connection (planning costs more than a
// read that keeps up), and no sort where an index gives the order, so
// that each partition's range is read from the index whose order its
// ORDER BY names (see partRange), whatever the statistics.
const loopReadSettings = ", set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_sort', 'off', true), set_config('enable_incremental_sort', 'off', true)"

// mergedReadSettings are added for the read of a backlog (a branch per
// partition, merged): one plan per connection as well. Planning its
// branches per read (force_custom_plan) took longer than running them
// (12 ms against 9 ms for 64 partitions). Its generic plan cannot tell a
// partition whose front is old from one that keeps up: once the
// statistics say the events fall in a few partitions, it may walk the
// seq index filtered by partition for each branch.
const mergedReadSettings = ", set_config('plan_cache_mode', 'force_generic_plan', true)"

// marksLateral reports whether a watermark read visits the partitions in
// a loop: when the last read returned less than a quarter of the limit
// (or as o.shape forces: 1 merged, 2 lateral; tests run both). Both
// shapes return the same rows. The merged one (a branch per partition,
// merged in seq order) reads no more rows than the limit whatever the
// backlog, but starting its hundreds of index scans costs milliseconds;
// the loop (one index scan, rescanned per partition) costs a fraction of
// that, and sorts up to the limit's rows per partition, which only a
// backlog makes many.
func (o *owner) marksLateral(limit int) bool {
	switch o.shape {
	case 1:
		return false
	case 2:
		return true
	}
	return o.lastRead.Load() < int64(limit/4)
}

// marksQuery is the statement of readMarks: its seq-ordered part returns
// at most n rows, its priority branch at most limit.
//
// The statement is prepared once per connection and runs as a generic
// plan, often made while the table was empty, and planned again with
// whatever statistics ANALYZE leaves. So each branch is shaped so that one
// index serves it whatever the statistics say (TestWatermarkReadPlanOnAGrownTable):
// a partition's range and its per-row events are bounded by row
// comparisons on (partition_no, seq) and ordered by both, which only
// their partial index returns in order (an equality on partition_no would
// let a walk of the seq index, filtered by partition, compete); the late
// events are looked up by equality on (partition_no, xid); the priority
// branch is ordered as the claim index is, with the fronts looked up per
// row. Under watermarks the other indexes of pending events hold every
// event until it is purged: a plan that walks one slows as the table
// grows.
func (o *owner) marksQuery(cr claimRun, owned map[int]int64, fronts map[int]mark, limit, n int, skipAggs []string, skipSeqs []int64, lateral bool) *query {
	s := o.s
	t := s.t.Quoted
	now := s.sx.Time(cr.now)
	ahead := o.l.aheadSeqs(owned, maxSkip)
	q := newQuery(s.sx)
	q.sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no, c.xid, ", leasedCol(q, now), " AS leased, c.b AS branch FROM ((SELECT * FROM (")
	pending := " AND c.xid IS NOT NULL AND c.synced_at IS NULL AND c.dead_at IS NULL"
	notAhead := func() {
		if len(ahead) > 0 {
			q.sql(" AND NOT (", q.seqIn("c.seq", ahead), ")")
		}
	}
	ps := slices.Sorted(maps.Keys(fronts))
	if lateral {
		o.lateralBranches(q, ps, fronts, n, pending, notAhead)
	}
	for _, p := range ps {
		if lateral {
			break
		}
		f := fronts[p]
		pn := strconv.Itoa(p)
		// A branch per partition, each in seq order so that the
		// branches merge without a sort of them all. Its partition is a
		// constant, which the statistics weigh: a partition with few
		// events after its front reads its index.
		q.sql("(SELECT c.*, 'r' AS b FROM ", t, " c WHERE c.partition_no = ", pn, pending, " AND c.seq > ", q.arg(f.seq), " AND c.seq <= ", unbounded)
		notAhead()
		q.sql(" ORDER BY c.seq LIMIT ", q.arg(n), ") UNION ALL ")
		if len(f.sn.xip) > 0 {
			// Late: found by transaction ID among those in progress in
			// the front's snapshot, never by seq, which would walk the
			// partition's history (see lateralBranches).
			q.sql("(SELECT c.*, 'l' AS b FROM unnest(CAST(", q.arg("{"+intList(f.sn.xip)+"}"), " AS BIGINT[])) x(xid) CROSS JOIN LATERAL ",
				lateByXid(t, pn, "x.xid"), " WHERE c.seq <= ", q.arg(f.seq), pending)
			notAhead()
			q.sql(" ORDER BY c.seq LIMIT ", q.arg(n), ") UNION ALL ")
		}
	}
	parts := make([]int64, len(ps))
	seqs := make([]int64, len(ps))
	snaps := make([]string, len(ps))
	for i, p := range ps {
		parts[i], seqs[i], snaps[i] = int64(p), fronts[p].seq, fronts[p].snap
	}
	owns := slices.Sorted(maps.Keys(owned))
	ownList := make([]int64, len(owns))
	for i, p := range owns {
		ownList[i] = int64(p)
	}
	q.sql("(SELECT c.*, 'w' AS b FROM unnest(CAST(", q.arg("{"+intList(ownList)+"}"), " AS INT[])) f(p) CROSS JOIN LATERAL (SELECT c.* FROM ", t, " c WHERE ")
	partRange(q, "f.p", "0")
	q.sql(" AND c.xid IS NULL AND c.synced_at IS NULL AND c.dead_at IS NULL")
	perRowDue(q, cr, now, skipAggs, skipSeqs)
	q.sql(" ORDER BY c.partition_no, c.seq LIMIT ", q.arg(n), ") c ORDER BY c.seq LIMIT ", q.arg(n), ")) u ORDER BY u.seq LIMIT ", q.arg(n), ")")
	if len(ps) > 0 && cr.ordered {
		// Events of a higher priority than the default, after the fronts,
		// whose earlier undelivered events have their priority. The
		// front of each is looked up per row (OFFSET 0 keeps the lookup
		// from being joined the other way round), so the events are read
		// in the claim index's order; the earlier events of the
		// aggregate are bounded by a row comparison, which the index of
		// the aggregate's events takes and the seq index cannot.
		q.sql(" UNION ALL (SELECT c.*, 'p' AS b FROM ", t, " c CROSS JOIN LATERAL (SELECT f.seq, f.snap FROM unnest(CAST(",
			q.arg("{"+intList(parts)+"}"), " AS INT[]), CAST(", q.arg("{"+intList(seqs)+"}"), " AS BIGINT[]), CAST(",
			q.arg(textArray(snaps)), " AS TEXT[])) f(p, seq, snap) WHERE f.p = c.partition_no OFFSET 0) f WHERE c.priority > 0 AND c.seq > f.seq", pending)
		notAhead()
		q.sql(" AND (c.aggregate_id = '' OR NOT EXISTS (SELECT 1 FROM ", t, " e WHERE e.aggregate_id = c.aggregate_id AND (e.aggregate_id, e.seq) < (c.aggregate_id, c.seq)",
			" AND e.priority <> c.priority AND e.synced_at IS NULL AND (e.xid IS NULL OR e.seq > f.seq OR NOT COALESCE(txid_visible_in_snapshot(e.xid, NULLIF(f.snap, '')::txid_snapshot), false))))",
			" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(n), ")") // room for those in flight, as the range has
	}
	q.sql(") c")
	return q
}

// partRange writes the condition that an event (alias c) is of partition
// p with a seq above after, for a read ordered by (partition_no, seq), so
// that whatever the statistics say (an empty table's, or a table whose
// events fall in a few partitions) the partition's index is read from
// after on. The bounds are row comparisons on (partition_no, seq), which
// only that index takes as its range and starts from; with no sort
// allowed (loopReadSettings) it is also the only path in that order. As
// "partition_no = p AND seq > after" a generic plan walked the seq index
// filtered by partition, or the xid index with a sort, once the
// statistics knew the table's size, reading the whole table for a
// partition whose front is old; and an equality beside the row
// comparison makes the index scan start at the partition's first entry.
func partRange(q *query, p, after string) {
	q.sql("(c.partition_no, c.seq) > (", p, ", CAST(", after, " AS BIGINT)) AND (c.partition_no, c.seq) <= (", p, ", ", unbounded, ")")
}

// perRowDue writes the conditions on the pending events (alias c) a read
// returns: without watermarks every one (owner.read), with them those
// delivered per row. Due and not leased, or, ordered, of an aggregate (to
// hold it); not of the skip lists.
func perRowDue(q *query, cr claimRun, now any, skipAggs []string, skipSeqs []int64) {
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
}

// lateByXid is the lookup of a partition's events of one transaction ID,
// as the subquery c: fenced (OFFSET 0) from the conditions on seq and
// delivery, so that no plan walks another index and filters it by xid.
func lateByXid(t, p, xid string) string {
	return "(SELECT c.* FROM " + t + " c WHERE c.partition_no = " + p + " AND c.xid = " + xid + " OFFSET 0) c"
}

// ownedMarks reads the marks the table holds for the partitions of mine.
func (o *owner) ownedMarks(ctx context.Context, tx sqlx.QueryerContext, parts string, mine map[int]int64) (map[int]mark, error) {
	out := map[int]mark{}
	if o.l.marks == nil || len(mine) == 0 {
		return out, nil
	}
	snapCol := "COALESCE(mark_snap::text, '')"
	if o.s.Dialect() == SQLite {
		snapCol = "'" + seesAll + "'" // a seq alone (see watermark_sqlite.go)
	}
	rows, err := tx.QueryxContext(ctx, "SELECT partition_no, mark_seq, "+snapCol+" FROM "+parts+" WHERE "+partIn("partition_no", mine))
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

// parkNow makes per-row at once the events that claims, releases and
// expiries left undelivered behind a front (see ledger.parkLocked). If it
// fails, the next heartbeat does it before it records their segments.
func (o *owner) parkNow(ctx context.Context) error {
	if o.l.marks == nil {
		return nil
	}
	recs, tokens := o.l.takePark()
	if len(recs) == 0 {
		return nil
	}
	if err := o.retryDeadlock(ctx, func() error { return o.park(ctx, o.s.db, recs, tokens) }); err != nil {
		return err
	}
	o.l.parked(parkSeqs(recs))
	return nil
}

// parkSeqs returns the seqs recs park.
func parkSeqs(recs map[int]record) []int64 {
	var out []int64
	for _, r := range recs {
		out = append(out, r.park...)
	}
	return out
}

// setMarks appends to an UPDATE of the partitions table the SET of the
// marks recs records ("" when there are none), each only where the
// partition's token is still the one its segments were read under
// (tokens): the same fence as the park written before it in the
// transaction. A relay whose ledger holds an older token than the table
// (a heartbeat that took the partition again committed, but its reply was
// lost) finds its park fenced out; recording the mark regardless would
// cover the events that park left undelivered.
func (s *Store) setMarks(q *query, recs map[int]record, tokens map[int]int64) {
	if len(recs) == 0 {
		return
	}
	ps := slices.Sorted(maps.Keys(recs))
	if s.Dialect() == SQLite {
		sqliteSetMarks(q, ps, recs, tokens)
		return
	}
	q.sql(", mark_seq = CASE")
	for _, p := range ps {
		q.sql(" WHEN ", markFence(q, p, tokens), " THEN ", q.arg(recs[p].to.seq), "::bigint")
	}
	q.sql(" ELSE mark_seq END, mark_snap = CASE")
	for _, p := range ps {
		q.sql(" WHEN ", markFence(q, p, tokens), " THEN ", q.arg(recs[p].to.snap), "::txid_snapshot")
	}
	q.sql(" ELSE mark_snap END, mark_at = CASE")
	for _, p := range ps {
		q.sql(" WHEN ", markFence(q, p, tokens), " THEN now()")
	}
	q.sql(" ELSE mark_at END")
}

// markFence is the condition under which setMarks records partition p's
// mark: its row, under the token of the ledger.
func markFence(q *query, p int, tokens map[int]int64) string {
	return "partition_no = " + strconv.Itoa(p) + " AND token = " + q.arg(tokens[p])
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
	s.setMarks(q, mine, tokens)
	q.sql(" WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", toSet(give)))
	if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	o.l.parked(parkSeqs(mine))
	o.l.recorded(mine, tokens)
	return nil
}

// tokens returns the owned partitions with their tokens.
func (l *ledger) tokens() map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokensLocked()
}

// lateralBranches writes the range and late branches of marksQuery for
// the partitions ps as two loops over them (see marksLateral): the same
// rows as a branch of each per partition.
//
// The late rows of a partition are its events at or below its front's
// seq that the front's snapshot did not see committed. Each was in
// progress in that snapshot: its transaction had its ID before the event
// took its seq (migration 009), and the front's seq is that of an event
// the snapshot sees (pickLocked), so the event took its seq, and its
// transaction its ID, before the snapshot was taken. The snapshot a
// front keeps lists every such transaction in xip (widenSnapshot: as
// Postgres writes it, one with an ID above the latest to end is left
// out). So the late read looks up the snapshot's xip in the xid index, whatever the
// backlog after the front. The lookup is fenced (OFFSET 0) from the
// conditions on seq and delivery, so that no plan walks another index of
// the pending or delivered events (under watermarks those hold every
// event until it is purged) and filters it by xid.
func (o *owner) lateralBranches(q *query, ps []int, fronts map[int]mark, n int, pending string, notAhead func()) {
	t := o.s.t.Quoted
	var parts, seqs, lparts, lseqs []int64
	var lxip []string
	for _, p := range ps {
		f := fronts[p]
		parts, seqs = append(parts, int64(p)), append(seqs, f.seq)
		if len(f.sn.xip) > 0 {
			lparts, lseqs = append(lparts, int64(p)), append(lseqs, f.seq)
			lxip = append(lxip, "{"+intList(f.sn.xip)+"}")
		}
	}
	arr := func(ns []int64) string { return q.arg("{" + intList(ns) + "}") }
	q.sql("(SELECT c.*, 'r' AS b FROM unnest(CAST(", arr(parts), " AS INT[]), CAST(", arr(seqs), " AS BIGINT[])) f(p, seq)",
		" CROSS JOIN LATERAL (SELECT c.* FROM ", t, " c WHERE ")
	partRange(q, "f.p", "f.seq")
	q.sql(pending)
	notAhead()
	q.sql(" ORDER BY c.partition_no, c.seq LIMIT ", q.arg(n), ") c ORDER BY c.seq LIMIT ", q.arg(n), ") UNION ALL ")
	q.sql("(SELECT c.*, 'l' AS b FROM unnest(CAST(", arr(lparts), " AS INT[]), CAST(", arr(lseqs), " AS BIGINT[]), CAST(",
		q.arg(textArray(lxip)), " AS TEXT[])) f(p, seq, xip) CROSS JOIN LATERAL unnest(CAST(f.xip AS BIGINT[])) x(xid)",
		" CROSS JOIN LATERAL ", lateByXid(t, "f.p", "x.xid"), " WHERE c.seq <= f.seq", pending)
	notAhead()
	q.sql(" ORDER BY c.seq LIMIT ", q.arg(n), ") UNION ALL ")
}
