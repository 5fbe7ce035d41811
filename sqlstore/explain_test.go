package sqlstore

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// envExplain makes TestClaimPlans fill a large table and print the plans
// with ANALYZE and BUFFERS.
const envExplain = "OUTBOX_TEST_EXPLAIN"

// fillPostgres inserts n events over aggs aggregates straight in SQL: the
// first synced ones are history, the rest pending; every 100th has
// priority 5, and one aggregate in 100 has a buried head.
func fillPostgres(t *testing.T, b *bundle, n, aggs, synced int) {
	t.Helper()
	tbl := b.store.t.quoted
	stmt := fmt.Sprintf(`INSERT INTO %s (id, topic, event_type, aggregate_id, priority, payload, created_at, next_attempt_at, synced_at)
SELECT 'ev-' || g, 'stock', 'stock.updated', 'agg-' || (g %% %d), CASE WHEN g %% 100 = 0 THEN 5 ELSE 0 END, '\x00'::bytea,
       now(), now(), CASE WHEN g <= %d THEN now() END
FROM generate_series(1, %d) g`, tbl, aggs, synced, n)
	if _, err := b.db.ExecContext(t.Context(), stmt); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf(`UPDATE %s SET dead_at = now() WHERE seq IN (
SELECT MIN(seq) FROM %s WHERE synced_at IS NULL AND aggregate_id LIKE 'agg-%%00' GROUP BY aggregate_id)`, tbl, tbl)
	if _, err := b.db.ExecContext(t.Context(), dead); err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.ExecContext(t.Context(), "ANALYZE "+tbl); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(time.Until(b.clock.Now()) + time.Minute)
}

// claimPlanQueries returns the statements of an ordered claim of limit
// events on Postgres: the locking read, and the order check for the
// aggregates of the rows it would lock.
func claimPlanQueries(t *testing.T, b *bundle, limit int) map[string]*query {
	t.Helper()
	cr := claimRun{token: "plan", now: b.clock.Now(), until: b.clock.Now().Add(time.Minute), ordered: true}
	lock := newQuery(b.store.d).sql("SELECT c.seq")
	b.store.candidates(lock, cr, nil)
	lock.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", lock.arg(limit), " FOR UPDATE SKIP LOCKED")

	rows, err := b.db.QueryxContext(t.Context(), strings.Replace(lock.String(), "SELECT c.seq", "SELECT c.aggregate_id, c.seq", 1), lock.args...)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	var order []string
	for rows.Next() {
		var agg string
		var seq int64
		if err := rows.Scan(&agg, &seq); err != nil {
			t.Fatal(err)
		}
		if _, ok := last[agg]; !ok {
			order = append(order, agg)
		}
		last[agg] = max(last[agg], seq)
	}
	rows.Close()
	if len(order) == 0 {
		t.Fatal("nothing to claim")
	}
	var cands []string
	for _, agg := range order {
		cands = append(cands, fmt.Sprintf(`{"agg":%q,"maxseq":%d}`, agg, last[agg]))
	}
	check := newQuery(b.store.d).sql("SELECT c.agg, (SELECT COUNT(*) FROM ", b.store.t.quoted,
		" e WHERE e.aggregate_id = c.agg AND e.synced_at IS NULL AND e.seq <= c.maxseq) FROM json_to_recordset(")
	check.sql(check.arg("["+strings.Join(cands, ",")+"]"), "::json) AS c(agg text, maxseq bigint)")

	cutoff := b.store.d.timeArg(b.clock.Now())
	purge := newQuery(b.store.d).sql("DELETE FROM ", b.store.t.quoted, " WHERE seq IN (SELECT seq FROM ", b.store.t.quoted, " WHERE synced_at IS NOT NULL AND synced_at < ")
	purge.sql(purge.arg(cutoff), " ORDER BY synced_at LIMIT ", purge.arg(limit), ")")
	return map[string]*query{"lock": lock, "check": check, "purge": purge}
}

func explain(t *testing.T, b *bundle, options string, q *query) string {
	t.Helper()
	tx, err := b.db.BeginTxx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() // EXPLAIN ANALYZE runs the statement: undo it
	rows, err := tx.QueryxContext(t.Context(), "EXPLAIN "+options+q.String(), q.args...)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// The claim's statements use the indexes of migration 002 on Postgres (a
// modest table; no ANALYZE of the statements). With OUTBOX_TEST_EXPLAIN=1
// it fills 200,000 events over 2,000 aggregates and logs the plans with
// ANALYZE and BUFFERS.
func TestClaimPlans(t *testing.T) {
	b := setup(t, Postgres)
	big := os.Getenv(envExplain) != ""
	if big {
		fillPostgres(t, b, 200_000, 2_000, 150_000)
	} else {
		fillPostgres(t, b, 20_000, 200, 15_000)
	}
	for _, name := range []string{"lock", "check", "purge"} {
		q := claimPlanQueries(t, b, 100)[name]
		plan := explain(t, b, "", q)
		if !strings.Contains(plan, "Index") {
			t.Errorf("%s statement uses no index:\n%s", name, plan)
		}
		if big {
			t.Logf("%s:\n%s\n\n%s", name, q.String(), explain(t, b, "(ANALYZE, BUFFERS) ", q))
		}
	}
}
