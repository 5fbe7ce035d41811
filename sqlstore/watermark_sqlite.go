package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
)

// Watermarks on SQLite (migration 007). The rules are those of
// watermark.go, written for Postgres; what differs is what a transaction
// ID and a snapshot are.
//
// SQLite has one writer at a time: a transaction holds the write lock
// from its first write to its commit, so events commit in the order of
// their seqs, and a read that sees an event sees every event of a lower
// seq. So an event's seq serves as the ID of its transaction: the
// statements below return it as the row's xid (NULL still meaning
// "delivered per row"), and the snapshot of a read is "every seq up to
// the highest committed when it began" (seqSnapshot: nothing in
// progress). With those, the ledger's rules hold as they are:
//
//   - no event at or below a front's seq is unseen by the front's
//     snapshot, so a read has no late part and a partition no late
//     commit;
//   - a front moves over events delivered ahead (by ID) only when they
//     are at most the read's highest seq, as on Postgres only when the
//     read's snapshot sees them: an event that committed after the read
//     began, with a seq below an ahead one, was not read, and a front
//     moved past it would record it delivered (TestSQLiteFrontMovesOverAheadOnlyUpToTheRead);
//   - a recorded mark is a seq alone (mark_seq; the table keeps no
//     snapshot): every read after it sees every event at or below it,
//     so it is loaded with a snapshot that sees every transaction
//     (seesAll), and "covered" is "xid set and seq at most the mark's".

// seqSnapshot is, in txid_snapshot's text form, the snapshot of a SQLite
// read whose highest committed seq was top: every seq up to top is
// committed and seen, none is in progress, none above it has begun.
func seqSnapshot(top int64) string {
	n := strconv.FormatInt(top+1, 10)
	return n + ":" + n + ":"
}

// seesAll is the snapshot of a mark loaded from a SQLite table: it sees
// every transaction (every seq but the largest an int64 holds).
const seesAll = "9223372036854775807:9223372036854775807:"

// sqliteXid is the xid a SQLite watermark statement returns for the row
// alias: its seq when its delivery is recorded by its partition's mark,
// NULL when per row.
func sqliteXid(alias string) string {
	return "CASE WHEN " + alias + ".xid IS NULL THEN NULL ELSE " + alias + ".seq END"
}

// indexedBy names the index of the table with suffix (as Migrate names
// it) that a SQLite statement must read: under watermarks the partial
// indexes of pending events (claim order, undelivered aggregates) hold
// every event a mark delivered until Purge deletes it, and a plan that
// walked one of them to spare a sort would read the table's history. A
// statement that cannot use the index named fails to prepare, never
// falls back to a scan.
func (s *Store) indexedBy(suffix string) string {
	return " INDEXED BY " + s.t.Sibling(suffix)
}

// The indexes the SQLite statements name (migrations 002 and 007).
const (
	partSeqIndex     = "_part_seq_idx"
	perRowIndex      = "_per_row_idx"
	claimIndex       = "_claim_idx"
	undeliveredIndex = "_undelivered_idx"
	syncedIndex      = "_synced_idx"
)

// readMarksSQLite is readMarks on SQLite: one statement reads, in one
// read transaction with the highest seq committed (one snapshot, WAL),
// each claimable partition's events after its front in save order, the
// pending events delivered per row, and the events of a priority above 0
// after the fronts; the read's snapshot is seqSnapshot of that highest
// seq.
func (o *owner) readMarksSQLite(ctx context.Context, cr claimRun, owned map[int]int64, limit int, skipAggs []string, skipSeqs []int64) ([]eventRow, map[int]markRead, string, error) {
	s := o.s
	fronts := o.l.fronts(owned)
	n := o.readRoom(owned, limit)
	q := o.marksQuerySQLite(cr, owned, fronts, limit, n, skipAggs, skipSeqs)
	var rows []eventRow
	var top int64
	err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error {
		var err error
		if rows, err = claimRows(ctx, tx, q); err != nil {
			return err
		}
		// The same read transaction: the same snapshot as the rows'.
		return tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM "+s.t.Quoted).Scan(&top)
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("sqlstore: claim: %w", err)
	}
	o.lastRead.Store(int64(len(rows)))
	return rows, markReads(rows, fronts, n), seqSnapshot(top), nil
}

// marksQuerySQLite is the statement of readMarksSQLite, with the rules
// of marksQuery: its seq-ordered part (each partition's range after its
// front, through the index of events by partition and seq; the per-row
// pending events, through theirs) returns at most n rows, its priority
// branch at most limit (through the claim index, whose order it reads
// in). SQLite has no arrays and no LATERAL: a branch per partition, and
// the fronts written out as a CASE on the partition.
func (o *owner) marksQuerySQLite(cr claimRun, owned map[int]int64, fronts map[int]mark, limit, n int, skipAggs []string, skipSeqs []int64) *query {
	s := o.s
	t := s.t.Quoted
	now := s.sx.Time(cr.now)
	ahead := o.l.aheadSeqs(owned, maxSkip)
	const pending = " AND c.synced_at IS NULL AND c.dead_at IS NULL"
	q := newQuery(s.sx)
	notAhead := func() {
		if len(ahead) > 0 {
			q.sql(" AND NOT (", q.seqIn("c.seq", ahead), ")")
		}
	}
	q.sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no, ", sqliteXid("c"), " AS xid, ", leasedCol(q, now),
		" AS leased, c.b AS branch FROM (SELECT * FROM (")
	ps := slices.Sorted(maps.Keys(fronts))
	for _, p := range ps {
		q.sql("SELECT * FROM (SELECT c.*, 'r' AS b FROM ", t, " c", s.indexedBy(partSeqIndex), " WHERE c.partition_no = ", strconv.Itoa(p),
			" AND c.xid IS NOT NULL AND c.seq > ", q.arg(fronts[p].seq), pending)
		notAhead()
		q.sql(" ORDER BY c.seq LIMIT ", q.arg(n), ") UNION ALL ")
	}
	q.sql("SELECT * FROM (SELECT c.*, 'w' AS b FROM ", t, " c", s.indexedBy(perRowIndex), " WHERE ", partIn("c.partition_no", owned),
		" AND c.xid IS NULL", pending)
	perRowDue(q, cr, now, skipAggs, skipSeqs)
	q.sql(" ORDER BY c.seq LIMIT ", q.arg(n), ") ORDER BY seq LIMIT ", q.arg(n), ")")
	if len(ps) > 0 && cr.ordered {
		// As marksQuery's priority branch; an earlier event of the
		// aggregate after the front, or delivered per row, keeps an
		// event of another priority back (nothing at or below a front
		// is unseen by it). It leaves out the skip lists too: with one
		// partition, a front stays below an event of priority in flight
		// while an earlier event of priority 0 waits, and the event in
		// flight would take the branch's room from the next one.
		front := frontCase("c.partition_no", fronts)
		q.sql(" UNION ALL SELECT * FROM (SELECT c.*, 'p' AS b FROM ", t, " c", s.indexedBy(claimIndex), " WHERE c.priority > 0 AND c.seq > ", front,
			" AND c.xid IS NOT NULL", pending)
		notAhead()
		if len(skipAggs) > 0 {
			q.sql(" AND ", q.in("c.aggregate_id", skipAggs, true))
		}
		if len(skipSeqs) > 0 {
			q.sql(" AND NOT (", q.seqIn("c.seq", skipSeqs), ")")
		}
		q.sql(" AND (c.aggregate_id = '' OR NOT EXISTS (SELECT 1 FROM ", t, " e", s.indexedBy(undeliveredIndex),
			" WHERE e.aggregate_id = c.aggregate_id AND e.seq < c.seq AND e.priority <> c.priority AND e.synced_at IS NULL AND (e.xid IS NULL OR e.seq > ", front, ")))",
			" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(n), ")")
	}
	q.sql(") c")
	return q
}

// frontCase is the seq of the front of the partition col (an SQL
// expression) among fronts, written out: NULL for another partition.
// Front seqs are numbers the Store holds in memory, not input.
func frontCase(col string, fronts map[int]mark) string {
	var b strings.Builder
	b.WriteString("CASE " + col)
	for _, p := range slices.Sorted(maps.Keys(fronts)) {
		b.WriteString(" WHEN " + strconv.Itoa(p) + " THEN " + strconv.FormatInt(fronts[p].seq, 10))
	}
	b.WriteString(" END")
	return b.String()
}

// idsMarkedQuerySQLite is idsMarkedQuery on SQLite: the events of ids
// (branch c), and for each of them in a partition of fronts the earlier
// events of its aggregate that the front does not cover: after the
// front's seq (branch r, through the index of undelivered events by
// aggregate) and delivered per row (branch w, through the index of
// those, by partition); no late ones. Without LATERAL, each branch joins
// the events to the CTE ids and keeps blockersPerBranch rows per event
// (ROW_NUMBER).
func (o *owner) idsMarkedQuerySQLite(cr claimRun, fronts map[int]mark, limit int, ids []string) *query {
	s := o.s
	t := s.t.Quoted
	now := s.sx.Time(cr.now)
	cr.inMemory, cr.fenceIDs = fronts, true
	q := newQuery(s.sx)
	q.sql("WITH ids AS MATERIALIZED (SELECT * FROM ", t, " WHERE ", q.in("id", ids, false), ") SELECT * FROM (SELECT ",
		selectColumns(s.sx, "c."), ", c.partition_no, ", sqliteXid("c"), " AS xid, ", leasedCol(q, now), " AS leased, 'c' AS branch")
	s.candidates(q, cr, ids, "")
	claimOrder(q, limit)
	q.sql(")")
	if len(fronts) == 0 || !cr.ordered {
		return q
	}
	front := frontCase("c.partition_no", fronts)
	branch := func(b, index, on string) {
		q.sql(" UNION ALL SELECT ", selectColumns(s.sx, "e."), ", e.partition_no, ", sqliteXid("e"), " AS xid, CASE WHEN e.locked_until > ", q.arg(now),
			" THEN 1 ELSE 0 END AS leased, '", b, "' AS branch FROM (SELECT e.*, ROW_NUMBER() OVER (PARTITION BY c.id ORDER BY e.seq) AS rn FROM ids c JOIN ", t, " e",
			s.indexedBy(index), " ON ", on, " AND e.synced_at IS NULL WHERE c.aggregate_id <> '' AND ", front, " IS NOT NULL) e WHERE e.rn <= ", strconv.Itoa(blockersPerBranch))
	}
	branch("r", undeliveredIndex, "e.aggregate_id = c.aggregate_id AND e.seq > "+front+" AND e.seq < c.seq")
	branch("w", perRowIndex, "e.partition_no = c.partition_no AND e.seq < c.seq AND e.xid IS NULL AND e.dead_at IS NULL AND e.aggregate_id = c.aggregate_id")
	return q
}

// sqliteSetMarks is setMarks on SQLite: a mark is its seq, and the time
// it was recorded, on the database's clock in the layout of the table's
// other times (so that they compare as text).
func sqliteSetMarks(q *query, ps []int, recs map[int]record, tokens map[int]int64) {
	q.sql(", mark_seq = CASE")
	for _, p := range ps {
		q.sql(" WHEN ", markFence(q, p, tokens), " THEN ", q.arg(recs[p].to.seq))
	}
	q.sql(" ELSE mark_seq END, mark_at = CASE")
	for _, p := range ps {
		q.sql(" WHEN ", markFence(q, p, tokens), " THEN ", sqliteMarkNow)
	}
	q.sql(" ELSE mark_at END")
}

// sqliteMarkNow is the database's clock as sqlschema.TimeLayout writes
// times (strftime's %f has milliseconds).
const sqliteMarkNow = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
