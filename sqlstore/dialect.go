package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// Dialect names a family of SQL databases the Store speaks to. It is
// inbox.Dialect: one value configures both packages.
type Dialect = sqlschema.Dialect

// The supported dialects.
const (
	Postgres = sqlschema.Postgres // PostgreSQL 12 or later (pgx stdlib or lib/pq)
	MySQL    = sqlschema.MySQL    // MySQL 8.0 or later, MariaDB 10.6 or later (go-sql-driver/mysql)
	SQLite   = sqlschema.SQLite   // SQLite 3.35 or later (modernc.org/sqlite or mattn/go-sqlite3)
)

// dialect is what one database does its own way, each in a file of its
// own: postgres.go, mysql.go, sqlite.go. Everything else is shared SQL
// (the candidates of a claim and its order check are in claim.go); table
// names and migrations are internal/sqlschema's.
type dialect interface {
	// syntax returns how the dialect writes the store's statements.
	syntax() *syntax
	// claim leases to cr at most limit due events, of ids if ids is not
	// nil, and returns them, in one statement or one short transaction:
	// one chunk of Store.Claim.
	claim(ctx context.Context, s *Store, cr claimRun, limit int, ids []string) ([]eventRow, error)
	// latency is the sync latency of a row in microseconds, as a
	// floating-point number.
	latency() string
	// percentile is the aggregate that interpolates the 99th percentile
	// of lat, or "" where the database has none and Stats reads the
	// nearest-rank value instead.
	percentile(lat string) string
	// purge writes the statement that deletes, oldest first, at most
	// limit events of table synced before cutoff.
	purge(q *query, table string, cutoff any, limit int)
	// listen is Store.Listen.
	listen(ctx context.Context, s *Store, wake func()) error
	// leftBehind returns the statements that drop what Migrate created
	// for t and DROP TABLE leaves behind.
	leftBehind(t sqlschema.Table) []string

	// What partition ownership needs (see membership.go and fence):

	// shareLock is the locking clause of the fence's read of the
	// partitions ("" where the database has one writer).
	shareLock() string
	// skipLocked is the locking clause of the read of free partitions.
	skipLocked() string
	// dbNow is the database's clock, as the type of the lease columns.
	dbNow() string
	// dbLater writes the database's clock plus d.
	dbLater(q *query, d time.Duration) string
	// upsert writes the statement that records a relay as seen until
	// until (an expression).
	upsert(q *query, table, name, until string)
	// txOptions are those of the heartbeat's transaction.
	txOptions() *sql.TxOptions
	// idleBound is the statement that ends the heartbeat's transaction
	// on the server when it stays idle for d (its relay paused in the
	// middle of it, holding its partitions' row locks), or "" where the
	// database has none.
	idleBound(d time.Duration) string
	// sessionBound is, where the database has no such bound on one
	// transaction (MySQL), the statement that makes the server close the
	// heartbeat's connection once idle for d, and the one that puts the
	// session's default back before the connection returns to the pool;
	// "" and "" elsewhere.
	sessionBound(d time.Duration) (set, reset string)
	// deadlock reports whether err is the database's report that it
	// rolled the transaction back to break a deadlock.
	deadlock(err error) bool
}

// syntax is how a dialect writes the store's statements: bind
// parameters, quoting and times as in sqlschema.Syntax, and the rest.
type syntax struct {
	*sqlschema.Syntax

	// maxParams is the most bind parameters one statement may carry.
	maxParams int
	// maxStatementBytes bounds the payload and header bytes of one
	// multi-row INSERT (0: unbounded).
	maxStatementBytes int
	// arrays: a list of IDs can travel as one TEXT[] parameter.
	arrays bool

	// timeCol is the select expression that reads time column col back
	// as something dbTime can scan.
	timeCol func(col string) string
	// castTime and castText type a bind parameter used inside a CASE
	// expression, where the database cannot infer its type.
	castTime func(ph string) string
	castText func(ph string) string
}

var dialects = map[Dialect]dialect{
	Postgres: postgresDialect{},
	MySQL:    mysqlDialect{},
	SQLite:   sqliteDialect{},
}

func sameExpr(ph string) string { return ph }

// dbTime scans a time column whatever form the driver hands it in: a
// time.Time (pgx, or MySQL with parseTime), or text in timeLayout or RFC
// 3339. NULL scans as the zero time. Text carries no zone and is UTC.
type dbTime struct{ time.Time }

// Scan implements sql.Scanner.
func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Time = time.Time{}
		return nil
	case time.Time:
		t.Time = v.UTC()
		return nil
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	}
	return fmt.Errorf("sqlstore: cannot scan %T as a time", src)
}

func (t *dbTime) parse(s string) error {
	s = strings.TrimSpace(s)
	for _, layout := range [...]string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00"} {
		if v, err := time.Parse(layout, s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("sqlstore: cannot parse time %q", s)
}
