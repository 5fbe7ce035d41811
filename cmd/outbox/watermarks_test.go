package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// On a table whose relays record delivery by watermarks, the tool reads
// the events their marks delivered as synced: status counts them synced,
// not pending, and list and show say so.
func TestWatermarks(t *testing.T) {
	tg := newTarget(t, sqlstore.Postgres)
	ok(t, tg.args("migrate")...)
	ctx := t.Context()
	relay, err := sqlstore.New(tg.db, sqlstore.WithTable(tg.table), sqlstore.WithWatermarks(), sqlstore.WithRelayName("wm-cli"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Leave(ctx) })
	save := func(n int) []*outbox.Event {
		t.Helper()
		var events []*outbox.Event
		for i := range n {
			events = append(events, &outbox.Event{ID: outbox.NewID(), Topic: "stock", Type: "stock.ok", AggregateID: fmt.Sprintf("sku-%d", i),
				Payload: []byte("{}"), CreatedAt: time.Now()})
		}
		tx, err := tg.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := relay.Insert(ctx, tx, events); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return events
	}
	beat := func() {
		t.Helper()
		if _, _, err := relay.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	delivered := save(3)
	beat()
	c, err := relay.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute})
	if err != nil || len(c.Events) != 3 {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	var claimed []string
	for _, e := range c.Events {
		claimed = append(claimed, e.ID)
	}
	if n, err := relay.MarkSynced(ctx, c.Token, claimed); err != nil || n != 3 {
		t.Fatalf("MarkSynced = %d, %v", n, err)
	}
	beat() // records the marks
	pending := save(1)

	st := tg.status(t)
	if st.Pending != 1 || st.Synced != 3 || st.Dead != 0 {
		t.Fatalf("status: %d pending, %d synced, %d dead; want 1 pending, 3 synced", st.Pending, st.Synced, st.Dead)
	}
	var listed []eventJSON
	if err := json.Unmarshal([]byte(ok(t, tg.args("list", "--status", "synced", "--json")...)), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 || listed[0].Status != outbox.StatusSynced || listed[0].SyncedAt == nil {
		t.Fatalf("list --status synced: %+v; want the 3 delivered, synced", listed)
	}
	var shown eventJSON
	if err := json.Unmarshal([]byte(ok(t, tg.args("show", "--json", delivered[0].ID)...)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Status != outbox.StatusSynced {
		t.Errorf("show of a delivered event: %+v", shown)
	}
	if err := json.Unmarshal([]byte(ok(t, tg.args("list", "--status", "pending", "--json")...)), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != pending[0].ID {
		t.Errorf("list --status pending: %+v; want the one saved after", listed)
	}
}
