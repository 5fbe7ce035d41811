package sqlstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// A service writes its events in its own transaction; the relay delivers
// them. Here on SQLite, with a publisher that acknowledges everything.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	dsn := "file:" + filepath.Join(dir, "app.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)"
	db, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	store, err := sqlstore.New(db) // the dialect follows the driver name
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	o, err := outbox.New(store, outbox.Noop{})
	if err != nil {
		log.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	// ... the business writes go through tx here ...
	err = o.Save(ctx, tx, &outbox.Event{Topic: "stock", Type: "stock.updated", AggregateID: "sku-42", Payload: []byte(`{"qty":7}`)})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	st, _ := store.Stats(ctx, time.Hour)
	fmt.Println("pending before the relay:", st.Pending)
	res, err := o.SyncPending(ctx, 0)
	if err != nil {
		log.Fatal(err)
	}
	st, _ = store.Stats(ctx, time.Hour)
	fmt.Println("synced:", res.Synced, "pending:", st.Pending)
	// Output:
	// pending before the relay: 1
	// synced: 1 pending: 0
}

// Schema prints the SQL that Migrate applies, for review or for another
// migration tool.
func ExampleSchema() {
	sql, err := sqlstore.Schema(sqlstore.Postgres, "app.outbox_events")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sql[:strings.Index(sql, "\n")])
	// Output:
	// CREATE TABLE IF NOT EXISTS "app"."outbox_events" (
}
