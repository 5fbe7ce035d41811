package sqlschema

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/eventsync/outbox"
)

var errTooNew = errors.New("test: too new")

var testSchema = New(Config{
	Package:            "test",
	LockName:           "test_migrate",
	DefaultTable:       "things",
	MaxTableNameLength: 20,
	Files: fstest.MapFS{
		"migrations/postgres/002_b.up.sql": {Data: []byte("CREATE INDEX things_b ON things (b);\nCREATE FUNCTION things_notify() RETURNS trigger AS 'x';\n")},
		"migrations/postgres/001_a.up.sql": {Data: []byte("-- a\nCREATE TABLE things (a INT);\n")},
		"migrations/postgres/README":       {Data: []byte("not a migration")},
	},
	ErrTooNew: errTooNew,
})

func TestTable(t *testing.T) {
	for _, c := range []struct {
		d                                   Dialect
		name, quoted, qualified, migrations string
	}{
		{Postgres, "", `"things"`, "things", `"things_migrations"`},
		{Postgres, "app.t", `"app"."t"`, "app.t", `"app"."t_migrations"`},
		{MySQL, "app.t", "`app`.`t`", "app.t", "`app`.`t_migrations`"},
		{SQLite, "t", `"t"`, "t", `"t_migrations"`},
	} {
		tb, err := testSchema.Table(c.d, c.name)
		if err != nil {
			t.Fatalf("%s %q: %v", c.d, c.name, err)
		}
		if tb.Quoted != c.quoted || tb.Qualified() != c.qualified || tb.MigrationsTable() != c.migrations {
			t.Errorf("%s %q: %s, %s, %s", c.d, c.name, tb.Quoted, tb.Qualified(), tb.MigrationsTable())
		}
	}
	for _, c := range []struct {
		d    Dialect
		name string
	}{
		{SQLite, "app.t"}, {Postgres, "1t"}, {Postgres, "a.b.c"}, {Postgres, strings.Repeat("t", 21)}, {"oracle", "t"},
	} {
		_, err := testSchema.Table(c.d, c.name)
		if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "test: ") {
			t.Errorf("%s %q: error %v", c.d, c.name, err)
		}
	}
}

func TestSQLRenames(t *testing.T) {
	tb, err := testSchema.Table(Postgres, "app.t")
	if err != nil {
		t.Fatal(err)
	}
	got, err := testSchema.SQL(Postgres, "app.t")
	if err != nil {
		t.Fatal(err)
	}
	want := `CREATE TABLE "app"."t" (a INT);

CREATE INDEX "t_b" ON "app"."t" (b);

CREATE FUNCTION "app"."t_notify"() RETURNS trigger AS 'x';
`
	if got != want {
		t.Fatalf("SQL =\n%s\nwant\n%s", got, want)
	}
	// An index is dropped in the table's schema, not the search path's.
	if got, want := tb.Rename("DROP INDEX IF EXISTS things_b;"), `DROP INDEX IF EXISTS "app"."t_b";`; got != want {
		t.Fatalf("Rename = %s, want %s", got, want)
	}
	if tb, _ := testSchema.Table(Postgres, "t"); tb.Rename("DROP INDEX IF EXISTS things_b;") != `DROP INDEX IF EXISTS "t_b";` {
		t.Fatalf("Rename without a schema = %s", tb.Rename("DROP INDEX IF EXISTS things_b;"))
	}
}

func TestAlterClauses(t *testing.T) {
	cs, ok := testSchema.AlterClauses("ALTER TABLE things\n  ADD COLUMN b INT NOT NULL,\n  ADD KEY things_b (b, DECIMAL(3,1)),\n  DROP COLUMN c,\n  DROP KEY things_d")
	if !ok || len(cs) != 4 {
		t.Fatalf("clauses %+v, %v", cs, ok)
	}
	if cs[0].Kind != "column" || cs[0].Name != "b" || cs[1].Kind != "index" || cs[1].Name != "things_b" || cs[2].Kind != "" ||
		cs[3].Kind != "drop index" || cs[3].Name != "things_d" {
		t.Fatalf("clauses %+v", cs)
	}
	if _, ok := testSchema.AlterClauses("CREATE TABLE things (a INT)"); ok {
		t.Fatal("CREATE TABLE taken for an ALTER TABLE")
	}
}
