package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// sqliteDialect: SQLite has one writer at a time, so UPDATE ... RETURNING
// is a claim on its own and needs no SKIP LOCKED. Concurrent writers wait
// for each other through the connection's busy_timeout. Times are TEXT in
// sqlschema.TimeLayout (UTC), which SQLite's date functions read and
// which sorts in time order.
type sqliteDialect struct{}

var sqliteSyntax = &syntax{
	Syntax: sqlschema.SyntaxOf(SQLite),
	// SQLITE_MAX_VARIABLE_NUMBER defaults to 32766 since SQLite 3.32.
	maxParams: 32766,
	timeCol:   sameExpr,
	castTime:  sameExpr,
	castText:  sameExpr,
}

func (sqliteDialect) syntax() *syntax { return sqliteSyntax }

// claim is one UPDATE ... RETURNING, ordered or not: the statement runs
// alone, so its subquery, which takes only rows with no earlier blocking
// event, is exact.
func (sqliteDialect) claim(ctx context.Context, s *Store, cr claimRun, limit int, ids []string) ([]eventRow, error) {
	q := newQuery(s.sx)
	s.lease(q, "", cr)
	q.sql(" WHERE seq IN (SELECT c.seq")
	s.candidates(q, cr, ids, "")
	claimOrder(q, limit)
	q.sql(") RETURNING ", selectColumns(s.sx, ""))
	return claimRows(ctx, s.db, q)
}

// latency: times are UTC text that julianday reads.
func (sqliteDialect) latency() string {
	return "((julianday(synced_at) - julianday(created_at)) * 86400000000.0)"
}

func (sqliteDialect) percentile(string) string { return "" }

func (sqliteDialect) purge(q *query, table string, cutoff any, limit int) {
	purgeBySeq(q, table, cutoff, limit)
}

// listen: SQLite has no notifications.
func (sqliteDialect) listen(context.Context, *Store, func()) error { return nil }

func (sqliteDialect) leftBehind(sqlschema.Table) []string { return nil }

// Partition ownership (owner.go): one writer at a time, so no locking
// clauses; lease times are text of the database's clock to the
// millisecond, which sorts as time.
func (sqliteDialect) shareLock() string  { return "" }
func (sqliteDialect) skipLocked() string { return "" }
func (sqliteDialect) dbNow() string      { return "strftime('%Y-%m-%d %H:%M:%f', 'now')" }
func (sqliteDialect) dbLater(q *query, d time.Duration) string {
	return "strftime('%Y-%m-%d %H:%M:%f', 'now', " + q.arg(fmt.Sprintf("%+.3f seconds", d.Seconds())) + ")"
}
func (sqliteDialect) upsert(q *query, table, name, until string) {
	q.sql("INSERT INTO ", table, " (owner, seen_until) VALUES (", name, ", ", until, ") ON CONFLICT (owner) DO UPDATE SET seen_until = excluded.seen_until")
}
func (sqliteDialect) txOptions() *sql.TxOptions                   { return nil }
func (sqliteDialect) idleBound(time.Duration) string              { return "" }
func (sqliteDialect) sessionBound(time.Duration) (string, string) { return "", "" }

// deadlock: never; SQLite has one writer at a time.
func (sqliteDialect) deadlock(error) bool { return false }
