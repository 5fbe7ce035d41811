package outboxui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// On a Store with watermarks the console shows the events the relays'
// marks delivered as synced: in the overview's figures and chart, on the
// synced page and the event's page, and never among the pending.
func TestWatermarks(t *testing.T) {
	db := openPostgres(t)
	table := randomName("outboxui_test_")
	store, err := sqlstore.New(db, sqlstore.WithTable(table), sqlstore.WithWatermarks(), sqlstore.WithRelayName(randomName("wm-")))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = store.Leave(ctx)
		if err := store.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	b := &bundle{db: db, table: table, store: store}
	var delivered, pending []*outbox.Event
	for i := range 5 {
		delivered = append(delivered, event(fmt.Sprintf("del-%04d", i), "stock", "stock.updated", fmt.Sprintf("sku-%d", i), time.Now()))
	}
	b.save(t, delivered...)
	if _, _, err := store.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute})
	if err != nil || len(c.Events) != 5 {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	if n, err := store.MarkSynced(ctx, c.Token, []string{"del-0000", "del-0001", "del-0002", "del-0003", "del-0004"}); err != nil || n != 5 {
		t.Fatalf("MarkSynced = %d, %v", n, err)
	}
	if _, _, err := store.Heartbeat(ctx); err != nil { // records the marks
		t.Fatal(err)
	}
	if n := b.count(t, "synced_at IS NOT NULL"); n != 0 {
		t.Fatalf("%d events have synced_at: the test proves nothing", n)
	}
	for i := range 2 {
		pending = append(pending, event(fmt.Sprintf("pen-%04d", i), "stock", "stock.updated", fmt.Sprintf("sku-%d", 10+i), time.Now()))
	}
	b.save(t, pending...)

	h, err := New(store)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := srv.URL + "/outbox/"
	cl := client(t)
	for _, tc := range []struct {
		path      string
		want, not []string
	}{
		{"", []string{`id="pending">2<`, `id="synced">5<`, "the latest 5 synced"}, nil},
		{"events?state=pending", []string{"pen-0000", "pen-0001"}, []string{"del-000"}},
		{"events?state=synced", []string{"del-0000", "del-0004"}, []string{"pen-000"}},
		{"event?id=del-0002", []string{`id="status">synced<`}, nil},
		{"relays", []string{`id="partitions"`}, nil},
	} {
		code, body := get(t, cl, base+tc.path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", tc.path, code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", tc.path, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(body, w) {
				t.Errorf("GET %s: %q in the page", tc.path, w)
			}
		}
	}
}
