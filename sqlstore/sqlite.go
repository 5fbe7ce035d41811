package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
)

// sqliteDialect: SQLite has one writer at a time, so UPDATE ... RETURNING
// is a claim on its own and needs no SKIP LOCKED. Concurrent writers wait
// for each other through the connection's busy_timeout. Times are TEXT in
// timeLayout (UTC), which SQLite's date functions read and which sorts in
// time order.
var sqliteDialect = &dialect{
	name:        SQLite,
	placeholder: questionMark,
	quote:       doubleQuote,
	schemas:     false,
	// SQLITE_MAX_VARIABLE_NUMBER defaults to 32766 since SQLite 3.32.
	maxParams:  32766,
	returning:  true,
	skipLocked: false,
	timeArg:    timeText,
	timeCol:    sameExpr,
	castTime:   sameExpr,
	castText:   sameExpr,
	migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL
)`,
	lockMigrations: sqliteLockMigrations,
}

// sqliteLockMigrations runs fn in a BEGIN IMMEDIATE transaction: it takes
// the database's write lock at once (waiting up to busy_timeout), so
// concurrent callers run one after the other, and SQLite DDL is
// transactional.
func sqliteLockMigrations(ctx context.Context, conn *sql.Conn, _ []string, fn func(q querier) error) error {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlstore: migrate: begin: %w", err)
	}
	if err := fn(conn); err != nil {
		if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil {
			// Never hand a connection inside a transaction back to the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		if _, rbErr := conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); rbErr != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		return fmt.Errorf("sqlstore: migrate: commit: %w", err)
	}
	return nil
}
