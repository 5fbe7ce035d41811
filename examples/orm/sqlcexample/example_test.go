package sqlcexample_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/sqlcexample"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The wiring of a service on sqlc and pgx: the outbox's store runs on the
// same pgx pool through database/sql, and SetQty writes the stock row and
// its event in one pgx transaction.
// (Compiled, not run: it needs a database; the tests run the same code.)
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlstore.New(sqlx.NewDb(stdlib.OpenDBFromPool(pool), "pgx"))
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	pub, err := redisstream.New(redis.NewClient(&redis.Options{Addr: "localhost:6379"}))
	if err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(store, pub)
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = ob.Run(ctx) }() // the relay, for what Publish could not send

	inv := &sqlcexample.Inventory{Pool: pool, Outbox: ob}
	if err := inv.SetQty(ctx, "sku-42", 7); err != nil {
		log.Fatal(err)
	}
}
