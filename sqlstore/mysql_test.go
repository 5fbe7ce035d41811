package sqlstore

import (
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/eventsync/outbox"
)

// Times are written and read as UTC whatever the DSN says about parseTime,
// loc and the session time zone.
func TestMySQLTimesIgnoreDSN(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		tokyo = time.FixedZone("JST", 9*3600)
	}
	for name, change := range map[string]func(*mysql.Config){
		"plain": func(c *mysql.Config) { c.ParseTime = false },
		"parseTime with loc and time_zone": func(c *mysql.Config) {
			c.ParseTime, c.Loc = true, tokyo
			c.Params = map[string]string{"time_zone": "'+09:00'"}
		},
		"interpolateParams": func(c *mysql.Config) { c.InterpolateParams, c.ParseTime = true, true },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := open(t, "mysql", mysqlDSN(t, change))
			s := newStore(t, db, randomName("outbox_tz_"))
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			b := &bundle{store: s, db: db, clock: newTestClock()}
			useClock(s, b.clock)
			created := time.Date(2025, 6, 30, 22, 30, 0, 123456000, time.UTC)
			e := &outbox.Event{ID: outbox.NewID(), Topic: "t", Type: "x", CreatedAt: created.In(tokyo)}
			b.save(t, e)
			var raw string
			if err := db.QueryRowContext(t.Context(), "SELECT CAST(created_at AS CHAR) FROM "+s.t.Quoted).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if raw != "2025-06-30 22:30:00.123456" {
				t.Fatalf("stored created_at %q, want the UTC wall time", raw)
			}
			got, err := s.Get(t.Context(), e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(created) || !got.Delivery.NextAttemptAt.Equal(b.clock.Now()) {
				t.Fatalf("read back created %v, due %v; want %v, %v", got.CreatedAt, got.Delivery.NextAttemptAt, created, b.clock.Now())
			}
			if c := b.claim(t, 10); len(c.Events) != 1 {
				t.Fatalf("claimed %d events, want 1", len(c.Events))
			}
		})
	}
}

// A schema-qualified table works on the servers (the schema is Postgres's
// public schema, or the DSN's database on MySQL).
func TestSchemaQualifiedTable(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db := openDB(t, d)
			schema := "public"
			if d == MySQL {
				if err := db.QueryRowContext(t.Context(), "SELECT DATABASE()").Scan(&schema); err != nil {
					t.Fatal(err)
				}
			}
			s := newStore(t, db, schema+"."+randomName("outbox_q_"))
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			b := &bundle{store: s, db: db, clock: newTestClock()}
			events := b.newEvents(2)
			b.save(t, events...)
			equalIDs(t, "claimed", ids(b.claim(t, 10).Events), ids(events))
		})
	}
}
