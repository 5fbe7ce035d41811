package sqlstore

// What operators read of a Store with watermarks on SQLite (see
// marked.go and watermark_sqlite.go). An event is delivered when its
// synced_at records it or when its partition's mark covers it: it has an
// xid and a seq at most the mark's (events commit in seq order, so the
// mark needs no snapshot). The reads have the branches of Postgres's but
// the late ones, each on the index it names: SQLite has no LATERAL, so a
// branch of a partition joins the partitions table to the events, the
// partitions first (CROSS JOIN keeps that order), and a compound's
// branches are written "SELECT * FROM (...)", as SQLite allows no ORDER
// BY or LIMIT in a compound's parts.

// openBranch starts a branch of a compound read (closed by ")"):
// parenthesized on Postgres, a subquery on SQLite.
func (s *Store) openBranch() string {
	if s.Dialect() == SQLite {
		return "SELECT * FROM ("
	}
	return "("
}

// sqlitePendingUnion is pendingUnion on SQLite: per partition, its
// events after its mark; and the events delivered per row.
func (s *Store) sqlitePendingUnion(q *query, r markedRead) {
	t, parts := s.t.Quoted, s.t.Sibling(partitionsSuffix)
	cols := r.cols("c.synced_at")
	const pending = " AND c.synced_at IS NULL AND c.dead_at IS NULL"
	q.sql("SELECT * FROM (SELECT ", cols, " FROM ", parts, " w CROSS JOIN ", t, " c", s.indexedBy(partSeqIndex),
		" WHERE c.partition_no = w.partition_no AND c.xid IS NOT NULL AND c.seq > w.mark_seq", pending)
	r.where(q)
	if r.bound != nil {
		r.bound(q)
	}
	q.sql(") UNION ALL SELECT * FROM (SELECT ", cols, " FROM ", t, " c", s.indexedBy(perRowIndex), " WHERE c.xid IS NULL", pending)
	r.where(q)
	if r.bound != nil {
		r.bound(q)
	}
	q.sql(")")
}

// sqliteCoveredBranch is coveredBranch on SQLite: per partition, its
// events at or below its mark, and wfilter on them and their partitions
// row. With r.bound, the events of each partition are its first ones in
// that order, as in coveredBranch: the seqs of those are a subquery of
// the partitions row (which SQLite runs once per partition, through the
// index on partition and seq, as Postgres runs a LATERAL), and the
// events are then read by seq. Written as one join ordered by seq, the
// branch sorted every event the marks delivered that the table retains.
func (s *Store) sqliteCoveredBranch(q *query, r markedRead, wfilter func(q *query)) {
	t, parts := s.t.Quoted, s.t.Sibling(partitionsSuffix)
	covered := " WHERE c.partition_no = w.partition_no AND c.xid IS NOT NULL AND c.seq <= w.mark_seq AND c.synced_at IS NULL AND c.dead_at IS NULL"
	q.sql("SELECT * FROM (SELECT ", r.cols("w.mark_at"), " FROM ", parts, " w CROSS JOIN ", t, " c")
	if r.bound != nil {
		// The subquery's c is the events of w's partition; the outer c
		// those it names.
		q.sql(" WHERE c.seq IN (SELECT c.seq FROM ", t, " c", s.indexedBy(partSeqIndex), covered)
		r.where(q)
		r.bound(q)
		q.sql(")")
	} else {
		q.sql(s.indexedBy(partSeqIndex), covered)
		r.where(q)
	}
	q.sql(" AND w.mark_seq > 0")
	if wfilter != nil {
		wfilter(q)
	}
	q.sql(")")
}

// sqliteMarked is the condition that the event alias is delivered by its
// partition's mark, given the partitions row w.
func sqliteMarked(alias string) string {
	return alias + ".xid IS NOT NULL AND " + alias + ".seq <= w.mark_seq"
}
