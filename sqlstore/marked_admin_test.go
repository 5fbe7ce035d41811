package sqlstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// Purge under watermarks deletes the events delivered by marks (created
// before the cutoff) and per row (synced before it), oldest first within
// its limit, returns how many, and leaves pending, dead and recent ones.
func TestMarkedPurge(t *testing.T) {
	eachMarkDialect(t, testMarkedPurge)
}

func testMarkedPurge(t *testing.T, d Dialect) {
	b := markBundleOn(t, d)
	ctx := t.Context()
	old := b.run("A", 3)
	old = append(old, b.event(sibling("A"), 0), b.event("B", 0))
	b.save(t, old...)
	if got := b.drain(t, 10); len(got) != 5 {
		t.Fatalf("drained %d, want 5", len(got))
	}
	perRow := b.event("F", 0)
	b.save(t, perRow)
	c := b.claim(t, 10)
	n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: perRow.ID, Err: "once", Delay: time.Minute}})
	wantN(t, "Fail", n, err, 1)
	b.clock.Advance(2 * time.Minute)
	equalIDs(t, "per-row delivery", b.drain(t, 10), []string{perRow.ID})
	pending, dead := b.event("P", 0), b.event("D", 0)
	b.save(t, dead)
	c = b.claim(t, 10)
	n, err = b.store.Fail(ctx, c.Token, []storage.Failure{{ID: dead.ID, Err: "x", Dead: true}})
	wantN(t, "bury", n, err, 1)
	b.clock.Advance(2 * time.Hour)
	recent := []*outbox.Event{b.event("A", 0), b.event("C", 0)}
	b.save(t, recent...)
	if got := b.drain(t, 10); len(got) != 2 {
		t.Fatalf("drained %d recent, want 2", len(got))
	}
	b.save(t, pending)

	n, err = b.store.Purge(ctx, time.Hour, 4)
	wantN(t, "Purge, limited", n, err, 4)
	n, err = b.store.Purge(ctx, time.Hour, 100)
	wantN(t, "Purge, the rest", n, err, 2)
	n, err = b.store.Purge(ctx, time.Hour, 100)
	wantN(t, "Purge, nothing left", n, err, 0)
	for _, e := range append(recent, pending, dead) {
		if _, err := b.store.Get(ctx, e.ID); err != nil {
			t.Fatalf("event %s of %s gone after the purge: %v", e.ID, e.AggregateID, err)
		}
	}
	for _, e := range append(old, perRow) {
		if _, err := b.store.Get(ctx, e.ID); err == nil {
			t.Fatalf("event %s of %s left by the purge", e.ID, e.AggregateID)
		}
	}
	b.clock.Advance(365 * 24 * time.Hour)
	n, err = b.store.Purge(ctx, time.Hour, 100)
	wantN(t, "Purge a year later", n, err, 2) // never pending or dead
}

// Under watermarks a re-queued event is delivered per row: also one
// buried with its transaction ID (by a relay without watermarks) that a
// mark then passed over, which would otherwise read as delivered.
func TestMarkedRequeue(t *testing.T) {
	eachMarkDialect(t, testMarkedRequeue)
}

func testMarkedRequeue(t *testing.T, d Dialect) {
	b := markBundleOn(t, d)
	ctx := t.Context()
	buried, next := b.event("A", 0), b.event(sibling("A"), 0)
	b.save(t, buried)
	q := newQuery(b.store.sx)
	q.sql("UPDATE ", b.store.t.Quoted, " SET dead_at = ", q.arg(b.store.sx.Time(b.clock.Now())), ", attempts = 1, last_error = 'poison' WHERE id = ", q.arg(buried.ID))
	if _, err := b.db.ExecContext(ctx, q.String(), q.args...); err != nil {
		t.Fatal(err)
	}
	b.save(t, next)
	equalIDs(t, "drain past the buried event", b.drain(t, 10), []string{next.ID})
	if st, err := b.store.Stats(ctx, 0); err != nil || st.Dead != 1 || st.Pending != 0 {
		t.Fatalf("Stats = %+v, %v; want 1 dead", st, err)
	}
	n, err := b.store.Requeue(ctx, RequeueFilter{IDs: []string{buried.ID}})
	wantN(t, "Requeue", n, err, 1)
	if st, err := b.store.Stats(ctx, 0); err != nil || st.Dead != 0 || st.Pending != 1 {
		t.Fatalf("Stats after the re-queue = %+v, %v; want 1 pending", st, err)
	}
	equalIDs(t, "drain after the re-queue", b.drain(t, 10), []string{buried.ID})
	if got, err := b.store.Get(ctx, buried.ID); err != nil || got.Delivery.Status() != outbox.StatusSynced {
		t.Fatalf("re-queued event after the drain: %+v, %v", got, err)
	}
}

// fillMarked adds to b's table delivered events, delivered by the
// partitions' marks (recorded by hand, as a relay records them), and
// then pending events after them, of five types, in one statement each.
func fillMarked(t testing.TB, ctx context.Context, s *Store, delivered, pending int) {
	t.Helper()
	// The delivered events have transaction IDs of four events each,
	// long committed (below any snapshot's); the pending ones that of
	// the statement that saves them.
	insert := func(prefix string, n int, xid string) {
		t.Helper()
		stmt := fmt.Sprintf(`INSERT INTO %s (id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at, xid)
SELECT '%s' || g, 'stock', 'type-' || (g %% 5), 'agg-' || (g %% 5000), '\x00'::bytea, now(), now(), %s FROM generate_series(1, %d) g`,
			s.t.Quoted, prefix, xid, n)
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	insert("d-", delivered, "g / 4 + 1")
	mark := "UPDATE " + s.t.Sibling(partitionsSuffix) + " p SET mark_seq = m.s, mark_snap = txid_current_snapshot(), mark_at = now()" +
		" FROM (SELECT partition_no, MAX(seq) AS s FROM " + s.t.Quoted + " GROUP BY partition_no) m WHERE m.partition_no = p.partition_no"
	if _, err := s.db.ExecContext(ctx, mark); err != nil {
		t.Fatal(err)
	}
	insert("p-", pending, "txid_current()")
	for _, tbl := range []string{s.t.Quoted, s.t.Sibling(partitionsSuffix)} {
		if _, err := s.db.ExecContext(ctx, "VACUUM ANALYZE "+tbl); err != nil {
			t.Fatal(err)
		}
	}
}

// markedPlanQueries returns the statements of a Store with watermarks
// that read events, with their arguments.
func markedPlanQueries(s *Store, now time.Time) map[string]*query {
	qs := map[string]*query{
		"stats pending": newQuery(s.sx).sql(s.markedPendingStatsQuery()),
		"count pending": s.markedCountQuery(PageQuery{State: StatePending}),
		"oldest":        newQuery(s.sx).sql(s.markedOldestQuery()),
	}
	for _, pq := range []PageQuery{{State: StatePending}, {State: StateSynced}, {State: StatePending, After: "0.100"},
		{State: StateSynced, After: strconv.FormatInt(now.UnixMicro(), 10) + ".100"}} {
		c, _ := parseCursor(pq.State, pq.After)
		qs["page "+string(pq.State)+" after "+pq.After] = s.markedPageQuery(pq, c, 51)
	}
	for _, st := range []outbox.Status{outbox.StatusPending, outbox.StatusSynced} {
		qs["list "+string(st)], _ = s.markedList(ListFilter{Status: st}, 100)
	}
	purge := newQuery(s.sx)
	s.markedPurge(purge, s.sx.Time(now.Add(-time.Hour)), 1000)
	qs["purge"] = purge
	return qs
}

// The reads of a Store with watermarks never scan the events table: on a
// table whose delivered events the pending indexes still hold, they read
// through the indexes of the partitions' marks (planned as they run,
// without JIT compilation). OUTBOX_TEST_EXPLAIN set logs the plans, run
// (ANALYZE), on a million delivered events.
func TestMarkedPlans(t *testing.T) {
	b := markBundle(t)
	delivered, options := 50_000, ""
	if os.Getenv("OUTBOX_TEST_EXPLAIN") != "" {
		delivered, options = 1_000_000, "(ANALYZE, BUFFERS) "
	}
	fillMarked(t, t.Context(), b.store, delivered, 2_000)
	scan := "Seq Scan on " + b.table + " "
	for name, q := range markedPlanQueries(b.store, b.clock.Now()) {
		var lines []string
		err := b.store.markedTx(t.Context(), true, func(tx *sqlx.Tx) error {
			return tx.SelectContext(t.Context(), &lines, "EXPLAIN "+options+q.String(), q.args...)
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, scan) {
			t.Errorf("%s scans the table:\n%s\n%s", name, q.String(), plan)
		}
		if options != "" {
			t.Logf("%s:\n%s", name, plan)
		}
	}
}

// BenchmarkMarkedStats compares, on a table of a Store with watermarks
// whose pending indexes hold OUTBOX_BENCH_DELIVERED delivered events
// (200,000 unless set) and 2,000 pending ones, the pending figures of
// Stats (window 0: the pending figures and the dead count), read per
// partition from the marks (marks), with the statement Stats ran before
// (probe: one probe of the partitions row per event of the pending
// index, as the claims check), planned as Postgres is configured (JIT
// compilation on by default) and without JIT (probe-nojit).
//
//	OUTBOX_TEST_POSTGRES=... go test -run '^$' -bench MarkedStats -count 3 ./sqlstore
func BenchmarkMarkedStats(b *testing.B) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		b.Skip("set " + envPostgres)
	}
	delivered := 200_000
	if v, err := strconv.Atoi(os.Getenv("OUTBOX_BENCH_DELIVERED")); err == nil && v > 0 {
		delivered = v
	}
	db, err := sqlx.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	s, err := New(db, WithTable(randomName("outbox_bench_")), WithWatermarks())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Drop(context.Background()) })
	fillMarked(b, ctx, s, delivered, 2_000)
	b.Run("marks", func(b *testing.B) {
		for b.Loop() {
			if st, err := s.Stats(ctx, 0); err != nil || st.Pending != 2_000 {
				b.Fatalf("Stats = %+v, %v; want 2000 pending", st, err)
			}
		}
	})
	probe := "SELECT c.event_type, COUNT(*), MIN(c.created_at) FROM " + s.t.Quoted + " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL" +
		s.notMarked("c") + " GROUP BY c.event_type"
	for _, jit := range []bool{true, false} {
		name := map[bool]string{true: "probe", false: "probe-nojit"}[jit]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error {
					if jit {
						if _, err := tx.ExecContext(ctx, "SELECT set_config('jit', 'on', true)"); err != nil {
							return err
						}
					}
					var total int64
					rows, err := tx.QueryContext(ctx, probe)
					if err != nil {
						return err
					}
					for rows.Next() {
						var typ string
						var n int64
						var first time.Time
						if err := rows.Scan(&typ, &n, &first); err != nil {
							return err
						}
						total += n
					}
					if err := rows.Close(); err != nil || total != 2_000 {
						return fmt.Errorf("%d pending, %v; want 2000", total, err)
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
