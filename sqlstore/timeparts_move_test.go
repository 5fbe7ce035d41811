package sqlstore

import (
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// TestMoveToTimePartitions runs the documented move of an existing table
// to the time-partitioned layout (layouts/postgres_move_to_time_partitions.sql)
// while it holds delivered and pending events: nothing is copied, Migrate
// with the option accepts the table and creates the partitions from the
// cutover, the pending events are delivered, saves land before and after
// the cutover, and retention drops the old table once it is past the
// retention age and delivered, leaving the sequence to the new table.
func TestMoveToTimePartitions(t *testing.T) {
	b := setup(t, Postgres)
	ctx := t.Context()
	delivered, pending := b.newEvents(3), b.newEvents(2)
	for i, e := range pending {
		e.AggregateID = "pending-" + string(rune('a'+i))
	}
	b.save(t, delivered...)
	c := b.claim(t, 10)
	b.mark(t, c, c.Events...)
	b.save(t, pending...)
	if err := b.store.Leave(ctx); err != nil {
		t.Fatal(err)
	}

	cutover := b.clock.Now().Truncate(24 * time.Hour).Add(24 * time.Hour)
	sqlText, err := layoutFiles.ReadFile("layouts/postgres_move_to_time_partitions.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := b.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, stmt := range sqlschema.Statements(string(sqlText)) {
		stmt = strings.ReplaceAll(b.store.t.Rename(stmt), "2030-01-01 00:00:00+00", cutover.Format("2006-01-02 15:04:05+00"))
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	// Every index of the partitioned table attached one of the old
	// table's: eight partial ones, the primary key, the unique
	// (id, created_at) and the old unique id, none built twice.
	var indexes int
	if err := b.db.QueryRowContext(ctx, "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass($1)", b.store.t.Sibling("_legacy")).Scan(&indexes); err != nil || indexes != 11 {
		t.Fatalf("the old table has %d indexes (%v), want 11", indexes, err)
	}

	s := newStore(t, b.db, b.table, WithTimePartitions(0, 2*24*time.Hour))
	useClock(s, b.clock)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate after the move: %v", err)
	}
	st, err := s.TimePartitions(ctx)
	if err != nil || !st.Partitioned || !st.Default || !st.Oldest.IsZero() || st.Runway < 2*24*time.Hour || st.Partitions < 3 {
		t.Fatalf("after the move: %+v, %v", st, err)
	}
	mb := &bundle{store: s, db: b.db, clock: b.clock, table: b.table}
	equalIDs(t, "the pending events after the move", mb.drain(t, 10), ids(pending))

	before := mb.newEvents(2)
	mb.save(t, before...)
	b.clock.Advance(cutover.Sub(b.clock.Now()) + time.Hour)
	after := mb.newEvents(2)
	mb.save(t, after...)
	if st, err := s.TimePartitions(ctx); err != nil || st.DefaultRows != 0 {
		t.Fatalf("saves around the cutover reached the default partition: %+v, %v", st, err)
	}
	var inLegacy int
	if err := b.db.QueryRowContext(ctx, "SELECT count(*) FROM "+b.store.t.Sibling("_legacy")).Scan(&inLegacy); err != nil {
		t.Fatal(err)
	}
	if inLegacy != 7 {
		t.Fatalf("%d events in the old table, want 7 (5 from before the move, 2 saved before the cutover)", inLegacy)
	}
	equalIDs(t, "delivered around the cutover", mb.drain(t, 10), ids(append(before, after...)))

	b.clock.Advance(2 * time.Hour)
	n, err := s.Purge(ctx, time.Hour, 1000)
	wantN(t, "Purge of the old table", n, err, 7)
	var gone bool
	if err := b.db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NULL", b.store.t.Sibling("_legacy")).Scan(&gone); err != nil || !gone {
		t.Fatalf("the old table after retention: gone %v, %v", gone, err)
	}
	last := mb.newEvents(1)
	mb.save(t, last...) // the sequence outlived the old table
	equalIDs(t, "after the old table was dropped", mb.drain(t, 10), ids(last))
}
