package gormexample_test

import (
	"context"
	"log"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/gormexample"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The wiring of a service on GORM: the outbox's store shares GORM's pool,
// and SetQty writes the stock row and its event in one GORM transaction.
// (Compiled, not run: it needs a database; the tests run the same code.)
func Example() {
	ctx := context.Background()
	db, err := gorm.Open(postgres.Open("postgres://app@localhost/app"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		log.Fatal(err)
	}
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

	inv := &gormexample.Inventory{DB: db, Outbox: ob}
	if err := inv.SetQty(ctx, "sku-42", 7); err != nil {
		log.Fatal(err)
	}
}
