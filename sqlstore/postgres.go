package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"time"
)

// postgresDialect: UPDATE ... RETURNING with FOR UPDATE SKIP LOCKED makes
// a claim one statement; times travel as time.Time into TIMESTAMPTZ.
var postgresDialect = &dialect{
	name:        Postgres,
	placeholder: dollar,
	quote:       doubleQuote,
	schemas:     true,
	maxParams:   65535,
	returning:   true,
	skipLocked:  true,
	timeArg:     func(t time.Time) any { return t.UTC() },
	timeCol:     sameExpr,
	castTime:    func(ph string) string { return "CAST(" + ph + " AS TIMESTAMPTZ)" },
	castText:    func(ph string) string { return "CAST(" + ph + " AS TEXT)" },
	migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at TIMESTAMPTZ  NOT NULL
)`,
	lockMigrations: postgresLockMigrations,
}

// postgresLockMigrations runs fn in one transaction holding
// transaction-level advisory locks: Postgres DDL is transactional, so a
// migration applies whole or not at all, and the lock ends with the
// transaction whatever happens.
func postgresLockMigrations(ctx context.Context, conn *sql.Conn, keys []string, fn func(q querier) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	for _, key := range keys {
		h := fnv.New64a()
		h.Write([]byte(key))
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
			return fmt.Errorf("sqlstore: migrate: lock: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: migrate: commit: %w", err)
	}
	return nil
}
