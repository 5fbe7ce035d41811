package inbox

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
// NNN_description.up.sql, written for DefaultTable so that goose,
// golang-migrate or atlas can apply them as they are; Migrate and Schema
// put the configured name in its place.
//
//go:embed migrations/*/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func migrationsFor(d Dialect) ([]migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("inbox: no migrations for dialect %q: %w", d, err)
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
			return nil, fmt.Errorf("inbox: migration file %s has no version prefix", name)
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

// defaultNameRE matches the default table name in the migrations, with a
// suffix that makes an index name.
var defaultNameRE = regexp.MustCompile(`\b` + DefaultTable + `(_[A-Za-z0-9_]+)?\b`)

func (t table) rename(sql string) string {
	return defaultNameRE.ReplaceAllStringFunc(sql, func(m string) string {
		if m == DefaultTable {
			return t.quoted
		}
		return t.d.quote(t.name + strings.TrimPrefix(m, DefaultTable))
	})
}

// statements splits a migration into statements ending with a line that
// ends in ';', dropping comment lines.
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

// Schema returns the SQL that creates the inbox table named table (""
// for DefaultTable) in dialect d: what Migrate applies, for review or for
// another migration tool.
func Schema(d Dialect, table string) (string, error) {
	dd, ok := dialects[d]
	if !ok {
		return "", fmt.Errorf("inbox: unknown dialect %q", d)
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

// ErrSchemaTooNew is returned by Migrate when the database records a
// schema version newer than this package knows.
var ErrSchemaTooNew = errors.New("inbox: database schema is newer than this package")

// Migrate creates or upgrades the inbox table. It applies the embedded
// migrations that <table>_migrations does not record yet, on a connection
// of its own and never in a caller's transaction; it is idempotent, and
// concurrent calls from several processes apply each migration once
// (Postgres: an advisory lock, MySQL: GET_LOCK, SQLite: BEGIN IMMEDIATE).
func (in *Inbox) Migrate(ctx context.Context) error {
	ms, err := migrationsFor(in.d.name)
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	conn, err := in.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("inbox: migrate: connect: %w", err)
	}
	defer conn.Close()
	migTable := in.t.migrations()
	key := "inbox_migrate:" + string(in.d.name) + ":" + in.t.qualified()
	return in.d.lock(ctx, conn, key, func(q querier) error {
		if _, err := q.ExecContext(ctx, fmt.Sprintf(in.d.migrationsDDL, migTable)); err != nil {
			return fmt.Errorf("inbox: migrate: create %s: %w", migTable, err)
		}
		var current int
		if err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+migTable).Scan(&current); err != nil {
			return fmt.Errorf("inbox: migrate: read version: %w", err)
		}
		if current > latest {
			return fmt.Errorf("%w: table %s is at schema version %d, this package knows up to %d", ErrSchemaTooNew, in.t.qualified(), current, latest)
		}
		for _, m := range ms {
			if m.version <= current {
				continue
			}
			for _, stmt := range statements(m.sql) {
				if _, err := q.ExecContext(ctx, in.t.rename(stmt)); err != nil {
					return fmt.Errorf("inbox: migrate: %s: %w", m.name, err)
				}
			}
			insert := fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%s, %s, %s)",
				migTable, in.d.placeholder(1), in.d.placeholder(2), in.d.placeholder(3))
			if _, err := q.ExecContext(ctx, insert, m.version, m.name, in.d.timeArg(in.now())); err != nil {
				return fmt.Errorf("inbox: migrate: record %s: %w", m.name, err)
			}
		}
		return nil
	})
}
