package sqlstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
)

// WithWatermarks is accepted on SQLite and Postgres, refused on MySQL and
// beside WithRowLeases.
func TestWatermarksDialects(t *testing.T) {
	db := openDB(t, SQLite)
	for _, c := range []struct {
		opts []Option
		ok   bool
	}{
		{[]Option{WithDialect(SQLite), WithWatermarks()}, true},
		{[]Option{WithDialect(Postgres), WithWatermarks()}, true},
		{[]Option{WithDialect(MySQL), WithWatermarks()}, false},
		{[]Option{WithDialect(SQLite), WithWatermarks(), WithRowLeases()}, false},
	} {
		_, err := New(db, c.opts...)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, outbox.ErrInvalidConfig)) {
			t.Errorf("New with %d options: %v, want ok %v", len(c.opts), err, c.ok)
		}
	}
}

// On SQLite a read's snapshot is the highest seq it saw (seqSnapshot)
// and a row's xid its seq. A front moves over the events delivered ahead
// only up to that seq: an event that committed after the read began,
// with a seq below an ahead one's, was not read, and must not be passed
// over.
func TestSQLiteFrontMovesOverAheadOnlyUpToTheRead(t *testing.T) {
	l := marking(mark{seq: 1, snap: seesAll})
	l.mu.Lock()
	l.deliveredLocked(0, "e5", 5, 5) // committed after the read below began
	l.deliveredLocked(0, "e3", 3, 3) // before it
	l.mu.Unlock()
	readMarked(l, "c1", seqSnapshot(3), markRow(2, "B", 2, "r"))
	front := l.fronts(map[int]int64{0: 1})[0]
	if front.seq != 3 || !front.covers(3, 3) || front.covers(4, 4) {
		t.Fatalf("front %+v: want seq 3, over e3 (seen), not e4 or e5 (committed after the read)", front)
	}
	// e4 took its seq after the read (below e5's): the next read finds
	// it after the front, and passes e5.
	if got := readMarked(l, "c2", seqSnapshot(5), markRow(4, "C", 4, "r")); !slices.Equal(got, []string{"e4"}) {
		t.Fatalf("took %v, want e4", got)
	}
	if front := l.fronts(map[int]int64{0: 1})[0]; front.seq != 5 {
		t.Fatalf("front seq %d, want 5: over e4 (read) and e5 (ahead, seen)", front.seq)
	}
	// A mark loaded from the table sees every seq up to its own.
	if m, err := newMark(7, seesAll); err != nil || !m.covers(7, 7) || m.covers(8, 8) {
		t.Fatalf("mark (7, seesAll) = %+v, %v: want it to cover seq 7, not 8", m, err)
	}
}

// Migration 007: the rows saved before it are delivered per row (xid
// NULL), those saved after by their partition's mark; a relay with
// watermarks delivers both, writing synced_at for the first only.
func TestSQLiteWatermarkMigration(t *testing.T) {
	db := openDB(t, SQLite)
	ctx := t.Context()
	s := newStore(t, db, randomName("outbox_test_"), WithWatermarks())
	clock := newTestClock()
	useClock(s, clock)
	b := &bundle{store: s, db: db, clock: clock, table: s.t.Name}
	ms, err := ddl.Migrations(SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, s.t.MigrationsDDL()); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version >= 7 {
			break
		}
		for _, stmt := range sqlschema.Statements(m.SQL) {
			if _, err := db.ExecContext(ctx, s.t.Rename(stmt)); err != nil {
				t.Fatalf("migration %d: %v", m.Version, err)
			}
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO "+s.t.MigrationsTable()+" (version, name, applied_at) VALUES (?, ?, '')", m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	before := b.run("A", 2)
	b.save(t, before...)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	after := b.run("A", 2)
	b.save(t, after...)
	var perRow, byMark int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FILTER (WHERE xid IS NULL), COUNT(*) FILTER (WHERE xid = 1) FROM "+s.t.Quoted).Scan(&perRow, &byMark); err != nil {
		t.Fatal(err)
	}
	if perRow != 2 || byMark != 2 {
		t.Fatalf("%d rows per row and %d by mark, want 2 and 2", perRow, byMark)
	}
	equalIDs(t, "the drain", b.drain(t, 10), ids(append(before, after...)))
	if synced, parked := b.perRowWrites(t); synced != 2 || parked != 2 {
		t.Fatalf("%d synced_at written, %d per row; want the 2 saved before the migration", synced, parked)
	}
	if st, err := s.Stats(ctx, time.Hour); err != nil || st.Pending != 0 || st.Synced != 4 {
		t.Fatalf("Stats = %+v, %v; want 4 synced, none pending", st, err)
	}
}

// The SQLite statements of a Store with watermarks read the events table
// through an index, never by a scan of it, as prepared on a small table
// and after ANALYZE on a table that holds thousands of delivered events.
func TestSQLiteWatermarkPlans(t *testing.T) {
	b := markBundleOn(t, SQLite)
	ctx := t.Context()
	o := ownerOf(b.store)
	b.beat(t)
	for range 5 {
		b.save(t, b.run("A", 1000)...)
	}
	b.drain(t, 1000)
	b.save(t, b.event("A", 0), b.event("B", 3))
	for _, when := range []string{"as prepared", "after ANALYZE"} {
		if when == "after ANALYZE" {
			if _, err := b.db.ExecContext(ctx, "ANALYZE"); err != nil {
				t.Fatal(err)
			}
		}
		b.beat(t) // the partition claimable, however long the drain took
		owned := o.l.claimable(o.clock(), o.every)
		if len(owned) == 0 {
			t.Fatal("no claimable partition after a heartbeat")
		}
		fronts := o.l.fronts(owned)
		cr := claimRun{token: "plan", now: b.clock.Now(), ordered: true}
		qs := markedPlanQueries(b.store, b.clock.Now())
		delete(qs, "oldest") // Postgres only: SQLite counts exactly
		qs["relay read"] = o.marksQuerySQLite(cr, owned, fronts, 10, 20, []string{"X"}, []int64{1})
		qs["claim by IDs"] = o.idsMarkedQuerySQLite(cr, fronts, 10, []string{"id-1", "id-2"})
		qs["get"] = newQuery(b.store.sx).sql("SELECT ", b.store.eventCols(b.store.markedSynced()), " FROM ", b.store.t.Quoted, " c WHERE c.id = 'x'")
		for name, q := range qs {
			rows, err := b.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q.String(), q.args...)
			if err != nil {
				t.Fatalf("%s: %s: %v\n%s", when, name, err, q.String())
			}
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, fmt.Sprint(id, " ", parent, " ", detail))
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
			// A scan of a subquery, of a CTE or of the partitions table
			// (w) is not one of the events table.
			derived := map[string]bool{"w": true, "c": name == "claim by IDs"} // there c is the CTE ids
			for _, line := range plan {
				if f := strings.Fields(line)[2:]; len(f) == 2 && (f[0] == "CO-ROUTINE" || f[0] == "MATERIALIZE") {
					derived[f[1]] = true
				}
			}
			for _, line := range plan {
				if f := strings.Fields(line)[2:]; len(f) == 2 && f[0] == "SCAN" && !derived[f[1]] && !strings.HasPrefix(f[1], "(") {
					t.Errorf("%s: %s scans the events table:\n%s", when, name, strings.Join(plan, "\n"))
				}
			}
		}
	}
}
