package sqlstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The schema, one directory per dialect, one file per version, named
// NNN_description.up.sql. The files name the table outbox_events
// literally so that goose, golang-migrate or atlas can apply them as they
// are; Migrate and Schema put the configured name in its place.
//
//go:embed migrations/*/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string // file name
	sql     string
}

// migrationsFor returns the dialect's migrations in version order.
func migrationsFor(d Dialect) ([]migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: no migrations for dialect %q: %w", d, err)
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".up.sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("sqlstore: migration file %s has no version prefix", name)
		}
		b, err := fs.ReadFile(migrationFiles, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// defaultNameRE matches the default table name in migration files, with
// an optional suffix that makes an index, constraint or trigger name, and
// "()" after a function's name.
var defaultNameRE = regexp.MustCompile(`\b` + DefaultTable + `(_[A-Za-z0-9_]+)?\b(\(\))?`)

// rename puts t's table in place of the default name in a migration.
// Derived names keep the suffix; a function (a name followed by "()") goes
// to the table's schema, as the table's indexes and triggers do by
// themselves.
func (t table) rename(sql string) string {
	return defaultNameRE.ReplaceAllStringFunc(sql, func(m string) string {
		if m == DefaultTable {
			return t.quoted
		}
		name, call := strings.CutSuffix(m, "()")
		q := t.d.quote(t.name + strings.TrimPrefix(name, DefaultTable))
		if call {
			if t.schema != "" {
				q = t.d.quote(t.schema) + "." + q
			}
			q += "()"
		}
		return q
	})
}

// statements splits a migration into statements: lines that are only a
// comment are dropped, and a statement ends with a line ending in ';'.
// The migrations are written for it (no ';' inside literals), and running
// statements one by one needs no multi-statement support from the driver.
func statements(sql string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(sql) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Schema returns the SQL that creates the outbox table named table (""
// for DefaultTable) in dialect d, every migration in order: what Migrate
// applies, for review or for another migration tool.
func Schema(d Dialect, table string) (string, error) {
	dd, err := lookupDialect(d)
	if err != nil {
		return "", err
	}
	t, err := newTable(dd, table)
	if err != nil {
		return "", err
	}
	ms, err := migrationsFor(d)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, m := range ms {
		for _, stmt := range statements(m.sql) {
			b.WriteString(t.rename(stmt))
			b.WriteString(";\n\n")
		}
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// Migrate creates or upgrades the outbox table to the schema this version
// of the package expects. It applies the embedded migrations that the
// table <table>_migrations does not yet record, on a connection of its own
// and never inside a caller's transaction; it is idempotent, and
// concurrent calls from several processes apply each migration once
// (Postgres: an advisory lock, MySQL: GET_LOCK, SQLite: BEGIN IMMEDIATE).
// On Postgres and SQLite a migration applies whole or not at all; MySQL
// commits DDL implicitly, so its migrations are written to be re-runnable.
// A database recorded at a newer version than this package knows is an
// error: upgrade the package rather than run old code on a new schema.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrationsFor(s.d.name)
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: connect: %w", err)
	}
	defer conn.Close()

	migTable := s.t.migrations()
	key := "outbox_migrate:" + string(s.d.name) + ":" + s.t.qualified()
	return s.d.lockMigrations(ctx, conn, key, func(q querier) error {
		if _, err := q.ExecContext(ctx, fmt.Sprintf(s.d.migrationsDDL, migTable)); err != nil {
			return fmt.Errorf("sqlstore: migrate: create %s: %w", migTable, err)
		}
		var current int
		if err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+migTable).Scan(&current); err != nil {
			return fmt.Errorf("sqlstore: migrate: read version: %w", err)
		}
		if current > latest {
			return fmt.Errorf("%w: table %s is at schema version %d, this package knows up to %d; upgrade github.com/eventsync/outbox",
				ErrSchemaTooNew, s.t.qualified(), current, latest)
		}
		for _, m := range ms {
			if m.version <= current {
				continue
			}
			for _, stmt := range statements(m.sql) {
				if _, err := q.ExecContext(ctx, s.t.rename(stmt)); err != nil {
					return fmt.Errorf("sqlstore: migrate: %s: %w", m.name, err)
				}
			}
			insert := fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%s, %s, %s)",
				migTable, s.d.placeholder(1), s.d.placeholder(2), s.d.placeholder(3))
			if _, err := q.ExecContext(ctx, insert, m.version, m.name, s.d.timeArg(s.now())); err != nil {
				return fmt.Errorf("sqlstore: migrate: record %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// ErrSchemaTooNew is returned by Migrate when the database records a
// schema version newer than this package knows.
var ErrSchemaTooNew = errors.New("sqlstore: database schema is newer than this package")
