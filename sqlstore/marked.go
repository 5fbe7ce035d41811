package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// What operators read of a Store with watermarks (Postgres; SQLite's
// statements are in marked_sqlite.go). An event is
// delivered when its synced_at records it (per row) or when its
// partition's mark covers it: it has a transaction ID, a seq at most the
// mark's and a transaction the mark's snapshot saw committed. No write
// records the second kind, so the partial indexes of events not yet
// synced (claim order, pending by type, undelivered aggregates) keep
// them until Purge deletes them: a read that walked those indexes would
// read every event the table retains. The reads below go instead per
// partition, from its mark, through the indexes of the relays' reads
// (migration 008), and cost about what they return: the pending events,
// or a page.

// unbounded is an upper bound on seq and xid that the planner reads as
// closing a range. The lower bound is a column of the partitions row,
// unknown when the statement is planned; alone, the planner expects it
// to keep a third of a partition and may plan a scan of the table (and
// compile it, JIT). With both bounds it expects a narrow range, as a
// partition's events after its mark are, and plans index scans.
const unbounded = "9223372036854775807"

// noJIT is the first statement of a transaction of reads of a Store with
// watermarks, as of the relays' claims (claimSettings): no compilation
// of its plans (JIT). Their estimates per partition are the planner's
// defaults, ranges bounded by a column of the partitions row, and on a
// table of millions of events they pass the cost at which Postgres
// compiles a plan; compiling costs more than reading (tenths of a
// second).
const noJIT = "SELECT set_config('jit', 'off', true)"

// markedTx runs fn in a transaction (read-only unless write) whose
// statements are planned without JIT compilation.
func (s *Store) markedTx(ctx context.Context, write bool, fn func(tx *sqlx.Tx) error) error {
	return s.markedTxOpts(ctx, &sql.TxOptions{ReadOnly: !write}, "", fn)
}

// markedTxOpts is markedTx with the transaction's options, and settings
// (", set_config(...)" terms, local to the transaction) set in the same
// statement as JIT's: one round trip for both.
func (s *Store) markedTxOpts(ctx context.Context, opts *sql.TxOptions, settings string, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit: nothing to undo
	if s.Dialect() == Postgres {
		if _, err := tx.ExecContext(ctx, noJIT+settings); err != nil {
			return err
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// markedRead is one read of a Store with watermarks: its select list,
// over the event (alias c) and, in the branches of a partition, its
// partitions row (alias w), given the expression of the event's delivery
// time; the conditions on c (each written with a leading " AND "); and,
// for a page, what bounds each branch (an ORDER BY and a LIMIT on c).
type markedRead struct {
	cols   func(synced string) string
	filter func(q *query)
	bound  func(q *query)
}

func (r markedRead) where(q *query) {
	if r.filter != nil {
		r.filter(q)
	}
}

// limit bounds a branch, or fences it (OFFSET 0) so that the planner
// keeps it as written: per partition, through the index it names.
func (r markedRead) limit(q *query) {
	if r.bound != nil {
		r.bound(q)
		return
	}
	q.sql(" OFFSET 0")
}

// pendingUnion writes the pending events of a Store with watermarks (not
// synced, not dead, not covered by their partition's mark) as the UNION
// ALL of four disjoint branches: per partition, its events after its mark
// (the index on partition and seq); per partition, its events at or
// before its mark of transactions that started after the mark's snapshot
// (the index on partition and transaction ID) and of those the snapshot
// saw in progress (one probe each); and the events delivered per row
// (their partial index). The two late branches read a partition's events
// since its mark's snapshot and keep those at or before the mark, so
// r.bound does not bound them (it would cut before that filter).
func (s *Store) pendingUnion(q *query, r markedRead) {
	if s.Dialect() == SQLite {
		s.sqlitePendingUnion(q, r)
		return
	}
	t, parts := s.t.Quoted, s.t.Sibling(partitionsSuffix)
	cols := r.cols("c.synced_at")
	const pending = " AND c.synced_at IS NULL AND c.dead_at IS NULL"
	q.sql("(SELECT ", cols, " FROM ", parts, " w CROSS JOIN LATERAL (SELECT * FROM ", t, " c WHERE c.partition_no = w.partition_no",
		" AND c.xid IS NOT NULL AND c.seq > w.mark_seq AND c.seq <= ", unbounded, pending)
	r.where(q)
	r.limit(q)
	q.sql(") c) UNION ALL (SELECT ", cols, " FROM ", parts, " w CROSS JOIN LATERAL (SELECT * FROM ", t, " c WHERE c.partition_no = w.partition_no",
		" AND c.xid >= txid_snapshot_xmax(w.mark_snap) AND c.xid <= ", unbounded, pending)
	r.where(q)
	q.sql(" OFFSET 0) c WHERE c.seq <= w.mark_seq) UNION ALL (SELECT ", cols, " FROM ", parts,
		" w CROSS JOIN LATERAL txid_snapshot_xip(w.mark_snap) x(xid) CROSS JOIN LATERAL (SELECT * FROM ", t,
		" c WHERE c.partition_no = w.partition_no AND c.xid = x.xid", pending)
	r.where(q)
	q.sql(" OFFSET 0) c WHERE c.seq <= w.mark_seq) UNION ALL (SELECT ", cols, " FROM ", t, " c WHERE c.xid IS NULL", pending)
	r.where(q)
	if r.bound != nil {
		r.bound(q)
	}
	q.sql(")")
}

// coveredBranch writes the events of a Store with watermarks that their
// partitions' marks delivered (covered, not synced per row, not dead),
// per partition through the index on partition and seq, their delivery
// time the mark's. wfilter, when set, writes conditions on the
// partitions row (each with a leading " AND ").
func (s *Store) coveredBranch(q *query, r markedRead, wfilter func(q *query)) {
	if s.Dialect() == SQLite {
		s.sqliteCoveredBranch(q, r, wfilter)
		return
	}
	q.sql("(SELECT ", r.cols("w.mark_at"), " FROM ", s.t.Sibling(partitionsSuffix), " w CROSS JOIN LATERAL (SELECT * FROM ", s.t.Quoted,
		" c WHERE c.partition_no = w.partition_no AND c.xid IS NOT NULL AND c.seq <= w.mark_seq AND c.synced_at IS NULL AND c.dead_at IS NULL",
		" AND txid_visible_in_snapshot(c.xid, w.mark_snap)")
	r.where(q)
	r.limit(q)
	q.sql(") c WHERE w.mark_seq > 0")
	if wfilter != nil {
		wfilter(q)
	}
	q.sql(")")
}

// syncedBranch writes the events a Store with watermarks delivered per
// row (synced_at), through the index on synced_at or the primary key.
func (s *Store) syncedBranch(q *query, r markedRead) {
	q.sql(s.openBranch(), "SELECT ", r.cols("c.synced_at"), " FROM ", s.t.Quoted, " c")
	if s.Dialect() == SQLite {
		q.sql(s.indexedBy(syncedIndex)) // not the table in seq order: few events are synced per row
	}
	q.sql(" WHERE c.synced_at IS NOT NULL")
	r.where(q)
	if r.bound != nil {
		r.bound(q)
	}
	q.sql(")")
}

// markedSynced is the delivery time a Store with watermarks reads for the
// event c: its synced_at or, when its partition's mark covers it, the
// time of that mark (it was delivered by then).
func (s *Store) markedSynced() string {
	if s.Dialect() == SQLite {
		return "COALESCE(c.synced_at, (SELECT w.mark_at FROM " + s.t.Sibling(partitionsSuffix) +
			" w WHERE w.partition_no = c.partition_no AND c.dead_at IS NULL AND " + sqliteMarked("c") + "))"
	}
	return "COALESCE(c.synced_at, (SELECT w.mark_at FROM " + s.t.Sibling(partitionsSuffix) +
		" w WHERE w.partition_no = c.partition_no AND c.xid IS NOT NULL AND c.dead_at IS NULL AND c.seq <= w.mark_seq" +
		" AND txid_visible_in_snapshot(c.xid, w.mark_snap)))"
}

// eventCols is the select list of reads that return events, over c.
func (s *Store) eventCols(synced string) string {
	return selectColumnsSynced(s.sx, "c.", synced)
}

// pageCols is eventCols with the event's partition.
func (s *Store) pageCols(synced string) string {
	return s.eventCols(synced) + ", c.partition_no"
}

// WatermarksInUse reports whether a relay built WithWatermarks has
// recorded a mark on the table (false on MySQL, and on a table from
// before the migration that brought marks: Postgres 8, SQLite 7). The
// figures and lists of a Store built without WithWatermarks count the
// events such relays delivered by their marks as pending, so a tool that
// reads a table without relaying from it (the outbox command) builds its
// Store WithWatermarks when this is true; and a relay built without it
// refuses such a table (ErrWatermarksInUse).
func (s *Store) WatermarksInUse(ctx context.Context) (bool, error) {
	parts := s.t.Sibling(partitionsSuffix)
	var q string
	switch s.Dialect() {
	case MySQL:
		return false, nil
	case SQLite:
		var has bool
		if err := s.db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?) WHERE name = 'mark_seq')", s.t.Name+partitionsSuffix).Scan(&has); err != nil {
			return false, fmt.Errorf("sqlstore: watermarks in use: %w", err)
		}
		if !has {
			return false, nil
		}
		q = "SELECT EXISTS (SELECT 1 FROM " + parts + " WHERE mark_seq > 0)"
	default:
		// Through to_jsonb, so that a table without the column answers
		// false rather than an error.
		q = "SELECT EXISTS (SELECT 1 FROM " + parts + " p WHERE (to_jsonb(p)->>'mark_seq')::bigint > 0)"
	}
	var used bool
	if err := s.db.QueryRowContext(ctx, q).Scan(&used); err != nil {
		return false, fmt.Errorf("sqlstore: watermarks in use: %w", err)
	}
	return used, nil
}

// ErrWatermarksInUse is wrapped by Heartbeat and Claim of a Store built
// without WithWatermarks whose table's relays record delivery by marks:
// relaying from it, the Store would publish again every event the marks
// delivered. Build every relay of the table WithWatermarks.
var ErrWatermarksInUse = errors.New("sqlstore: the table's relays record delivery by marks (WithWatermarks) and this Store is built without it; it would publish again every event the marks delivered")
