package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// mysqlDialect: MySQL 8 and MariaDB have SKIP LOCKED but MariaDB has no
// UPDATE ... RETURNING, so a claim is a short transaction. Times travel
// as text in sqlschema.TimeLayout and are read back with CAST(... AS
// CHAR), so they are UTC whatever the DSN says about parseTime and loc.
type mysqlDialect struct{}

var mysqlSyntax = &syntax{
	Syntax:    sqlschema.SyntaxOf(MySQL),
	maxParams: 65535,
	// A multi-row INSERT is one packet when the DSN sets
	// interpolateParams=true; stay well under MariaDB's default
	// max_allowed_packet (16 MiB).
	maxStatementBytes: 8 << 20,
	timeCol:           func(col string) string { return "CAST(" + col + " AS CHAR)" },
	castTime:          func(ph string) string { return "CAST(" + ph + " AS DATETIME(6))" },
	castText:          sameExpr,
}

func (mysqlDialect) syntax() *syntax { return mysqlSyntax }

// claim runs one READ COMMITTED transaction: the locking read of the
// candidates (FOR UPDATE SKIP LOCKED), which when ordered also reads each
// candidate's aggregate head (headOf); when ordered the order check of
// the aggregates with several candidates (keepPrefixes); and the lease of
// the rows kept.
func (my mysqlDialect) claim(ctx context.Context, s *Store, cr claimRun, limit int, ids []string) ([]eventRow, error) {
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	q := newQuery(s.sx).sql("SELECT ", selectColumns(s.sx, ""))
	head := ""
	if cr.ordered {
		// MySQL reads a dependent subquery's index by aggregate only, not
		// by the seq bound, so the NOT EXISTS of candidates walks the
		// aggregate's whole undelivered tail; the head of an aggregate
		// (most candidates of a drain) is told by one index entry instead.
		head = my.headOf(s, cr)
		q.sql(", ", head, " AS head")
	}
	s.candidates(q, cr, ids, head)
	claimOrder(q, limit)
	q.sql(" FOR UPDATE SKIP LOCKED")
	rows, err := claimRows(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	if cr.ordered {
		if rows, err = my.keepPrefixes(ctx, s, tx, cr, rows); err != nil {
			return nil, err
		}
	}
	if len(rows) == 0 {
		return nil, tx.Commit() // nothing is changed; ending the transaction releases the locks
	}
	// The seqs are the store's own integers, written as literals: a
	// thousand placeholders cost the driver's server-side prepare more
	// than the update itself.
	u := newQuery(s.sx)
	s.lease(u, "", cr)
	u.sql(" WHERE seq IN (", seqList(rows), ")")
	if _, err := tx.ExecContext(ctx, u.String(), u.args...); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: commit: %w", err)
	}
	return rows, nil
}

// headOf is a subquery for the seq of the first undelivered event of c's
// aggregate (buried ones left out with cr.passDead): the first entry of
// the aggregate in the undelivered index.
func (mysqlDialect) headOf(s *Store, cr claimRun) string {
	return "(SELECT h.seq " + s.undelivered("h", "c.aggregate_id", cr.passDead) + " ORDER BY h.seq LIMIT 1)"
}

// keepPrefixes returns the locked candidate rows that may be claimed
// together: those without an aggregate, and an aggregate's k candidates
// only if they are exactly its first k undelivered events. For a lone
// candidate that is whether it is its aggregate's head (read with it, in
// the locking statement); for k > 1, whether the aggregate's undelivered
// events up to the last candidate number k, counted in one more
// statement for those aggregates only. Both see rows that other relays
// hold locked (their claims are not committed yet), which the locking
// read skipped; that is what makes the claim safe under SKIP LOCKED.
func (mysqlDialect) keepPrefixes(ctx context.Context, s *Store, tx *sqlx.Tx, cr claimRun, rows []eventRow) ([]eventRow, error) {
	type agg struct {
		k      int64
		maxSeq int64
		ok     bool
	}
	aggs := map[string]*agg{}
	var several []string
	for _, r := range rows {
		if r.AggregateID == "" {
			continue
		}
		a := aggs[r.AggregateID]
		if a == nil {
			a = &agg{ok: r.Head.Valid && r.Head.Int64 == r.Seq}
			aggs[r.AggregateID] = a
		}
		a.k++
		a.maxSeq = max(a.maxSeq, r.Seq)
		if a.k == 2 {
			a.ok = false // only its count can tell
			several = append(several, r.AggregateID)
		}
	}
	if len(several) > 0 {
		// One row per such aggregate (its ID and last candidate seq, the
		// seq as a literal) with its count: one short index range scan
		// each, where a WHERE of one OR term per aggregate made the
		// planner scan far more.
		q := newQuery(s.sx)
		q.sql("SELECT c.agg, ", s.prefixCount(cr, "c.agg", "c.maxseq"), " FROM (")
		for i, id := range several {
			if i > 0 {
				q.sql(" UNION ALL ")
			}
			q.sql("SELECT ", q.arg(id), " AS agg, ", strconv.FormatInt(aggs[id].maxSeq, 10), " AS maxseq")
		}
		q.sql(") c")
		r, err := tx.QueryContext(ctx, q.String(), q.args...)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
		defer r.Close()
		for r.Next() {
			var id string
			var n int64
			if err := r.Scan(&id, &n); err != nil {
				return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
			}
			if a := aggs[id]; a != nil {
				a.ok = a.k == n
			}
		}
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
		if err := r.Close(); err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
	}
	kept := rows[:0:0]
	for _, row := range rows {
		if row.AggregateID == "" || aggs[row.AggregateID].ok {
			kept = append(kept, row)
		}
	}
	return kept, nil
}

// seqList writes the rows' seqs as a comma-separated list of literals.
func seqList(rows []eventRow) string {
	b := make([]byte, 0, len(rows)*8)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, r.Seq, 10)
	}
	return string(b)
}

func (mysqlDialect) latency() string { return "TIMESTAMPDIFF(MICROSECOND, created_at, synced_at)" }

func (mysqlDialect) percentile(string) string { return "" }

// purge deletes with ORDER BY and LIMIT: MySQL allows no LIMIT in an IN
// subquery.
func (mysqlDialect) purge(q *query, table string, cutoff any, limit int) {
	q.sql("DELETE FROM ", table, " WHERE synced_at IS NOT NULL AND synced_at < ", q.arg(cutoff),
		" ORDER BY synced_at LIMIT ", q.arg(limit))
}

// listen: MySQL has no notifications.
func (mysqlDialect) listen(context.Context, *Store, func()) error { return nil }

func (mysqlDialect) leftBehind(sqlschema.Table) []string { return nil }

// Partition ownership (owner.go): lease times are UTC_TIMESTAMP, whatever
// the session's time zone.
func (mysqlDialect) shareLock() string  { return " LOCK IN SHARE MODE" }
func (mysqlDialect) skipLocked() string { return " FOR UPDATE SKIP LOCKED" }
func (mysqlDialect) dbNow() string      { return "UTC_TIMESTAMP(6)" }
func (mysqlDialect) dbLater(q *query, d time.Duration) string {
	return "UTC_TIMESTAMP(6) + INTERVAL " + q.arg(d.Microseconds()) + " MICROSECOND"
}
func (mysqlDialect) upsert(q *query, table, name, until string) {
	q.sql("INSERT INTO ", table, " (owner, seen_until) VALUES (", name, ", ", until, ") ON DUPLICATE KEY UPDATE seen_until = VALUES(seen_until)")
}
func (mysqlDialect) idleBound(time.Duration) string { return "" }

// sessionBound: MySQL and MariaDB close a connection idle for
// wait_timeout seconds, inside a transaction too, and roll it back.
func (mysqlDialect) sessionBound(d time.Duration) (string, string) {
	secs := max((d+time.Second-1)/time.Second, 1)
	return "SET SESSION wait_timeout = " + strconv.FormatInt(int64(secs), 10), "SET SESSION wait_timeout = DEFAULT"
}
func (mysqlDialect) txOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// deadlock: error 1213 (ER_LOCK_DEADLOCK), as go-sql-driver/mysql writes
// it (this package does not import the driver).
func (mysqlDialect) deadlock(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if msg := err.Error(); strings.HasPrefix(msg, "Error 1213 ") || strings.HasPrefix(msg, "Error 1213:") {
			return true
		}
	}
	return false
}
