package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox/sqlstore"
)

// maxTablesNamed bounds how many outbox tables a message names.
const maxTablesNamed = 10

// outboxTables returns the outbox tables of the database (or of the
// schema the connection uses): each table that has a <table>_migrations
// beside it, sorted.
func outboxTables(ctx context.Context, db *sqlx.DB, d sqlstore.Dialect) ([]string, error) {
	var q string
	switch d {
	case sqlstore.Postgres:
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
	case sqlstore.MySQL:
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
	default:
		q = "SELECT name FROM sqlite_master WHERE type = 'table'"
	}
	var names []string
	if err := db.SelectContext(ctx, &names, q); err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if base, ok := strings.CutSuffix(n, "_migrations"); ok && slices.Contains(names, base) {
			out = append(out, base)
		}
	}
	slices.Sort(out)
	return out, nil
}

// notSetUp is the error for a table the database does not hold: it names
// the outbox tables the database does hold, so that the fix is --table,
// or, when it holds none, says to migrate.
func notSetUp(ctx context.Context, e *env, dialect sqlstore.Dialect, cause error) error {
	found, err := bounded(ctx, e, func(ctx context.Context) ([]string, error) { return outboxTables(ctx, e.db, dialect) })
	switch {
	case err != nil:
		return fmt.Errorf("table %s is not set up in this database (run \"outbox migrate\" to create it, or pass --table): %w", e.table, cause)
	case len(found) == 0:
		return fmt.Errorf("table %s is not set up in this database, which holds no outbox table (run \"outbox migrate\" to create it): %w", e.table, cause)
	}
	named := found
	more := ""
	if len(found) > maxTablesNamed {
		named, more = found[:maxTablesNamed], fmt.Sprintf(" and %d more", len(found)-maxTablesNamed)
	}
	return fmt.Errorf("table %s is not set up in this database; its outbox %s %s%s: pass --table %s (or run \"outbox migrate\" to create %s)",
		e.table, plural(len(found), "table is", "tables are"), strings.Join(named, ", "), more, found[0], e.table)
}
