package sqlstore

import (
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
)

// TestStatsWindow syncs 100 events with latencies of 1 to 100 ms, after
// 5 synced long before the window, and checks every figure of Stats.
func TestStatsWindow(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		old := b.newEvents(5)
		b.save(t, old...)
		c := b.claim(t, 10)
		n, err := b.store.MarkSynced(ctx, c.Token, ids(c.Events))
		wantN(t, "mark old", n, err, 5)
		b.clock.Advance(2 * time.Hour)

		events := b.newEvents(100)
		b.save(t, events...)
		c = b.claim(t, 200)
		if len(c.Events) != 100 {
			t.Fatalf("claimed %d, want 100", len(c.Events))
		}
		for _, e := range events {
			b.clock.Advance(time.Millisecond)
			n, err := b.store.MarkSynced(ctx, c.Token, []string{e.ID})
			wantN(t, "mark", n, err, 1)
		}
		pending := b.newEvents(3)
		pending[0].Type = "reservation.created"
		b.save(t, pending...)
		b.clock.Advance(30 * time.Second)
		dead := b.newEvents(1)
		dead[0].AggregateID = "sku-poison"
		b.save(t, dead...)
		c = b.claim(t, 10, dead[0].ID)
		n, err = b.store.Fail(ctx, c.Token, []storage.Failure{{ID: dead[0].ID, Err: "poison", Dead: true}})
		wantN(t, "bury", n, err, 1)

		st, err := b.store.Stats(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending != 3 || st.Dead != 1 || st.Synced != 100 ||
			!maps.Equal(st.PendingByType, map[string]int64{"stock.updated": 2, "reservation.created": 1}) {
			t.Fatalf("Stats = %+v, want 3 pending (2 stock.updated, 1 reservation.created), 1 dead, 100 synced in the window", st)
		}
		if st.OldestPendingAge != 30*time.Second {
			t.Errorf("OldestPendingAge = %v, want 30s", st.OldestPendingAge)
		}
		// SQLite computes with julianday, a double of days: about 20µs.
		near := func(got, want, tol time.Duration) bool { return got >= want-tol && got <= want+tol }
		if !near(st.AvgSyncLatency, 50500*time.Microsecond, 50*time.Microsecond) {
			t.Errorf("AvgSyncLatency = %v, want 50.5ms", st.AvgSyncLatency)
		}
		// Nearest rank: 99ms; percentile_cont (Postgres): 99.01ms.
		if !near(st.P99SyncLatency, 99*time.Millisecond, 50*time.Microsecond) && !near(st.P99SyncLatency, 99010*time.Microsecond, 50*time.Microsecond) {
			t.Errorf("P99SyncLatency = %v, want 99ms (99.01ms interpolated)", st.P99SyncLatency)
		}

		// A window that ends before the recent syncs sees none of them;
		// one that reaches back 3 hours sees the first 5 too.
		b.clock.Advance(2 * time.Hour)
		st, err = b.store.Stats(ctx, time.Hour)
		if err != nil || st.Synced != 0 || st.AvgSyncLatency != 0 || st.P99SyncLatency != 0 {
			t.Fatalf("Stats after the window = %+v, %v; want no synced figures", st, err)
		}
		st, err = b.store.Stats(ctx, 5*time.Hour)
		if err != nil || st.Synced != 105 {
			t.Fatalf("Stats over 5h = %+v, %v; want 105 synced", st, err)
		}
		st, err = b.store.Stats(ctx, 0)
		if err != nil || st.Synced != 0 || st.Pending != 3 {
			t.Fatalf("Stats without a window = %+v, %v; want pending figures only", st, err)
		}
	})
}

// TestStatsEmpty: an empty table has zero figures and a non-nil map.
func TestStatsEmpty(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		st, err := b.store.Stats(t.Context(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingByType == nil || st.Pending != 0 || st.OldestPendingAge != 0 || st.Synced != 0 || st.Dead != 0 {
			t.Fatalf("Stats = %+v", st)
		}
	})
}

// statsQueries returns the statements Stats runs, with their arguments
// inlined for EXPLAIN.
func statsQueries(b *bundle, window time.Duration) map[string]string {
	cutoff := b.clock.Now().Add(-window)
	inline := func(q *query) string {
		s := q.String()
		for i := len(q.args); i >= 1; i-- {
			var v string
			switch a := q.args[i-1].(type) {
			case time.Time:
				v = "'" + a.UTC().Format(time.RFC3339Nano) + "'"
			case string:
				v = "'" + a + "'"
			default:
				v = fmt.Sprint(a)
			}
			s = strings.ReplaceAll(s, b.store.sx.Placeholder(i), v)
		}
		return s
	}
	qs := map[string]string{
		"pending": b.store.pendingStatsQuery(),
		"dead":    "SELECT COUNT(*) FROM " + b.store.t.Quoted + " WHERE synced_at IS NULL AND dead_at IS NOT NULL",
		"synced":  inline(b.store.syncStatsQuery(cutoff)),
	}
	if b.store.Dialect() != Postgres {
		qs["p99"] = inline(b.store.p99Query(cutoff, 1000))
	}
	return qs
}

// TestStatsPlans checks that each statement of Stats reads an index, not
// the whole table: on Postgres with a table of 200,000 rows (1,000,000
// with OUTBOX_TEST_EXPLAIN set, the plans then run with ANALYZE and are
// logged), on SQLite and MySQL with EXPLAIN on a small table.
func TestStatsPlans(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			b := setup(t, d)
			switch d {
			case Postgres:
				n := 200_000
				if os.Getenv(envExplain) != "" {
					n = 1_000_000
					if v, err := strconv.Atoi(os.Getenv(envExplain)); err == nil && v > 1 {
						n = v
					}
				}
				fillHistory(t, b, n)
				for name, q := range statsQueries(b, 5*time.Minute) {
					plan := explainPostgres(t, b, q, os.Getenv(envExplain) != "")
					if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index") {
						t.Errorf("%s: the plan reads the whole table:\n%s", name, plan)
					}
					if os.Getenv(envExplain) != "" {
						t.Logf("%s (%d rows):\n%s\n%s", name, n, q, plan)
					}
				}
				start := time.Now()
				st, err := b.store.Stats(t.Context(), 5*time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("Stats on %d rows in %v: %+v", n, time.Since(start), st)
			case SQLite:
				for name, q := range statsQueries(b, 5*time.Minute) {
					plan := explainSQLite(t, b, q)
					if !strings.Contains(plan, "INDEX") {
						t.Errorf("%s: the plan reads the whole table:\n%s", name, plan)
					}
				}
			case MySQL:
				for name, q := range statsQueries(b, 5*time.Minute) {
					for _, key := range explainMySQL(t, b, q) {
						if key == "" {
							t.Errorf("%s: a step of the plan uses no index: %s", name, q)
						}
					}
				}
			}
		})
	}
}

// fillHistory inserts n events on Postgres: 99% synced over the last 30
// days (created a few seconds earlier), 1% pending, 1 in 1000 buried.
func fillHistory(t *testing.T, b *bundle, n int) {
	t.Helper()
	tbl := b.store.t.Quoted
	stmt := fmt.Sprintf(`INSERT INTO %s (id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at, synced_at, dead_at)
SELECT 'ev-' || g, 'stock', 'type-' || (g %% 7), 'agg-' || (g %% 5000), '\x00'::bytea,
       now() - (g * interval '2.5 second') - interval '3 second', now(),
       CASE WHEN g %% 100 <> 0 THEN now() - (g * interval '2.5 second') END,
       CASE WHEN g %% 1000 = 0 THEN now() END
FROM generate_series(1, %d) g`, tbl, n)
	if _, err := b.db.ExecContext(t.Context(), stmt); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(t.Context(), "VACUUM ANALYZE "+tbl); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(time.Until(b.clock.Now()))
}

func explainPostgres(t *testing.T, b *bundle, q string, analyze bool) string {
	t.Helper()
	prefix := "EXPLAIN "
	if analyze {
		prefix = "EXPLAIN (ANALYZE, BUFFERS) "
	}
	var lines []string
	if err := b.db.SelectContext(t.Context(), &lines, prefix+q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return strings.Join(lines, "\n")
}

func explainSQLite(t *testing.T, b *bundle, q string) string {
	t.Helper()
	rows, err := b.db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	return strings.Join(out, "\n")
}

// explainMySQL returns the key column of each row of the plan.
func explainMySQL(t *testing.T, b *bundle, q string) []string {
	t.Helper()
	rows, err := b.db.QueryxContext(t.Context(), "EXPLAIN "+q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		m := map[string]any{}
		if err := rows.MapScan(m); err != nil {
			t.Fatal(err)
		}
		k, _ := m["key"].([]byte)
		keys = append(keys, string(k))
	}
	return keys
}

// Stats is one snapshot: an event marked synced between its first read
// (the pending figures) and its last (the synced ones) is counted once,
// as pending, never as pending and synced at once.
func TestStatsIsOneSnapshot(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		ev := b.newEvents(1)
		b.save(t, ev...)
		c := b.claim(t, 1)
		if len(c.Events) != 1 {
			t.Fatalf("claimed %d events", len(c.Events))
		}
		marked := false
		statsHooks.Store(b.store, func() {
			// Another connection marks the event while Stats runs.
			n, err := b.store.MarkSynced(ctx, c.Token, ids(c.Events))
			marked = err == nil && n == 1
			if err != nil {
				t.Errorf("mark during Stats: %v", err)
			}
		})
		st, err := b.store.Stats(ctx, time.Hour)
		statsHooks.Delete(b.store)
		if err != nil {
			t.Fatal(err)
		}
		if !marked {
			t.Fatal("the event was not marked while Stats ran: the test proves nothing")
		}
		if st.Pending+st.Synced+st.Dead != 1 || st.Pending != 1 {
			t.Errorf("one event, marked while Stats ran: pending %d, synced %d, dead %d; want it counted once, as pending", st.Pending, st.Synced, st.Dead)
		}
		if st, err := b.store.Stats(ctx, time.Hour); err != nil || st.Pending != 0 || st.Synced != 1 {
			t.Errorf("after: %+v, %v; want it synced", st, err)
		}
	})
}
