package outbox_test

import (
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// On a real store, Transact's result tells an event the broker
// acknowledged from one held behind an earlier event of its aggregate
// that a relay has in flight.
func TestTransactSaysWhatHappened(t *testing.T) {
	ctx := t.Context()
	db, store, done := openExampleDB(ctx)
	defer done()
	ob, err := outbox.New(store, outbox.Noop{})
	if err != nil {
		t.Fatal(err)
	}
	save := func(agg string) (outbox.Result, error) {
		return ob.Transact(ctx, db, func(tx *outbox.Tx) error {
			return tx.Save(ctx, &outbox.Event{Topic: "t", Type: "x", AggregateID: agg})
		})
	}
	res, err := save("sku-1")
	if err != nil || len(res.Outcomes) != 1 || res.Outcomes[0].Fate != outbox.Acknowledged {
		t.Fatalf("broker up: %+v, %v", res.Outcomes, err)
	}

	// Save an event of sku-3 without publishing it and claim it as a relay
	// would; a second event of sku-3 then waits behind it.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := &outbox.Event{Topic: "t", Type: "x", AggregateID: "sku-3"}
	if err := ob.Save(ctx, tx, first); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	c, err := store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute, IDs: []string{first.ID}})
	if err != nil || len(c.Events) != 1 {
		t.Fatalf("relay's claim: %v, %v", c, err)
	}
	res, err = save("sku-3")
	if err != nil || len(res.Outcomes) != 1 || res.Outcomes[0].Fate != outbox.HandedToRelay || res.Outcomes[0].Handoff != outbox.InFlight {
		t.Fatalf("behind an event in flight: %+v, %v", res.Outcomes, err)
	}
	if got := res.Outcomes[0].String(); got != "handed to the relay: in flight, or held behind an earlier undelivered event of its aggregate" {
		t.Errorf("in words: %q", got)
	}
}
