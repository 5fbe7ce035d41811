package sqlstore

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// migrationCount returns how many migrations the table records.
func migrationCount(t *testing.T, db *sqlx.DB, s *Store) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+s.t.MigrationsTable()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tableExists reports whether the unqualified table name exists in the
// connection's current schema (database).
func tableExists(t *testing.T, db *sqlx.DB, d Dialect, name string) bool {
	t.Helper()
	var q string
	switch d {
	case Postgres:
		q = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
	case MySQL:
		q = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
	case SQLite:
		q = "SELECT COUNT(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?"
	}
	var n int
	if err := db.QueryRowContext(t.Context(), q, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// MySQL commits DDL implicitly, so a process that dies (or loses its
// connection) between a migration's ALTER TABLE and the row recording its
// version leaves the table changed but the version unrecorded. Migrate
// must finish the job on the next run instead of failing for ever with
// "Duplicate column name". Postgres gets there anyway (IF NOT EXISTS).
func TestMigrateRerunsPartlyAppliedMigrations(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db := openDB(t, d)
			s := newStore(t, db, randomName("outbox_mig_"))
			ms, err := ddl.Migrations(d)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}

			// Every migration from 002 on applied but none recorded.
			if _, err := db.ExecContext(ctx, "DELETE FROM "+s.t.MigrationsTable()+" WHERE version >= 2"); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate after a crash before recording 002 and 003: %v", err)
			}
			if n := migrationCount(t, db, s); n != len(ms) {
				t.Fatalf("%d migrations recorded, want %d", n, len(ms))
			}

			// Part of a migration applied: 003's second index is missing and
			// 003 is not recorded. Migrate adds just the missing index.
			idx := s.t.Name + "_synced_latency_idx"
			drop := "DROP INDEX " + s.sx.Quote(idx) + " ON " + s.t.Quoted
			if d == Postgres {
				idx = s.t.Name + "_pending_type_idx"
				drop = "DROP INDEX " + s.sx.Quote(idx)
			}
			if _, err := db.ExecContext(ctx, drop); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, "DELETE FROM "+s.t.MigrationsTable()+" WHERE version >= 3"); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate after a partly applied 003: %v", err)
			}
			if n := migrationCount(t, db, s); n != len(ms) {
				t.Fatalf("%d migrations recorded, want %d", n, len(ms))
			}
			var n int
			q := "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ?"
			args := []any{s.t.Name, idx}
			if d == Postgres {
				q, args = "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1", []any{idx}
			}
			if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatalf("index %s was not re-created", idx)
			}

			// The last migration (lean indexes) partly applied: one index
			// it drops is still there and it is not recorded. Migrate drops
			// just that one.
			stale := s.t.Name + "_type_idx"
			recreate := "CREATE INDEX " + s.sx.Quote(stale) + " ON " + s.t.Quoted + " (event_type)"
			if _, err := db.ExecContext(ctx, recreate); err != nil {
				t.Fatal(err)
			}
			// The versions from it on are run again (the partitions
			// migration after it is re-runnable as a whole).
			lean := slices.IndexFunc(ms, func(m sqlschema.Migration) bool { return strings.Contains(m.Name, "lean_indexes") })
			if lean < 0 {
				t.Fatal("no lean-index migration")
			}
			if _, err := db.ExecContext(ctx, "DELETE FROM "+s.t.MigrationsTable()+" WHERE version >= "+fmt.Sprint(ms[lean].Version)); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate after a partly applied lean-index migration: %v", err)
			}
			args[len(args)-1] = stale
			if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("index %s was not dropped", stale)
			}
			if n := migrationCount(t, db, s); n != len(ms) {
				t.Fatalf("%d migrations recorded, want %d", n, len(ms))
			}

			// The table works, priorities included.
			b := &bundle{store: s, db: db, clock: newTestClock()}
			events := b.newEvents(2)
			events[1].Priority = 5
			b.save(t, events...)
			if c := b.claim(t, 10); len(c.Events) != 2 {
				t.Fatalf("claimed %d events, want 2", len(c.Events))
			}
		})
	}
}

// MySQL: a version that cannot be recorded after its ALTER TABLE ran (the
// server enforces a CHECK on the migrations table here) is the state a
// crash leaves; the next Migrate, once recording works again, completes.
func TestMigrateMySQLRecordFailsAfterDDL(t *testing.T) {
	ctx := t.Context()
	db := openDB(t, MySQL)
	s := newStore(t, db, randomName("outbox_mig_"))
	if _, err := db.ExecContext(ctx, s.t.MigrationsDDL()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "ALTER TABLE "+s.t.MigrationsTable()+" ADD CONSTRAINT only_v1 CHECK (version < 2)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err == nil {
		t.Fatal("Migrate recorded version 2 despite the CHECK")
	}
	if _, err := db.ExecContext(ctx, "ALTER TABLE "+s.t.MigrationsTable()+" DROP CONSTRAINT only_v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate after 002 ran unrecorded: %v", err)
	}
	ms, _ := ddl.Migrations(MySQL)
	if n := migrationCount(t, db, s); n != len(ms) {
		t.Fatalf("%d migrations recorded, want %d", n, len(ms))
	}
}

// Postgres and SQLite run a whole Migrate in one transaction: when a
// version cannot be recorded, nothing of it (nor of the migrations before
// it in the same call) stays, so a re-run starts from a clean slate.
func TestMigrateIsAtomicOnTransactionalDDL(t *testing.T) {
	for _, d := range []Dialect{Postgres, SQLite} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db := openDB(t, d)
			s := newStore(t, db, randomName("outbox_mig_"))
			ddl := strings.Replace(s.t.MigrationsDDL(), "PRIMARY KEY", "PRIMARY KEY CHECK (version < 2)", 1)
			if _, err := db.ExecContext(ctx, ddl); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err == nil {
				t.Fatal("Migrate recorded version 2 despite the CHECK")
			}
			if tableExists(t, db, d, s.t.Name) {
				t.Fatal("a failed Migrate left the outbox table behind")
			}
			if n := migrationCount(t, db, s); n != 0 {
				t.Fatalf("a failed Migrate left %d versions recorded", n)
			}
			if _, err := db.ExecContext(ctx, "DROP TABLE "+s.t.MigrationsTable()); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every statement of the MySQL migrations is one Migrate knows how to
// re-run: CREATE TABLE IF NOT EXISTS, or an ALTER TABLE of ADD COLUMN and
// ADD KEY clauses only.
func TestMySQLMigrationsAreRerunnable(t *testing.T) {
	ms, err := ddl.Migrations(MySQL)
	if err != nil {
		t.Fatal(err)
	}
	createRE := regexp.MustCompile(`(?is)^(CREATE TABLE IF NOT EXISTS|INSERT IGNORE INTO) ` + DefaultTable + `(_[a-z]+)?\s`)
	for _, m := range ms {
		for _, stmt := range sqlschema.Statements(m.SQL) {
			if createRE.MatchString(stmt) {
				continue
			}
			clauses, ok := ddl.AlterClauses(stmt)
			if !ok {
				t.Errorf("%s: statement is neither CREATE TABLE IF NOT EXISTS nor a re-runnable ALTER TABLE:\n%s", m.Name, stmt)
				continue
			}
			for _, c := range clauses {
				if c.Kind == "" {
					t.Errorf("%s: clause Migrate cannot check before re-running it: %s", m.Name, c.Text)
				}
			}
		}
	}
}

// Two spellings of one table ("t" and "schema.t") are one table: their
// Migrate calls exclude each other instead of racing into duplicate keys.
func TestMigrateConcurrentSpellings(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db := openDB(t, d)
			var schema string
			q := "SELECT current_schema()"
			if d == MySQL {
				q = "SELECT DATABASE()"
			}
			if err := db.QueryRowContext(t.Context(), q).Scan(&schema); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				name := randomName("outbox_mig_")
				plain := newStore(t, db, name)
				qualified := newStore(t, db, schema+"."+name)
				var wg sync.WaitGroup
				errs := make([]error, 8)
				for i := range errs {
					s := plain
					if i%2 == 1 {
						s = qualified
					}
					wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatalf("concurrent Migrate of %s and %s.%s: %v", name, schema, name, err)
					}
				}
				ms, _ := ddl.Migrations(d)
				if n := migrationCount(t, db, plain); n != len(ms) {
					t.Fatalf("%d migrations recorded, want %d", n, len(ms))
				}
			}
		})
	}
}

// notifyFunctionExists reports whether the Postgres trigger function of
// table name exists in the current schema.
func notifyFunctionExists(t *testing.T, db *sqlx.DB, name string) bool {
	t.Helper()
	var n int
	err := db.QueryRowContext(t.Context(),
		`SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema() AND p.proname = $1`,
		name+"_notify").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// Drop removes everything Migrate created, and only that; it is
// idempotent and a later Migrate starts afresh.
func TestDrop(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db := openDB(t, d)
			name := randomName("outbox_drop_")
			other := newStore(t, db, randomName("outbox_drop_"))
			if err := other.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			spellings := []string{name}
			if d != SQLite {
				var schema string
				q := "SELECT current_schema()"
				if d == MySQL {
					q = "SELECT DATABASE()"
				}
				if err := db.QueryRowContext(ctx, q).Scan(&schema); err != nil {
					t.Fatal(err)
				}
				spellings = append(spellings, schema+"."+name)
			}
			for _, spelling := range spellings {
				s := newStore(t, db, spelling)
				if err := s.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
				if d == Postgres && !notifyFunctionExists(t, db, name) {
					t.Fatal("Migrate created no notify function")
				}
				if d != MySQL && (!tableExists(t, db, d, name+deliveriesSuffix) || !tableExists(t, db, d, name+deliveryViewSuffix)) {
					t.Fatal("Migrate created no deliveries table or delivery view")
				}
				if err := s.Drop(ctx); err != nil {
					t.Fatalf("Drop %s: %v", spelling, err)
				}
				for _, tbl := range []string{name, name + "_migrations", name + partitionsSuffix, name + relaysSuffix, name + deliveriesSuffix, name + deliveryViewSuffix} {
					if tableExists(t, db, d, tbl) {
						t.Fatalf("Drop %s left table %s", spelling, tbl)
					}
				}
				if d == Postgres && notifyFunctionExists(t, db, name) {
					t.Fatalf("Drop %s left function %s_notify", spelling, name)
				}
				if err := s.Drop(ctx); err != nil {
					t.Fatalf("Drop %s again: %v", spelling, err)
				}
			}
			// Another table is untouched.
			if !tableExists(t, db, d, other.t.Name) || !tableExists(t, db, d, other.t.Name+"_migrations") ||
				!tableExists(t, db, d, other.t.Name+partitionsSuffix) {
				t.Fatal("Drop removed another store's tables")
			}
			if d == Postgres && !notifyFunctionExists(t, db, other.t.Name) {
				t.Fatal("Drop removed another store's notify function")
			}
			// Dropping a table that was never created is not an error.
			if err := newStore(t, db, randomName("outbox_drop_")).Drop(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
