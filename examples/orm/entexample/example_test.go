package entexample_test

import (
	"context"
	"database/sql"
	"log"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/entexample"
	"github.com/eventsync/outbox/examples/orm/entexample/ent"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The wiring of a service on ent: the outbox's store shares ent's pool,
// and SetQty writes the stock row and its event in one ent transaction.
// (Compiled, not run: it needs a database; the tests run the same code.)
func Example() {
	ctx := context.Background()
	sqlDB, err := sql.Open("pgx", "postgres://app@localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	client := ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, sqlDB)))
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

	inv := &entexample.Inventory{Client: client, Outbox: ob}
	if err := inv.SetQty(ctx, "sku-42", 7); err != nil {
		log.Fatal(err)
	}
}
