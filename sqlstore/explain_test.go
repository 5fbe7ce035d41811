package sqlstore

import (
	"context"
	"database/sql"
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
	tbl := b.store.t.Quoted
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

// claimPlanQueries returns the statements a relay pass runs on Postgres
// for limit events: the ordered claim (lock, order check and lease in one
// statement), the unordered claim, the mark of the events the ordered
// claim would take, and a purge.
func claimPlanQueries(t *testing.T, b *bundle, limit int) map[string]*query {
	t.Helper()
	s := b.store
	cr := claimRun{token: "plan", now: b.clock.Now(), until: b.clock.Now().Add(time.Minute), ordered: true}
	ordered := newQuery(s.sx)
	postgresDialect{}.orderedClaim(s, ordered, cr, limit, nil)

	ucr := cr
	ucr.ordered = false
	unordered := newQuery(s.sx).sql("SELECT c.seq")
	s.candidates(unordered, ucr, nil, "")
	unordered.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", unordered.arg(limit), " FOR UPDATE SKIP LOCKED")

	ids := make([]string, 0, limit)
	r, err := b.db.QueryxContext(t.Context(), "SELECT id FROM "+s.t.Quoted+
		" WHERE synced_at IS NULL AND dead_at IS NULL ORDER BY priority DESC, seq LIMIT $1", limit)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var id string
		if err := r.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	r.Close()
	if len(ids) == 0 {
		t.Fatal("nothing to claim")
	}
	mark := newQuery(s.sx)
	mark.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", mark.arg(s.sx.Time(b.clock.Now())),
		", claim_token = NULL, locked_until = NULL WHERE claim_token IS NULL AND ", mark.in("id", ids, false))

	cutoff := s.sx.Time(b.clock.Now())
	purge := newQuery(s.sx).sql("DELETE FROM ", s.t.Quoted, " WHERE seq IN (SELECT seq FROM ", s.t.Quoted, " WHERE synced_at IS NOT NULL AND synced_at < ")
	purge.sql(purge.arg(cutoff), " ORDER BY synced_at LIMIT ", purge.arg(limit), ")")
	return map[string]*query{"ordered claim": ordered, "unordered claim": unordered, "mark": mark, "purge": purge}
}

func explain(t *testing.T, b *bundle, options string, q *query) string {
	t.Helper()
	tx, err := b.db.BeginTxx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() // EXPLAIN ANALYZE runs the statement: undo it
	if _, err := tx.ExecContext(t.Context(), claimSettings); err != nil {
		t.Fatal(err)
	}
	return strings.Join(queryStrings(t, tx, "EXPLAIN "+options+q.String(), q.args...), "\n")
}

// queryStrings runs a query of one text column (a plan, a description)
// and returns its rows.
func queryStrings(t *testing.T, db interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The statements of a relay pass use indexes on Postgres (a modest
// table; no ANALYZE of the statements). With OUTBOX_TEST_EXPLAIN=1 it
// fills 200,000 events over 2,000 aggregates and logs the plans of
// 1,000-event statements with ANALYZE and BUFFERS.
func TestClaimPlans(t *testing.T) {
	b := setup(t, Postgres)
	big := os.Getenv(envExplain) != ""
	if big {
		fillPostgres(t, b, 200_000, 2_000, 150_000)
	} else {
		fillPostgres(t, b, 20_000, 200, 15_000)
	}
	limit := 100
	if big {
		limit = 1000
	}
	qs := claimPlanQueries(t, b, limit)
	for _, name := range []string{"ordered claim", "unordered claim", "mark", "purge"} {
		q := qs[name]
		plan := explain(t, b, "", q)
		if !strings.Contains(plan, "Index") {
			t.Errorf("%s statement uses no index:\n%s", name, plan)
		}
		if big {
			t.Logf("%s:\n%s\n\n%s", name, q.String(), shorten(explain(t, b, "(ANALYZE, BUFFERS) ", q)))
		}
	}
}

// shorten cuts the long lines of a plan (a mark's array of IDs) to 300
// bytes.
func shorten(plan string) string {
	lines := strings.Split(plan, "\n")
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	return strings.Join(lines, "\n")
}
