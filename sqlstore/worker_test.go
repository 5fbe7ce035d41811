package sqlstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// openSQLite returns a migrated store on a fresh SQLite file.
func openSQLite(t *testing.T) (*sqlstore.Store, *sqlx.DB) {
	t.Helper()
	dsn := "file:" + filepath.Join(t.TempDir(), "outbox.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)"
	db, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := sqlstore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func saveEvents(t *testing.T, o *outbox.Outbox, db *sqlx.DB, n int) []*outbox.Event {
	t.Helper()
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{Topic: "stock", Type: "stock.updated", AggregateID: "sku-1", Payload: []byte("{}")}
	}
	tx, err := db.BeginTxx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Save(t.Context(), tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return events
}

// The seed's no-op publisher case: one relay pass marks everything.
func TestWorkerNoopSyncsEverything(t *testing.T) {
	s, db := openSQLite(t)
	o, err := outbox.New(s, outbox.Noop{})
	if err != nil {
		t.Fatal(err)
	}
	saveEvents(t, o, db, 25)
	res, err := o.SyncPending(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Claimed != 25 || res.Synced != 25 {
		t.Fatalf("SyncPending = %+v, want 25 claimed and synced", res)
	}
	st, err := s.Stats(t.Context(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || st.Synced != 25 {
		t.Fatalf("Stats = %+v, want 25 synced and none pending", st)
	}
}

// The seed's partial failure case: of 4 events 2 fail; only the 2 others
// are marked, the failed ones stay pending with an attempt and an error.
func TestWorkerPartialFailure(t *testing.T) {
	s, db := openSQLite(t)
	var failed map[string]error
	pub := outbox.PublisherFunc(func(_ context.Context, events []*outbox.Event) error {
		failed = map[string]error{events[1].ID: errors.New("nope"), events[3].ID: errors.New("nope")}
		return &outbox.PublishError{Failed: failed}
	})
	o, err := outbox.New(s, pub)
	if err != nil {
		t.Fatal(err)
	}
	saveEvents(t, o, db, 4)
	res, err := o.SyncPending(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Synced != 2 || res.Failed != 2 {
		t.Fatalf("SyncPending = %+v, want 2 synced and 2 failed", res)
	}
	pending, err := s.List(t.Context(), sqlstore.ListFilter{Status: outbox.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 {
		t.Fatalf("%d pending, want 2", len(pending))
	}
	for _, e := range pending {
		if failed[e.ID] == nil || e.Delivery.Attempts != 1 || e.Delivery.LastError != "nope" {
			t.Fatalf("pending event %s: %+v", e.ID, e.Delivery)
		}
	}
}
