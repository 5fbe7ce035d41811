package inbox

import (
	"context"
	"embed"
	"errors"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// The schema, one directory per dialect, one file per version, named
// NNN_description.up.sql, written for DefaultTable so that goose,
// golang-migrate or atlas can apply them as they are; Migrate and Schema
// put the configured name in its place.
//
//go:embed migrations/*/*.sql
var migrationFiles embed.FS

// ddl validates table names and applies migrationFiles.
var ddl = sqlschema.New(sqlschema.Config{
	Package:            "inbox",
	LockName:           "inbox_migrate",
	DefaultTable:       DefaultTable,
	MaxTableNameLength: MaxTableNameLength,
	Files:              migrationFiles,
	ErrTooNew:          ErrSchemaTooNew,
})

// Schema returns the SQL that creates the inbox table named table (""
// for DefaultTable) in dialect d: what Migrate applies, for review or for
// another migration tool.
func Schema(d Dialect, table string) (string, error) {
	return ddl.SQL(d, table)
}

// ErrSchemaTooNew is returned by Migrate when the database records a
// schema version newer than this package knows.
var ErrSchemaTooNew = errors.New("inbox: database schema is newer than this package")

// Migrate creates or upgrades the inbox table. It applies the embedded
// migrations that <table>_migrations does not record yet, on a connection
// of its own and never in a caller's transaction; it is idempotent, and
// concurrent calls from several processes apply each migration once
// (Postgres: an advisory lock, MySQL: GET_LOCK, SQLite: BEGIN IMMEDIATE),
// however each spells the table's name.
func (in *Inbox) Migrate(ctx context.Context) error {
	return ddl.Migrate(ctx, in.db.DB, in.t, in.now)
}
