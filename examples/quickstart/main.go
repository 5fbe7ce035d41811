// Command quickstart saves a stock change and its event in one Postgres
// transaction, lets the outbox get the event to a Redis stream, and runs
// the relay until Ctrl-C.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver for database/sql
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

func main() {
	// A context that ends on Ctrl-C (SIGINT) or SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
	log.Print("stopped")
}

func run(ctx context.Context) error {
	db, err := sqlx.Open("pgx", env("DATABASE_URL", "postgres://postgres@localhost:5432/postgres?sslmode=disable"))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlstore.New(db) // the dialect comes from the driver's name
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx); err != nil { // creates the table outbox_events
		return err
	}
	// The business table of this example.
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS stock (id text PRIMARY KEY, quantity int NOT NULL)`); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO stock VALUES ('sku-42', 10) ON CONFLICT DO NOTHING`); err != nil {
		return err
	}

	opts, err := redis.ParseURL(env("REDIS_URL", "redis://localhost:6379/0"))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	pub, err := redisstream.New(rdb) // one stream per topic
	if err != nil {
		return err
	}
	ob, err := outbox.New(store, pub)
	if err != nil {
		return err
	}

	// The relay delivers what was not published at once, until ctx ends.
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- ob.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }() // stop it and wait until it has

	res, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE stock SET quantity = quantity - 2 WHERE id = $1`, "sku-42"); err != nil {
			return err
		}
		return tx.Save(ctx, &outbox.Event{
			Topic: env("TOPIC", "inventory.events"), Type: "stock.updated", AggregateID: "sku-42",
			Payload: []byte(`{"change":-2}`),
		})
	})
	if err != nil {
		return err // rolled back: no stock change, no event
	}
	for _, o := range res.Outcomes {
		log.Printf("event %s: %s", o.ID, o) // "acknowledged", or "handed to the relay: ..."
	}
	log.Print("relay running; Ctrl-C to stop")
	<-ctx.Done()
	return nil
}

// env returns the environment variable name, or def if it is not set.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
