package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// readmeMonitoringSQL returns the statement of each SQL block of the
// README's "Monitoring SQL" section for dialect d: the block itself, or,
// in a block with a section per database ("-- SQLite", "-- Postgres",
// "-- MySQL / MariaDB"), d's section.
func readmeMonitoringSQL(t *testing.T, d sqlstore.Dialect) []string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Monitoring SQL\n")
	if !ok {
		t.Fatal(`README.md has no "## Monitoring SQL" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var out []string
	for _, block := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(section, -1) {
		byDialect := map[string]string{}
		current := ""
		for _, line := range strings.Split(block[1], "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(line), "-- "); ok {
				current = strings.ToLower(strings.Fields(name)[0])
				continue
			}
			byDialect[current] += line + "\n"
		}
		stmt := byDialect[""]
		if len(byDialect) > 1 || strings.TrimSpace(stmt) == "" {
			stmt = byDialect[string(d)]
		}
		stmt = strings.TrimSpace(stmt)
		if stmt == "" || strings.Count(stmt, ";") != 1 || !strings.HasSuffix(stmt, ";") {
			t.Fatalf("README SQL block for %s: want one statement, got %q\nin\n%s", d, stmt, block[1])
		}
		out = append(out, stmt)
	}
	return out
}

// eachReadmeDatabase runs fn on SQLite, and on Postgres and MySQL when
// their variables are set, each time on an empty outbox table of the
// test's own, which the README's queries read in place of "events".
func eachReadmeDatabase(t *testing.T, fn func(t *testing.T, db *sqlx.DB, store *sqlstore.Store, queries []string)) {
	configs := map[string]func(t *testing.T) dbConfig{
		"sqlite": func(t *testing.T) dbConfig { return sqliteConfig(filepath.Join(t.TempDir(), "inventory.db")) },
		"postgres": func(t *testing.T) dbConfig {
			u := os.Getenv("OUTBOX_TEST_POSTGRES")
			if u == "" {
				t.Skip("set OUTBOX_TEST_POSTGRES (postgres://...) to run against Postgres")
			}
			c, err := parseDatabaseURL(u)
			if err != nil {
				t.Fatalf("OUTBOX_TEST_POSTGRES: %v", err)
			}
			return c
		},
		"mysql": mysqlTestConfig,
	}
	for _, name := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := configs[name](t)
			db, err := sqlx.Open(c.Driver, c.DSN)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if err := db.PingContext(ctx); err != nil {
				t.Fatalf("the %s test database is set but unreachable: %v", name, err)
			}
			table := "inv_readme_" + randomHex(t) + "_" + defaultEventsTable
			store, err := sqlstore.New(db, sqlstore.WithTable(table))
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := store.Drop(ctx); err != nil {
					t.Errorf("drop %s: %v", table, err)
				}
			})
			if string(store.Dialect()) != name {
				t.Fatalf("store dialect %s on %s", store.Dialect(), name)
			}
			queries := readmeMonitoringSQL(t, store.Dialect())
			if len(queries) != 4 {
				t.Fatalf("%d monitoring queries in the README, want 4", len(queries))
			}
			eventsTable := regexp.MustCompile(`\b` + defaultEventsTable + `\b`)
			for i, q := range queries {
				if !eventsTable.MatchString(q) {
					t.Fatalf("README query reads no %s table: %s", defaultEventsTable, q)
				}
				queries[i] = eventsTable.ReplaceAllString(q, table)
			}
			fn(t, db, store, queries)
		})
	}
}

// TestReadmeMonitoringSQL runs the README's monitoring queries on an empty
// table and on one with pending, synced and buried events, on each
// database, and checks their answers.
func TestReadmeMonitoringSQL(t *testing.T) {
	eachReadmeDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store, queries []string) {
		ctx := t.Context()
		pendingByType := func() ([]string, map[string]int64) {
			t.Helper()
			rows, err := db.QueryContext(ctx, queries[0])
			if err != nil {
				t.Fatalf("pending by type: %v", err)
			}
			defer rows.Close()
			var order []string
			counts := map[string]int64{}
			for rows.Next() {
				var typ string
				var n int64
				if err := rows.Scan(&typ, &n); err != nil {
					t.Fatal(err)
				}
				order = append(order, typ)
				counts[typ] = n
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return order, counts
		}
		float := func(what, q string) sql.NullFloat64 {
			t.Helper()
			var v sql.NullFloat64
			if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return v
		}
		type deadRow struct {
			id, typ, aggregate string
			attempts           int
			lastError          sql.NullString
		}
		dead := func() []deadRow {
			t.Helper()
			rows, err := db.QueryContext(ctx, queries[3])
			if err != nil {
				t.Fatalf("dead events: %v", err)
			}
			defer rows.Close()
			var out []deadRow
			for rows.Next() {
				var r deadRow
				var deadAt any
				if err := rows.Scan(&r.id, &r.typ, &r.aggregate, &r.attempts, &r.lastError, &deadAt); err != nil {
					t.Fatal(err)
				}
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		}

		// Empty: no types, no age, no latency, no dead.
		if order, _ := pendingByType(); len(order) != 0 {
			t.Errorf("pending types on an empty table: %v", order)
		}
		if v := float("oldest pending", queries[1]); !v.Valid || v.Float64 != 0 {
			t.Errorf("oldest pending on an empty table: %+v, want 0", v)
		}
		if v := float("average latency", queries[2]); v.Valid {
			t.Errorf("average latency on an empty table: %v, want NULL", v.Float64)
		}
		if rows := dead(); len(rows) != 0 {
			t.Errorf("dead events on an empty table: %+v", rows)
		}

		// Synced 90 s after its creation; synced two hours ago, outside
		// the hour, after 1000 s; buried; pending since 30 s, 10 s and now.
		now := time.Now()
		event := func(typ, agg string, age time.Duration) *outbox.Event {
			return &outbox.Event{ID: outbox.NewID(), Topic: "inventory.events", Type: typ, AggregateID: agg,
				Payload: []byte(`{}`), CreatedAt: now.Add(-age)}
		}
		synced := event("stock.updated", "sku-1", 90*time.Second)
		old := event("stock.updated", "sku-2", 1000*time.Second)
		buried := event("stock.updated", "sku-3", time.Second)
		pending := []*outbox.Event{
			event("stock.reserved", "sku-4", 30*time.Second),
			event("stock.reserved", "sku-5", 10*time.Second),
			event("stock.updated", "sku-6", 0),
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Insert(ctx, tx, append([]*outbox.Event{synced, old, buried}, pending...)); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		c, err := store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute, IDs: []string{synced.ID, old.ID, buried.ID}})
		if err != nil || len(c.Events) != 3 {
			t.Fatalf("claim: %v, %v", c, err)
		}
		if n, err := store.MarkSynced(ctx, c.Token, []string{synced.ID, old.ID}); err != nil || n != 2 {
			t.Fatalf("mark synced: %d, %v", n, err)
		}
		if n, err := store.Fail(ctx, c.Token, []storage.Failure{{ID: buried.ID, Err: "out of stock", Dead: true}}); err != nil || n != 1 {
			t.Fatalf("bury: %d, %v", n, err)
		}
		shift := map[sqlstore.Dialect]string{
			sqlstore.SQLite: "UPDATE " + store.Table() + " SET created_at = strftime('%Y-%m-%d %H:%M:%f', created_at, '-2 hours'), " +
				"synced_at = strftime('%Y-%m-%d %H:%M:%f', synced_at, '-2 hours') WHERE id = ?",
			sqlstore.Postgres: "UPDATE " + store.Table() + " SET created_at = created_at - interval '2 hours', " +
				"synced_at = synced_at - interval '2 hours' WHERE id = ?",
			sqlstore.MySQL: "UPDATE " + store.Table() + " SET created_at = created_at - INTERVAL 2 HOUR, " +
				"synced_at = synced_at - INTERVAL 2 HOUR WHERE id = ?",
		}[store.Dialect()]
		if _, err := db.ExecContext(ctx, db.Rebind(shift), old.ID); err != nil {
			t.Fatal(err)
		}

		order, counts := pendingByType()
		if len(order) != 2 || order[0] != "stock.reserved" || counts["stock.reserved"] != 2 || counts["stock.updated"] != 1 {
			t.Errorf("pending by type: %v %v, want stock.reserved 2 first, then stock.updated 1", order, counts)
		}
		if v := float("oldest pending", queries[1]); !v.Valid || v.Float64 < 29 || v.Float64 > 80 {
			t.Errorf("oldest pending %+v, want about 30 s (the synced and buried events are older)", v)
		}
		if v := float("average latency", queries[2]); !v.Valid || v.Float64 < 89 || v.Float64 > 150 {
			t.Errorf("average sync latency %+v, want about 90 s (the event synced two hours ago is out of the hour)", v)
		}
		rows := dead()
		if len(rows) != 1 || rows[0].id != buried.ID || rows[0].typ != "stock.updated" || rows[0].aggregate != "sku-3" ||
			rows[0].attempts != 1 || rows[0].lastError.String != "out of stock" {
			t.Errorf("dead events: %+v, want %s alone", rows, buried.ID)
		}
	})
}

// The README shows the dashboard: every panel of
// ../monitoring/dashboard.json has a row in its panel table and a place in
// its layout sketch, so the two cannot drift apart.
func TestReadmeShowsTheDashboard(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("..", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title string `json:"title"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	_, section, _ := strings.Cut(string(readme), "\n## Dashboard and alerts\n")
	sketch, table, ok := strings.Cut(section, "| panel | what it plots |")
	if !ok {
		t.Fatal(`README: no "| panel | what it plots |" table under "## Dashboard and alerts"`)
	}
	// The sketch writes "Published / s" as "Published/s": compare without
	// spaces and box lines.
	flat := strings.NewReplacer(" ", "", "│", "", "\n", "").Replace(sketch)
	for _, p := range dash.Panels {
		if !strings.Contains(table, "\n| "+p.Title+" |") {
			t.Errorf("README's panel table lacks %q", p.Title)
		}
		if !strings.Contains(flat, strings.ReplaceAll(strings.ReplaceAll(p.Title, " / s", "/s"), " ", "")) {
			t.Errorf("README's dashboard sketch lacks %q", p.Title)
		}
	}
}
