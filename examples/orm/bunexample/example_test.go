package bunexample_test

import (
	"context"
	"database/sql"
	"log"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/bunexample"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The wiring of a service on bun: the outbox's store shares bun's pool,
// and SetQty writes the stock row and its event in one bun transaction.
// (Compiled, not run: it needs a database; the tests run the same code.)
func Example() {
	ctx := context.Background()
	sqlDB, err := sql.Open("pgx", "postgres://app@localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	db := bun.NewDB(sqlDB, pgdialect.New())
	store, err := sqlstore.New(sqlx.NewDb(sqlDB, "pgx"))
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

	inv := &bunexample.Inventory{DB: db, Outbox: ob}
	if err := inv.SetQty(ctx, "sku-42", 7); err != nil {
		log.Fatal(err)
	}
}
