// Package sqlschema is the SQL machinery the sqlstore and inbox packages
// share: the Dialect type both export, how each dialect writes bind
// parameters, identifiers and times, the options of both New functions,
// table name validation and quoting, and the runner of the embedded,
// versioned migrations with its per-table migration lock.
package sqlschema

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"time"
)

// Dialect names a family of SQL databases. sqlstore.Dialect and
// inbox.Dialect are this type.
type Dialect string

// The supported dialects.
const (
	Postgres Dialect = "postgres" // PostgreSQL 12 or later (pgx stdlib or lib/pq)
	MySQL    Dialect = "mysql"    // MySQL 8.0 or later, MariaDB 10.6 or later (go-sql-driver/mysql)
	SQLite   Dialect = "sqlite"   // SQLite 3.35 or later (modernc.org/sqlite or mattn/go-sqlite3)
)

// driverDialects maps database/sql driver names to their dialect.
var driverDialects = map[string]Dialect{
	"pgx":      Postgres,
	"pgx/v5":   Postgres,
	"postgres": Postgres,
	"mysql":    MySQL,
	"sqlite":   SQLite,
	"sqlite3":  SQLite,
}

// DialectOf returns the dialect a database/sql driver name implies.
func DialectOf(driverName string) (Dialect, bool) {
	d, ok := driverDialects[driverName]
	return d, ok
}

// QuestionMark is the n-th bind parameter of MySQL and SQLite.
func QuestionMark(int) string { return "?" }

// Dollar is the n-th (1-based) bind parameter of Postgres.
func Dollar(n int) string { return "$" + strconv.Itoa(n) }

// DoubleQuote quotes an identifier for Postgres and SQLite.
func DoubleQuote(ident string) string { return `"` + ident + `"` }

// Backtick quotes an identifier for MySQL.
func Backtick(ident string) string { return "`" + ident + "`" }

// TimeLayout is how MySQL and SQLite store times: UTC, fixed width, so
// that text order is time order in SQLite.
const TimeLayout = "2006-01-02 15:04:05.000000"

// TimeText is a time as MySQL and SQLite take it: text in TimeLayout.
func TimeText(t time.Time) any { return t.UTC().Format(TimeLayout) }

// TimeUTC is a time as Postgres takes it into TIMESTAMPTZ.
func TimeUTC(t time.Time) any { return t.UTC() }

// Syntax is how a dialect writes what every statement of sqlstore and
// inbox needs.
type Syntax struct {
	Dialect Dialect
	// Placeholder returns the n-th (1-based) bind parameter.
	Placeholder func(n int) string
	// Quote quotes an identifier.
	Quote func(ident string) string
	// Time turns a time into a bind parameter, in UTC.
	Time func(t time.Time) any
}

// SyntaxOf returns dialect d's Syntax, or nil for an unknown dialect.
func SyntaxOf(d Dialect) *Syntax {
	if dd, ok := dialects[d]; ok {
		return &dd.Syntax
	}
	return nil
}

// dialect is what the migration runner needs to know of a database.
type dialect struct {
	Syntax
	schemas       bool   // a table name may be schema-qualified
	migrationsDDL string // creates the migrations table; %s is its quoted name
	// lock runs fn while holding locks named keys, taken in order, that
	// serialize migrations across processes, on conn, a connection of
	// the caller's own; p.locks starts the names of MySQL's locks.
	lock func(ctx context.Context, p prefix, conn *sql.Conn, keys []string, fn func(q Querier) error) error
}

var dialects = map[Dialect]*dialect{
	Postgres: {
		Syntax:  Syntax{Dialect: Postgres, Placeholder: Dollar, Quote: DoubleQuote, Time: TimeUTC},
		schemas: true,
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at TIMESTAMPTZ  NOT NULL
)`,
		lock: postgresLock,
	},
	MySQL: {
		Syntax:  Syntax{Dialect: MySQL, Placeholder: QuestionMark, Quote: Backtick, Time: TimeText},
		schemas: true,
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       NOT NULL PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at DATETIME(6)  NOT NULL
) ENGINE=InnoDB`,
		lock: mysqlLock,
	},
	SQLite: {
		Syntax: Syntax{Dialect: SQLite, Placeholder: QuestionMark, Quote: DoubleQuote, Time: TimeText},
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL
)`,
		lock: sqliteLock,
	},
}

// Querier is what a migration runs its statements on: a *sql.Tx or a
// *sql.Conn.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// prefix is what the package's errors and lock names start with.
type prefix struct {
	errors string // "sqlstore"
	locks  string // "outbox_migrate"
}

// postgresLock runs fn in one transaction holding transaction-level
// advisory locks: Postgres DDL is transactional, so a migration applies
// whole or not at all, and the lock ends with the transaction whatever
// happens.
func postgresLock(ctx context.Context, p prefix, conn *sql.Conn, keys []string, fn func(q Querier) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: migrate: begin: %w", p.errors, err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	for _, key := range keys {
		h := fnv.New64a()
		h.Write([]byte(key))
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
			return fmt.Errorf("%s: migrate: lock: %w", p.errors, err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: migrate: commit: %w", p.errors, err)
	}
	return nil
}

// mysqlLock holds named locks (GET_LOCK, one per key, taken in order) on
// conn while fn runs. MySQL DDL commits implicitly, so there is no
// transaction to lean on: Migrate leaves out what an interrupted run
// already applied instead (see mysqlRemaining).
func mysqlLock(ctx context.Context, p prefix, conn *sql.Conn, keys []string, fn func(q Querier) error) error {
	wait := 3600 // seconds; ctx cancellation ends the wait sooner
	if dl, ok := ctx.Deadline(); ok {
		wait = max(int(math.Ceil(time.Until(dl).Seconds())), 1)
	}
	for _, key := range keys {
		h := fnv.New64a()
		h.Write([]byte(key))
		name := fmt.Sprintf("%s_%016x", p.locks, h.Sum64())
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, wait).Scan(&got); err != nil {
			return fmt.Errorf("%s: migrate: lock: %w", p.errors, err)
		}
		if !got.Valid || got.Int64 != 1 {
			return fmt.Errorf("%s: migrate: timed out after %ds waiting for another process's migration (lock %s)", p.errors, wait, name)
		}
		defer func() {
			var released sql.NullInt64
			err := conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", name).Scan(&released)
			if err != nil {
				// The lock belongs to the session: discard the connection so
				// the server drops the lock with it.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	return fn(conn)
}

// sqliteLock runs fn in a BEGIN IMMEDIATE transaction: it takes the
// database's write lock at once (waiting up to busy_timeout), so
// concurrent callers run one after the other, and SQLite DDL is
// transactional.
func sqliteLock(ctx context.Context, p prefix, conn *sql.Conn, _ []string, fn func(q Querier) error) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("%s: migrate: begin: %w", p.errors, err)
	}
	rollback := func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			// Never hand a connection inside a transaction back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}
	if err := fn(conn); err != nil {
		rollback()
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		rollback()
		return fmt.Errorf("%s: migrate: commit: %w", p.errors, err)
	}
	return nil
}
