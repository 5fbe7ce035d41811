package sqlstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
)

func mockDB(t *testing.T, driverName string) *sqlx.DB {
	t.Helper()
	db, _, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return sqlx.NewDb(db, driverName)
}

func TestDialectDetection(t *testing.T) {
	for driverName, want := range map[string]Dialect{
		"pgx": Postgres, "pgx/v5": Postgres, "postgres": Postgres,
		"mysql":  MySQL,
		"sqlite": SQLite, "sqlite3": SQLite,
	} {
		s, err := New(mockDB(t, driverName))
		if err != nil || s.Dialect() != want {
			t.Errorf("driver %q: dialect %v, %v; want %s", driverName, s, err, want)
		}
	}
	if _, err := New(mockDB(t, "oracle")); !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "WithDialect") {
		t.Errorf("unknown driver: %v, want an error suggesting WithDialect", err)
	}
	if s, err := New(mockDB(t, "oracle"), WithDialect(MySQL)); err != nil || s.Dialect() != MySQL {
		t.Errorf("WithDialect(MySQL) on an unknown driver: %v, %v", s, err)
	}
	if _, err := New(mockDB(t, "pgx"), WithDialect("oracle")); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("WithDialect(oracle): %v, want ErrInvalidConfig", err)
	}
	if _, err := New(nil); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("New(nil): %v, want ErrInvalidConfig", err)
	}
}

func TestTableNames(t *testing.T) {
	long := strings.Repeat("a", MaxTableNameLength)
	valid := []string{"", "events", "Outbox_2", "_x", "select", long}
	invalid := []string{
		"1abc", "a-b", "a b", " a", "a;DROP TABLE users", `a"b`, "a`b", "a'b", "a.b.c", ".a", "a.", "ä",
		long + "a", "a\x00", "a--", "a/*", strings.Repeat("s", 64) + ".t",
	}
	for _, d := range allDialects {
		db := mockDB(t, "x")
		for _, name := range valid {
			s, err := New(db, WithDialect(d), WithTable(name))
			if err != nil {
				t.Errorf("%s: WithTable(%q): %v", d, name, err)
				continue
			}
			if name == "" && s.Table() != DefaultTable {
				t.Errorf("%s: default table %q", d, s.Table())
			}
		}
		for _, name := range invalid {
			if _, err := New(db, WithDialect(d), WithTable(name)); !errors.Is(err, outbox.ErrInvalidConfig) {
				t.Errorf("%s: WithTable(%q): %v, want ErrInvalidConfig", d, name, err)
			}
		}
		_, err := New(db, WithDialect(d), WithTable("app.events"))
		if (err == nil) != (d != SQLite) {
			t.Errorf("%s: WithTable(app.events): %v", d, err)
		}
	}
}

func TestSchema(t *testing.T) {
	pg, err := Schema(Postgres, "app.events")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CREATE TABLE IF NOT EXISTS "app"."events" (`,
		`CREATE INDEX IF NOT EXISTS "events_pending_idx"` + "\n    ON \"app\".\"events\" (seq)\n    WHERE synced_at IS NULL AND dead_at IS NULL;",
		`CREATE INDEX IF NOT EXISTS "events_aggregate_idx"`,
	} {
		if !strings.Contains(pg, want) {
			t.Errorf("Postgres schema lacks %q:\n%s", want, pg)
		}
	}
	if strings.Contains(pg, "outbox_events") || strings.Contains(pg, "--") {
		t.Errorf("Postgres schema still names the default table or has comments:\n%s", pg)
	}
	my, err := Schema(MySQL, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CREATE TABLE IF NOT EXISTS `outbox_events` (", "KEY `outbox_events_pending_idx` (synced_at, dead_at, seq)"} {
		if !strings.Contains(my, want) {
			t.Errorf("MySQL schema lacks %q:\n%s", want, my)
		}
	}
	if _, err := Schema(SQLite, "x;y"); err == nil {
		t.Error("Schema accepted a bad table name")
	}
	if _, err := Schema("oracle", ""); err == nil {
		t.Error("Schema accepted an unknown dialect")
	}
}

func TestStatements(t *testing.T) {
	got := sqlschema.Statements("-- +goose Up\n-- a comment\nCREATE TABLE t (\n  a INT\n);\n\nCREATE INDEX i ON t (a);\nSELECT 1")
	want := []string{"CREATE TABLE t (\n  a INT\n)", "CREATE INDEX i ON t (a)", "SELECT 1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("statements = %q, want %q", got, want)
	}
}
