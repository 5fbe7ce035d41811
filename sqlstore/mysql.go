package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"math"
	"time"
)

// mysqlDialect: MySQL 8 and MariaDB have SKIP LOCKED but MariaDB has no
// UPDATE ... RETURNING, so a claim is a short transaction. Times travel
// as text in timeLayout and are read back with CAST(... AS CHAR), so they
// are UTC whatever the DSN says about parseTime and loc.
var mysqlDialect = &dialect{
	name:        MySQL,
	placeholder: questionMark,
	quote:       func(ident string) string { return "`" + ident + "`" },
	schemas:     true,
	maxParams:   65535,
	// A multi-row INSERT is one packet when the DSN sets
	// interpolateParams=true; stay well under MariaDB's default
	// max_allowed_packet (16 MiB).
	maxStatementBytes: 8 << 20,
	returning:         false,
	skipLocked:        true,
	timeArg:           timeText,
	timeCol:           func(col string) string { return "CAST(" + col + " AS CHAR)" },
	castTime:          func(ph string) string { return "CAST(" + ph + " AS DATETIME(6))" },
	castText:          sameExpr,
	migrationsDDL: `CREATE TABLE IF NOT EXISTS %s (
	version    BIGINT       NOT NULL PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at DATETIME(6)  NOT NULL
) ENGINE=InnoDB`,
	lockMigrations: mysqlLockMigrations,
}

// mysqlLockMigrations holds named locks (GET_LOCK, one per key, taken in
// order) on conn while fn runs. MySQL DDL commits implicitly, so there is
// no transaction to lean on: Migrate leaves out what an interrupted run
// already applied instead (see Store.Migrate).
func mysqlLockMigrations(ctx context.Context, conn *sql.Conn, keys []string, fn func(q querier) error) error {
	wait := 3600 // seconds; ctx cancellation ends the wait sooner
	if dl, ok := ctx.Deadline(); ok {
		wait = int(math.Ceil(time.Until(dl).Seconds()))
		wait = max(wait, 1)
	}
	for _, key := range keys {
		h := fnv.New64a()
		h.Write([]byte(key))
		name := fmt.Sprintf("outbox_migrate_%016x", h.Sum64())
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, wait).Scan(&got); err != nil {
			return fmt.Errorf("sqlstore: migrate: lock: %w", err)
		}
		if !got.Valid || got.Int64 != 1 {
			return fmt.Errorf("sqlstore: migrate: timed out after %ds waiting for another process's migration (lock %s)", wait, name)
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
