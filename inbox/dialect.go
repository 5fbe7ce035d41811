package inbox

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

// Dialect names a family of SQL databases.
type Dialect string

// The supported dialects, as in sqlstore.
const (
	Postgres Dialect = "postgres" // PostgreSQL 12 or later
	MySQL    Dialect = "mysql"    // MySQL 8.0 or later, MariaDB 10.6 or later
	SQLite   Dialect = "sqlite"   // SQLite 3.35 or later
)

// dialect is what differs between databases: placeholders, quoting, how
// a duplicate insert is skipped, how times travel, and how Migrate
// serializes concurrent callers.
type dialect struct {
	name        Dialect
	placeholder func(n int) string
	quote       func(ident string) string
	schemas     bool
	// insert is the statement that records an event unless its ID is
	// there: %s is the table; parameters are id, topic, type, time. It
	// affects one row when it inserted and none for a duplicate.
	insert        string
	timeArg       func(t time.Time) any
	migrationsDDL string
	lock          func(ctx context.Context, conn *sql.Conn, key string, fn func(q querier) error) error
}

// querier is what a migration runs its statements on.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// timeLayout is how MySQL and SQLite keep times: UTC, fixed width.
const timeLayout = "2006-01-02 15:04:05.000000"

func timeText(t time.Time) any { return t.UTC().Format(timeLayout) }

func doubleQuote(ident string) string { return `"` + ident + `"` }

var dialects = map[Dialect]*dialect{
	Postgres: {
		name:        Postgres,
		placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
		quote:       doubleQuote,
		schemas:     true,
		insert:      "INSERT INTO %s (id, topic, event_type, processed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
		timeArg:     func(t time.Time) any { return t.UTC() },
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at TIMESTAMPTZ  NOT NULL
)`,
		lock: postgresLock,
	},
	MySQL: {
		name:        MySQL,
		placeholder: func(int) string { return "?" },
		quote:       func(ident string) string { return "`" + ident + "`" },
		schemas:     true,
		// INSERT IGNORE affects no row for a duplicate whatever the DSN's
		// clientFoundRows says (ON DUPLICATE KEY UPDATE would count it as
		// found). The errors it would turn into warnings cannot happen:
		// Process checks the ID's length and the other values fit.
		insert:  "INSERT IGNORE INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?)",
		timeArg: timeText,
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       NOT NULL PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at DATETIME(6)  NOT NULL
) ENGINE=InnoDB`,
		lock: mysqlLock,
	},
	SQLite: {
		name:        SQLite,
		placeholder: func(int) string { return "?" },
		quote:       doubleQuote,
		insert:      "INSERT INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
		timeArg:     timeText,
		migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL
)`,
		lock: sqliteLock,
	},
}

// driverDialects maps database/sql driver names to their dialect.
var driverDialects = map[string]Dialect{
	"pgx": Postgres, "pgx/v5": Postgres, "postgres": Postgres,
	"mysql":  MySQL,
	"sqlite": SQLite, "sqlite3": SQLite,
}

// postgresLock runs fn in one transaction holding a transaction-level
// advisory lock; Postgres DDL is transactional.
func postgresLock(ctx context.Context, conn *sql.Conn, key string, fn func(q querier) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("inbox: migrate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	h := fnv.New64a()
	h.Write([]byte(key))
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
		return fmt.Errorf("inbox: migrate: lock: %w", err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("inbox: migrate: commit: %w", err)
	}
	return nil
}

// mysqlLock holds a named lock (GET_LOCK) on conn while fn runs; MySQL
// DDL commits implicitly, so the migrations are re-runnable instead.
func mysqlLock(ctx context.Context, conn *sql.Conn, key string, fn func(q querier) error) error {
	h := fnv.New64a()
	h.Write([]byte(key))
	name := fmt.Sprintf("inbox_migrate_%016x", h.Sum64())
	wait := 3600
	if dl, ok := ctx.Deadline(); ok {
		wait = max(int(math.Ceil(time.Until(dl).Seconds())), 1)
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, wait).Scan(&got); err != nil {
		return fmt.Errorf("inbox: migrate: lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("inbox: migrate: timed out after %ds waiting for another process's migration (lock %s)", wait, name)
	}
	defer func() {
		var released sql.NullInt64
		if err := conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", name).Scan(&released); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return fn(conn)
}

// sqliteLock runs fn in a BEGIN IMMEDIATE transaction, which takes the
// write lock at once; SQLite DDL is transactional.
func sqliteLock(ctx context.Context, conn *sql.Conn, _ string, fn func(q querier) error) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("inbox: migrate: begin: %w", err)
	}
	rollback := func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}
	if err := fn(conn); err != nil {
		rollback()
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		rollback()
		return fmt.Errorf("inbox: migrate: commit: %w", err)
	}
	return nil
}
