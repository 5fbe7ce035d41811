package sqlstore

import (
	"context"
	"database/sql"
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
	keys, err := s.lockKeys(ctx, conn)
	if err != nil {
		return err
	}
	return s.d.lockMigrations(ctx, conn, keys, func(q querier) error {
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
				text := s.t.rename(stmt)
				if s.d.name == MySQL {
					var err error
					if text, err = s.mysqlRemaining(ctx, q, stmt); err != nil {
						return fmt.Errorf("sqlstore: migrate: %s: %w", m.name, err)
					}
					if text == "" {
						continue // applied by an earlier, interrupted call
					}
				}
				if _, err := q.ExecContext(ctx, text); err != nil {
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

// lockKeys returns the names of the locks Migrate and Drop hold: the
// table's resolved name (schema.table, the schema being Postgres's
// current_schema() or MySQL's DATABASE() when the name is unqualified), so
// that every spelling of one table takes the same lock, and then the name
// as configured when that differs, which is what earlier versions of this
// package lock, so that they are excluded too. Every caller takes them in
// this order.
func (s *Store) lockKeys(ctx context.Context, conn *sql.Conn) ([]string, error) {
	prefix := "outbox_migrate:" + string(s.d.name) + ":"
	configured := prefix + s.t.qualified()
	if s.t.schema != "" || s.d.name == SQLite {
		return []string{configured}, nil
	}
	q := "SELECT current_schema()"
	if s.d.name == MySQL {
		q = "SELECT DATABASE()"
	}
	var schema sql.NullString
	if err := conn.QueryRowContext(ctx, q).Scan(&schema); err != nil {
		return nil, fmt.Errorf("sqlstore: migrate: resolve schema: %w", err)
	}
	if !schema.Valid || schema.String == "" {
		// No current schema: creating the table will fail anyway.
		return []string{configured}, nil
	}
	return []string{prefix + schema.String + "." + s.t.name, configured}, nil
}

// alterClause is one comma-separated clause of an ALTER TABLE.
type alterClause struct {
	text string
	kind string // "column" or "index"; "" for a clause Migrate cannot check
	name string // the column's or index's name, as in the migration file
}

var (
	alterRE     = regexp.MustCompile(`(?is)^\s*ALTER\s+TABLE\s+` + DefaultTable + `\s+(.*)$`)
	addColumnRE = regexp.MustCompile(`(?is)^ADD\s+COLUMN\s+([A-Za-z_][A-Za-z0-9_]*)\s`)
	addIndexRE  = regexp.MustCompile(`(?is)^ADD\s+(?:UNIQUE\s+)?(?:KEY|INDEX)\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
)

// alterClauses splits a migration's ALTER TABLE outbox_events statement
// into its clauses (at commas outside parentheses); ok is false for any
// other statement.
func alterClauses(stmt string) (clauses []alterClause, ok bool) {
	m := alterRE.FindStringSubmatch(stmt)
	if m == nil {
		return nil, false
	}
	var parts []string
	depth, start := 0, 0
	body := m[1]
	for i, r := range body {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, body[start:i])
				start = i + 1
			}
		}
	}
	parts = append(parts, body[start:])
	for _, p := range parts {
		c := alterClause{text: strings.TrimSpace(p)}
		if m := addColumnRE.FindStringSubmatch(c.text); m != nil {
			c.kind, c.name = "column", m[1]
		} else if m := addIndexRE.FindStringSubmatch(c.text); m != nil {
			c.kind, c.name = "index", m[1]
		}
		clauses = append(clauses, c)
	}
	return clauses, true
}

// mysqlRemaining returns the MySQL statement stmt (from a migration file,
// before renaming) as it must run now: an ALTER TABLE loses the ADD
// COLUMN and ADD KEY clauses whose column or index already exists, and
// is "" when nothing remains. Any other statement is returned renamed as
// it is (CREATE TABLE IF NOT EXISTS re-runs by itself). MySQL 8 has no
// ADD COLUMN IF NOT EXISTS, hence information_schema.
func (s *Store) mysqlRemaining(ctx context.Context, q querier, stmt string) (string, error) {
	clauses, ok := alterClauses(stmt)
	if !ok {
		return s.t.rename(stmt), nil
	}
	schema := "DATABASE()"
	var args []any
	if s.t.schema != "" {
		schema = "?"
		args = append(args, s.t.schema)
	}
	var keep []string
	for _, c := range clauses {
		var check string
		var name string
		switch c.kind {
		case "column":
			check, name = "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "+schema+" AND TABLE_NAME = ? AND COLUMN_NAME = ?", c.name
		case "index":
			check, name = "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "+schema+" AND TABLE_NAME = ? AND INDEX_NAME = ?",
				s.t.name+strings.TrimPrefix(c.name, DefaultTable)
		default:
			return "", fmt.Errorf("cannot tell whether %q was already applied", c.text)
		}
		var n int
		if err := q.QueryRowContext(ctx, check, append(args, s.t.name, name)...).Scan(&n); err != nil {
			return "", fmt.Errorf("check %s %s: %w", c.kind, name, err)
		}
		if n == 0 {
			keep = append(keep, s.t.rename(c.text))
		}
	}
	if len(keep) == 0 {
		return "", nil
	}
	return "ALTER TABLE " + s.t.quoted + "\n    " + strings.Join(keep, ",\n    "), nil
}

// Drop removes what Migrate created: the outbox table with its indexes
// and trigger, its migrations table and, on Postgres, the table's
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
	keys, err := s.lockKeys(ctx, conn)
	if err != nil {
		return err
	}
	stmts := []string{"DROP TABLE IF EXISTS " + s.t.quoted, "DROP TABLE IF EXISTS " + s.t.migrations()}
	if s.d.name == Postgres {
		stmts = append(stmts, "DROP FUNCTION IF EXISTS "+s.t.rename(DefaultTable+"_notify()"))
	}
	return s.d.lockMigrations(ctx, conn, keys, func(q querier) error {
		for _, stmt := range stmts {
			if _, err := q.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("sqlstore: drop: %w", err)
			}
		}
		return nil
	})
}
