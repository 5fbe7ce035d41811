package sqlstore

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/eventsync/outbox"
)

// The view <table>_delivery says of every event what Get says: delivered
// (synced) or not, and by when; with watermarks and without.
func TestDeliveryView(t *testing.T) {
	eachMarkDialect(t, testDeliveryView)
}

func testDeliveryView(t *testing.T, d Dialect) {
	plain := setup(t, d)
	events := plain.newEvents(4)
	plain.save(t, events...)
	c := plain.claim(t, 2)
	plain.mark(t, c, c.Events...)
	for name, b := range map[string]*bundle{"watermarks": newMarkSceneOn(t, d).b, "without": plain} {
		rows, err := b.db.QueryContext(t.Context(), "SELECT id, delivered, delivered_at FROM "+b.store.t.Sibling(deliveryViewSuffix))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := 0
		for rows.Next() {
			var id string
			var delivered bool
			var at dbTime // NULL: zero
			if err := rows.Scan(&id, &delivered, &at); err != nil {
				t.Fatal(err)
			}
			n++
			e, err := b.store.Get(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if synced := e.Delivery.Status() == outbox.StatusSynced; delivered != synced || at.IsZero() == synced || !at.IsZero() && !at.Time.Equal(e.Delivery.SyncedAt) {
				t.Errorf("%s: the view says of %s delivered %v at %v, Get %+v", name, id, delivered, at, e.Delivery)
			}
		}
		if err := rows.Close(); err != nil || n == 0 {
			t.Fatalf("%s: %d rows, %v", name, n, err)
		}
	}
}

// The monitoring SQL of docs/operations.md for Postgres gives, under
// watermarks, the figures Stats gives.
func TestMarkedMonitoringSQL(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```sql\n-- postgres\n(.*?)```").FindStringSubmatch(string(doc))
	if block == nil {
		t.Fatal("docs/operations.md has no Postgres block")
	}
	var queries []string
	for _, stmt := range strings.Split(block[1], ";") {
		var lines []string
		for _, line := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "--") {
				lines = append(lines, line)
			}
		}
		if q := strings.TrimSpace(strings.Join(lines, "\n")); q != "" {
			queries = append(queries, q)
		}
	}
	if len(queries) != 4 {
		t.Fatalf("%d queries, want 4", len(queries))
	}
	sc := newMarkScene(t)
	for i := range queries {
		queries[i] = strings.ReplaceAll(queries[i], DefaultTable, sc.b.table)
	}
	ctx := t.Context()
	var pending int64
	rows, err := sc.b.db.QueryContext(ctx, queries[0])
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		pending += n
	}
	if err := rows.Close(); err != nil || pending != 6 {
		t.Errorf("pending by type sums to %d (%v), want 6", pending, err)
	}
	var oldest, avg float64
	if err := sc.b.db.QueryRowContext(ctx, queries[1]).Scan(&oldest); err != nil || oldest < 0 || oldest > 60 {
		t.Errorf("oldest pending %.1fs, %v; want a few seconds (the late event, saved at the test's start)", oldest, err)
	}
	want := (12*0.010 + 120) / 13
	if err := sc.b.db.QueryRowContext(ctx, queries[2]).Scan(&avg); err != nil || avg < want-0.01 || avg > want+0.01 {
		t.Errorf("average sync latency %.3fs, %v; want %.3fs", avg, err, want)
	}
	var dead int
	if err := sc.b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ("+queries[3]+") d").Scan(&dead); err != nil || dead != 1 {
		t.Errorf("%d dead listed, %v; want 1", dead, err)
	}
}

// A table in another schema has its deliveries table and delivery view
// in that schema, and Drop finds them there.
func TestDeliveryViewInTableSchema(t *testing.T) {
	db := openDB(t, Postgres)
	ctx := t.Context()
	schema, name := randomName("outbox_schema_"), randomName("outbox_view_")
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP SCHEMA "+schema) })
	s := newStore(t, db, schema+"."+name)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	in := func() (n int) {
		t.Helper()
		err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name IN ($2, $3)",
			schema, name+deliveriesSuffix, name+deliveryViewSuffix).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := in(); n != 2 {
		t.Fatalf("%d of the deliveries table and the view in schema %s, want both", n, schema)
	}
	if err := s.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := in(); n != 0 {
		t.Fatalf("Drop left %d of them", n)
	}
}
