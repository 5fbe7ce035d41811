package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// openExampleDB opens a fresh SQLite database with the outbox table; a
// service would open its own PostgreSQL or MySQL database instead.
func openExampleDB(ctx context.Context) (*sqlx.DB, *sqlstore.Store, func()) {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	store, err := sqlstore.New(db)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER)`); err != nil {
		log.Fatal(err)
	}
	return db, store, func() { db.Close(); os.RemoveAll(dir) }
}

// printer is a Publisher that prints what it is given, for the examples.
var printer = outbox.PublisherFunc(func(_ context.Context, events []*outbox.Event) error {
	for _, e := range events {
		fmt.Printf("published %s %s %s\n", e.Type, e.AggregateID, e.Payload)
	}
	return nil
})

// Transact runs the business write and Save in one transaction, commits,
// and publishes the saved events at once.
func ExampleOutbox_Transact() {
	ctx := context.Background()
	db, store, done := openExampleDB(ctx)
	defer done()

	ob, err := outbox.New(store, printer)
	if err != nil {
		log.Fatal(err)
	}
	res, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO stock (sku, qty) VALUES ('sku-42', 7)`); err != nil {
			return err
		}
		return tx.Save(ctx, &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: "sku-42", Payload: []byte(`{"qty":7}`)})
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range res.Outcomes {
		fmt.Println(o.Fate) // acknowledged, handed to the relay, waiting for a retry, or dead
	}
	// Output:
	// published stock.updated sku-42 {"qty":7}
	// acknowledged
}

// With a broker that is down, the event stays pending in the table; one
// relay pass delivers it once the broker is back.
func ExampleOutbox_SyncPending() {
	ctx := context.Background()
	db, store, done := openExampleDB(ctx)
	defer done()

	brokerUp := false
	pub := outbox.PublisherFunc(func(ctx context.Context, events []*outbox.Event) error {
		if !brokerUp {
			return errors.New("connection refused")
		}
		return printer(ctx, events)
	})
	ob, err := outbox.New(store, pub)
	if err != nil {
		log.Fatal(err)
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	ev := &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: "sku-42", Payload: []byte(`{"qty":6}`)}
	if err := ob.Save(ctx, tx, ev); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	if _, err := ob.Publish(ctx, ev); err != nil {
		fmt.Println("not now:", err) // the event is safe in the table
	}

	brokerUp = true
	res, err := ob.SyncPending(ctx, 0) // what Run does on every pass
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("synced %d, failed %d\n", res.Synced, res.Failed)
	// Output:
	// not now: outbox: publish: 1 of 1 events not acknowledged: 1 waiting for a retry
	// published stock.updated sku-42 {"qty":6}
	// synced 1, failed 0
}
