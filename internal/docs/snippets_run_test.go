package docs

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// sqliteStore is a migrated store on an SQLite file of the test's own.
func sqliteStore(t *testing.T) (*sqlx.DB, *sqlstore.Store) {
	t.Helper()
	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "docs.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	store, err := sqlstore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return db, store
}

// The operations page's snippets run: Stats counts a pending event, the
// metrics handler serves the table's figures, the readiness handler
// answers, and the tracing hook builds an Outbox.
func TestOperationsSnippetsRun(t *testing.T) {
	db, store := sqliteStore(t)
	ctx := t.Context()
	down := outbox.PublisherFunc(func(context.Context, []*outbox.Event) error { return errors.New("down") })
	ob, err := outbox.New(store, down)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(ctx, tx, &outbox.Event{Topic: "t", Type: "stock.updated", AggregateID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	st, err := stats(ctx, store)
	if err != nil || st.Pending != 1 || st.PendingByType["stock.updated"] != 1 {
		t.Fatalf("stats: %+v, %v", st, err)
	}

	mux := http.NewServeMux()
	ob, err = metrics(store, down, mux)
	if err != nil {
		t.Fatal(err)
	}
	readiness(ob, mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]string{"/metrics": "outbox_events_pending{type=\"stock.updated\"} 1", "/readyz": ""} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s\n%s", path, resp.Status, body)
		}
	}
	if ob, err := tracing(store, down); err != nil || ob == nil {
		t.Errorf("tracing: %v", err)
	}
}

// The publisher of the conformance section holds back the later events
// of an aggregate whose event failed, and reports both.
func TestPublisherSnippetHoldsBack(t *testing.T) {
	var sent []string
	p := &myPublisher{send: func(_ context.Context, e *outbox.Event) error {
		if e.ID == "a1" {
			return errors.New("refused")
		}
		sent = append(sent, e.ID)
		return nil
	}}
	err := p.Publish(t.Context(), []*outbox.Event{{ID: "a1", AggregateID: "a"}, {ID: "b1", AggregateID: "b"}, {ID: "a2", AggregateID: "a"}})
	var pe *outbox.PublishError
	if !errors.As(err, &pe) || strings.Join(sent, ",") != "b1" {
		t.Fatalf("sent %v, error %v", sent, err)
	}
	if !errors.Is(pe.Failed["a2"], outbox.ErrHeldBack) || pe.Failed["a1"] == nil || pe.Failed["b1"] != nil {
		t.Errorf("failures %v", pe.Failed)
	}
}
