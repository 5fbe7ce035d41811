package sqlschema

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// Config describes one package's table and its migrations.
type Config struct {
	// Package starts every error message: "sqlstore" or "inbox".
	Package string
	// LockName starts the migration locks' names: "outbox_migrate".
	LockName string
	// DefaultTable is the table's name unless configured otherwise, and
	// the name the migration files use.
	DefaultTable string
	// MaxTableNameLength is the longest table name (without its schema)
	// accepted.
	MaxTableNameLength int
	// Files holds the migrations, one directory per dialect, one file per
	// version: migrations/<dialect>/NNN_description.up.sql.
	Files fs.FS
	// ErrTooNew is what Migrate wraps when the database records a
	// version newer than Files know.
	ErrTooNew error
	// TableSuffixes are the suffixes that make, from the default name in
	// the migration files, the names of the package's other tables (not
	// indexes): Rename puts them in the table's schema.
	TableSuffixes []string
}

// Schema validates table names and applies migrations for one package.
type Schema struct {
	c             Config
	p             prefix
	defaultNameRE *regexp.Regexp
	alterRE       *regexp.Regexp
}

// New returns the Schema c describes.
func New(c Config) *Schema {
	return &Schema{
		c: c,
		p: prefix{errors: c.Package, locks: c.LockName},
		// The default table name, with an optional suffix that makes an
		// index, constraint or trigger name, and "()" after a function's
		// name.
		defaultNameRE: regexp.MustCompile(`(DROP INDEX IF EXISTS )?\b` + c.DefaultTable + `(_[A-Za-z0-9_]+)?\b(\(\))?`),
		alterRE:       regexp.MustCompile(`(?is)^\s*ALTER\s+TABLE\s+` + c.DefaultTable + `(_[a-z]+)?\s+(.*)$`),
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Table is a validated, optionally schema-qualified table name.
type Table struct {
	Schema string // "" unless qualified
	Name   string
	Quoted string // ready to use in SQL
	d      *dialect
	s      *Schema
}

// Table validates name ("" for the default table) in dialect d: one or
// two plain SQL identifiers (letters, digits, underscores; not starting
// with a digit) joined by a dot. Nothing else ever reaches SQL text, and
// the quoted form keeps reserved words usable. Its errors wrap
// outbox.ErrInvalidConfig.
func (s *Schema) Table(d Dialect, name string) (Table, error) {
	dd, ok := dialects[d]
	if !ok {
		return Table{}, fmt.Errorf("%s: unknown dialect %q (want %q, %q or %q): %w", s.p.errors, d, Postgres, MySQL, SQLite, outbox.ErrInvalidConfig)
	}
	if name == "" {
		name = s.c.DefaultTable
	}
	bad := func(why string) (Table, error) {
		return Table{}, fmt.Errorf("%s: table name %q %s: %w", s.p.errors, name, why, outbox.ErrInvalidConfig)
	}
	t := Table{Name: name, d: dd, s: s}
	if schema, rest, ok := strings.Cut(name, "."); ok {
		if !dd.schemas {
			return bad(fmt.Sprintf("is schema-qualified, which %s does not support", d))
		}
		if !identRE.MatchString(schema) || len(schema) > 63 {
			return bad("has a schema that is not a plain SQL identifier (letters, digits and underscores, at most 63)")
		}
		t.Schema, t.Name = schema, rest
	}
	if !identRE.MatchString(t.Name) {
		return bad("is not a plain SQL identifier (letters, digits and underscores, not starting with a digit, optionally schema.table)")
	}
	if len(t.Name) > s.c.MaxTableNameLength {
		return bad(fmt.Sprintf("is longer than %d characters", s.c.MaxTableNameLength))
	}
	t.Quoted = t.inSchema(t.Name)
	return t, nil
}

// inSchema quotes name, in the table's schema.
func (t Table) inSchema(name string) string {
	q := t.d.Quote(name)
	if t.Schema != "" {
		q = t.d.Quote(t.Schema) + "." + q
	}
	return q
}

// Dialect returns the dialect the table was validated for.
func (t Table) Dialect() Dialect { return t.d.Dialect }

// Syntax returns how the table's dialect writes statements.
func (t Table) Syntax() *Syntax { return &t.d.Syntax }

// Qualified returns the name as configured: schema.table or table.
func (t Table) Qualified() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// MigrationsTable returns the quoted name of the table that records
// applied migrations: the table's name with "_migrations" appended, in
// its schema.
func (t Table) MigrationsTable() string { return t.inSchema(t.Name + "_migrations") }

// MigrationsDDL returns the statement that creates MigrationsTable.
func (t Table) MigrationsDDL() string { return fmt.Sprintf(t.d.migrationsDDL, t.MigrationsTable()) }

// Rename puts t's table in place of the default name in a migration.
// Derived names keep the suffix; a function (a name followed by "()") and
// the index of a DROP INDEX IF EXISTS go to the table's schema, as the
// table's indexes and triggers do by themselves.
func (t Table) Rename(sql string) string {
	const drop = "DROP INDEX IF EXISTS "
	return t.s.defaultNameRE.ReplaceAllStringFunc(sql, func(m string) string {
		m, dropIndex := strings.CutPrefix(m, drop)
		if m == t.s.c.DefaultTable {
			return t.Quoted
		}
		name, call := strings.CutSuffix(m, "()")
		suffix := strings.TrimPrefix(name, t.s.c.DefaultTable)
		name = t.Name + suffix
		switch {
		case call:
			return t.inSchema(name) + "()"
		case slices.Contains(t.s.c.TableSuffixes, suffix):
			return t.inSchema(name)
		case dropIndex:
			return drop + t.inSchema(name)
		}
		return t.d.Quote(name)
	})
}

// Migration is one embedded migration file.
type Migration struct {
	Version int
	Name    string // file name
	SQL     string
}

// Migrations returns dialect d's migrations in version order.
func (s *Schema) Migrations(d Dialect) ([]Migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(s.c.Files, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: no migrations for dialect %q: %w", s.p.errors, d, err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".up.sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("%s: migration file %s has no version prefix", s.p.errors, name)
		}
		b, err := fs.ReadFile(s.c.Files, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// Statements splits a migration into statements: lines that are only a
// comment are dropped, and a statement ends with a line ending in ';'.
// The migrations are written for it (no ';' inside literals), and running
// statements one by one needs no multi-statement support from the driver.
func Statements(sql string) []string {
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

// SQL returns the SQL that creates the table name ("" for the default
// table) in dialect d, every migration of the dialect in order: what
// Migrate applies.
func (s *Schema) SQL(d Dialect, name string) (string, error) {
	t, err := s.Table(d, name)
	if err != nil {
		return "", err
	}
	ms, err := s.Migrations(d)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, m := range ms {
		for _, stmt := range Statements(m.SQL) {
			b.WriteString(t.Rename(stmt))
			b.WriteString(";\n\n")
		}
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// Migrate applies to t the migrations that its migrations table does not
// record yet, on a connection of its own from db, holding t's migration
// lock (see Locked); now is the clock of the applied_at column. On
// Postgres and SQLite one call applies in one transaction. MySQL commits
// DDL implicitly, so Migrate checks information_schema before each
// column or index an ALTER TABLE adds and leaves out those that exist,
// and a call after an interrupted one completes the migration. A
// database at a newer version than the files know is an error wrapping
// Config.ErrTooNew.
func (s *Schema) Migrate(ctx context.Context, db *sql.DB, t Table, now func() time.Time) error {
	ms, err := s.Migrations(t.d.Dialect)
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].Version
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: migrate: connect: %w", s.p.errors, err)
	}
	defer conn.Close()

	migTable := t.MigrationsTable()
	return s.Locked(ctx, conn, t, func(q Querier) error {
		if _, err := q.ExecContext(ctx, t.MigrationsDDL()); err != nil {
			return fmt.Errorf("%s: migrate: create %s: %w", s.p.errors, migTable, err)
		}
		var current int
		if err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+migTable).Scan(&current); err != nil {
			return fmt.Errorf("%s: migrate: read version: %w", s.p.errors, err)
		}
		if current > latest {
			return fmt.Errorf("%w: table %s is at schema version %d, this package knows up to %d; upgrade github.com/eventsync/outbox",
				s.c.ErrTooNew, t.Qualified(), current, latest)
		}
		for _, m := range ms {
			if m.Version <= current {
				continue
			}
			for _, stmt := range Statements(m.SQL) {
				text := t.Rename(stmt)
				if t.d.Dialect == MySQL {
					var err error
					if text, err = t.mysqlRemaining(ctx, q, stmt); err != nil {
						return fmt.Errorf("%s: migrate: %s: %w", s.p.errors, m.Name, err)
					}
					if text == "" {
						continue // applied by an earlier, interrupted call
					}
				}
				if _, err := q.ExecContext(ctx, text); err != nil {
					return fmt.Errorf("%s: migrate: %s: %w", s.p.errors, m.Name, err)
				}
			}
			insert := fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%s, %s, %s)",
				migTable, t.d.Placeholder(1), t.d.Placeholder(2), t.d.Placeholder(3))
			if _, err := q.ExecContext(ctx, insert, m.Version, m.Name, t.d.Time(now())); err != nil {
				return fmt.Errorf("%s: migrate: record %s: %w", s.p.errors, m.Name, err)
			}
		}
		return nil
	})
}

// Locked runs fn on conn holding t's migration lock, which serializes
// Migrate (and whatever else takes it) across processes: Postgres an
// advisory lock in a transaction fn's statements run in, MySQL GET_LOCK,
// SQLite BEGIN IMMEDIATE.
func (s *Schema) Locked(ctx context.Context, conn *sql.Conn, t Table, fn func(q Querier) error) error {
	keys, err := s.lockKeys(ctx, conn, t)
	if err != nil {
		return err
	}
	return t.d.lock(ctx, s.p, conn, keys, fn)
}

// lockKeys returns the names of the locks Locked holds: the table's
// resolved name (schema.table, the schema being Postgres's
// current_schema() or MySQL's DATABASE() when the name is unqualified),
// so that every spelling of one table takes the same lock, and then the
// name as configured when that differs, which is what earlier versions
// lock, so that they are excluded too. Every caller takes them in this
// order.
func (s *Schema) lockKeys(ctx context.Context, conn *sql.Conn, t Table) ([]string, error) {
	prefix := s.c.LockName + ":" + string(t.d.Dialect) + ":"
	configured := prefix + t.Qualified()
	if t.Schema != "" || t.d.Dialect == SQLite {
		return []string{configured}, nil
	}
	q := "SELECT current_schema()"
	if t.d.Dialect == MySQL {
		q = "SELECT DATABASE()"
	}
	var schema sql.NullString
	if err := conn.QueryRowContext(ctx, q).Scan(&schema); err != nil {
		return nil, fmt.Errorf("%s: migrate: resolve schema: %w", s.p.errors, err)
	}
	if !schema.Valid || schema.String == "" {
		// No current schema: creating the table will fail anyway.
		return []string{configured}, nil
	}
	return []string{prefix + schema.String + "." + t.Name, configured}, nil
}

// AlterClause is one comma-separated clause of an ALTER TABLE.
type AlterClause struct {
	Text string
	Kind string // "column", "index" or "drop index"; "" for a clause Migrate cannot check
	Name string // the column's or index's name, as in the migration file
}

var (
	addColumnRE = regexp.MustCompile(`(?is)^ADD\s+COLUMN\s+([A-Za-z_][A-Za-z0-9_]*)\s`)
	addIndexRE  = regexp.MustCompile(`(?is)^ADD\s+(?:UNIQUE\s+)?(?:KEY|INDEX)\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
	dropIndexRE = regexp.MustCompile(`(?is)^DROP\s+(?:KEY|INDEX)\s+([A-Za-z_][A-Za-z0-9_]*)$`)
)

// AlterClauses splits a migration's ALTER TABLE of the default table, or
// of one of its siblings (the default name with a suffix), into its
// clauses (at commas outside parentheses); ok is false for any other
// statement.
func (s *Schema) AlterClauses(stmt string) (clauses []AlterClause, ok bool) {
	m := s.alterRE.FindStringSubmatch(stmt)
	if m == nil {
		return nil, false
	}
	var parts []string
	depth, start := 0, 0
	body := m[2]
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
		c := AlterClause{Text: strings.TrimSpace(p)}
		if m := addColumnRE.FindStringSubmatch(c.Text); m != nil {
			c.Kind, c.Name = "column", m[1]
		} else if m := addIndexRE.FindStringSubmatch(c.Text); m != nil {
			c.Kind, c.Name = "index", m[1]
		} else if m := dropIndexRE.FindStringSubmatch(c.Text); m != nil {
			c.Kind, c.Name = "drop index", m[1]
		}
		clauses = append(clauses, c)
	}
	return clauses, true
}

// mysqlRemaining returns the MySQL statement stmt (from a migration file,
// before renaming) as it must run now: an ALTER TABLE loses the ADD
// COLUMN and ADD KEY clauses whose column or index already exists and
// the DROP KEY clauses whose index does not, and is "" when nothing
// remains. Any other statement is returned renamed as it is (CREATE TABLE
// IF NOT EXISTS re-runs by itself). MySQL 8 has no ADD COLUMN IF NOT
// EXISTS nor DROP INDEX IF EXISTS, hence information_schema.
func (t Table) mysqlRemaining(ctx context.Context, q Querier, stmt string) (string, error) {
	clauses, ok := t.s.AlterClauses(stmt)
	if !ok {
		return t.Rename(stmt), nil
	}
	suffix := t.s.alterRE.FindStringSubmatch(stmt)[1] // "" for the table itself
	target, quoted := t.Name+suffix, t.Quoted
	if suffix != "" {
		quoted = t.Sibling(suffix)
	}
	schema := "DATABASE()"
	var args []any
	if t.Schema != "" {
		schema = "?"
		args = append(args, t.Schema)
	}
	var keep []string
	for _, c := range clauses {
		var check, name string
		switch c.Kind {
		case "column":
			check, name = "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "+schema+" AND TABLE_NAME = ? AND COLUMN_NAME = ?", c.Name
		case "index", "drop index":
			check, name = "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "+schema+" AND TABLE_NAME = ? AND INDEX_NAME = ?",
				t.Name+strings.TrimPrefix(c.Name, t.s.c.DefaultTable)
		default:
			return "", fmt.Errorf("cannot tell whether %q was already applied", c.Text)
		}
		var n int
		if err := q.QueryRowContext(ctx, check, append(args, target, name)...).Scan(&n); err != nil {
			return "", fmt.Errorf("check %s %s: %w", c.Kind, name, err)
		}
		// What to add is kept while it is missing; what to drop, while it
		// is there.
		if (n == 0) == (c.Kind != "drop index") {
			keep = append(keep, t.Rename(c.Text))
		}
	}
	if len(keep) == 0 {
		return "", nil
	}
	return "ALTER TABLE " + quoted + "\n    " + strings.Join(keep, ",\n    "), nil
}

// Sibling returns the quoted name, in the table's schema, of the table
// whose name is t's with suffix appended (one of Config.TableSuffixes).
func (t Table) Sibling(suffix string) string { return t.inSchema(t.Name + suffix) }
