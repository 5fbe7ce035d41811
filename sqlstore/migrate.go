package sqlstore

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// The schema, one directory per dialect, one file per version, named
// NNN_description.up.sql. The files name the table outbox_events
// literally so that goose, golang-migrate or atlas can apply them as they
// are; Migrate and Schema put the configured name in its place.
//
//go:embed migrations/*/*.sql
var migrationFiles embed.FS

// ddl validates table names and applies migrationFiles.
var ddl = sqlschema.New(sqlschema.Config{
	Package:            "sqlstore",
	LockName:           "outbox_migrate",
	DefaultTable:       DefaultTable,
	MaxTableNameLength: MaxTableNameLength,
	Files:              migrationFiles,
	ErrTooNew:          ErrSchemaTooNew,
	TableSuffixes:      []string{partitionsSuffix, relaysSuffix, deliveriesSuffix, deliveryViewSuffix},
})

// deliveryViewSuffix names the view of every event with its delivery
// (Postgres, migration 008): <table>_delivery.
const deliveryViewSuffix = "_delivery"

// Schema returns the SQL that creates the outbox table named table (""
// for DefaultTable) in dialect d, every migration in order: what Migrate
// applies, for review or for another migration tool.
func Schema(d Dialect, table string) (string, error) {
	return ddl.SQL(d, table)
}

// Migrate creates or upgrades the outbox table to the schema this version
// of the package expects. It applies the embedded migrations that the
// table <table>_migrations does not yet record, on a connection of its own
// and never inside a caller's transaction; it is idempotent, and
// concurrent calls from several processes apply each migration once
// (Postgres: an advisory lock, MySQL: GET_LOCK, SQLite: BEGIN IMMEDIATE),
// however each spells the table's name ("t" or "schema.t" of the current
// schema lock alike).
//
// On Postgres and SQLite one call applies in one transaction, whole or not
// at all. MySQL commits DDL implicitly, so a crash or a lost connection
// can leave a migration's ALTER TABLE applied but its version unrecorded;
// Migrate therefore checks information_schema before each column or index
// an ALTER TABLE adds and leaves out those that exist, so the next call
// completes the migration (on MySQL 8 and MariaDB alike).
//
// A database recorded at a newer version than this package knows is an
// error: upgrade the package rather than run old code on a new schema.
//
// With WithTimePartitions, Migrate creates a table that does not exist
// partitioned by save time, at the schema of migration 8 (recorded as
// migrations 1 to 8), then applies later migrations as usual and creates
// the partitions of the runway (MaintainTimePartitions; should that fail
// while partitions cover the clock already, Migrate still succeeds and
// the relays extend the runway).
func (s *Store) Migrate(ctx context.Context) error {
	if s.tp != nil {
		if err := s.createTimePartitioned(ctx); err != nil {
			return err
		}
	}
	if err := ddl.Migrate(ctx, s.db.DB, s.t, s.now); err != nil {
		return err
	}
	if s.tp != nil {
		// A partition change that waited too long for its locks is no
		// reason to fail a service's start while partitions cover now:
		// the relays extend the runway.
		if _, err := s.MaintainTimePartitions(ctx); err != nil {
			if st, serr := s.TimePartitions(ctx); serr != nil || st.Runway <= 0 {
				return err
			}
		}
	}
	return nil
}

// ErrSchemaTooNew is returned by Migrate when the database records a
// schema version newer than this package knows.
var ErrSchemaTooNew = errors.New("sqlstore: database schema is newer than this package")

// Drop removes what Migrate created: the outbox table with its indexes
// and trigger, its migrations table, its partitions and relays tables
// (<table>_partitions, <table>_relays) and, on Postgres, its deliveries
// table and view (<table>_deliveries, <table>_delivery) and the table's
// <table>_notify() trigger function (which DROP TABLE leaves behind). Its
// events are lost. It is meant for tests and for tearing down a
// deployment; it takes Migrate's lock, and dropping what does not exist is
// not an error. Tables and functions of other names are not touched.
func (s *Store) Drop(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: drop: connect: %w", err)
	}
	defer conn.Close()
	var stmts []string
	if s.Dialect() != MySQL {
		stmts = append(stmts, "DROP VIEW IF EXISTS "+s.t.Sibling(deliveryViewSuffix)) // before the tables it reads
	}
	stmts = append(append(stmts,
		"DROP TABLE IF EXISTS "+s.t.Quoted,
		"DROP TABLE IF EXISTS "+s.t.Sibling(partitionsSuffix),
		"DROP TABLE IF EXISTS "+s.t.Sibling(relaysSuffix),
		"DROP TABLE IF EXISTS "+s.t.Sibling(deliveriesSuffix),
		"DROP TABLE IF EXISTS "+s.t.MigrationsTable(),
	), s.d.leftBehind(s.t)...)
	return ddl.Locked(ctx, conn, s.t, func(q sqlschema.Querier) error {
		for _, stmt := range stmts {
			if _, err := q.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("sqlstore: drop: %w", err)
			}
		}
		return nil
	})
}
