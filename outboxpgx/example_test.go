package outboxpgx_test

import (
	"context"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxpgx"
	"github.com/eventsync/outbox/redisstream"
)

// A service on pgx saves its stock change and its event in one pgx
// transaction, publishes the event after commit, and runs the relay on
// the same pool. It needs a Postgres server and a Redis server, so it is
// compiled but not run; TestSaveJoinsPgxTx runs the same steps.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store, err := outboxpgx.New(pool) // sqlstore's schema and SQL, on the pool
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // the pool stays open
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()
	pub, err := redisstream.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	ob, err := outbox.New(store, pub)
	if err != nil {
		log.Fatal(err)
	}
	relay, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = ob.Run(relay) }() // wakes on Postgres notifications

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	if _, err := tx.Exec(ctx, "UPDATE stock SET qty = qty - 1 WHERE sku = $1", "sku-42"); err != nil {
		log.Fatal(err)
	}
	ev := &outbox.Event{Topic: "stock", Type: "stock.updated", AggregateID: "sku-42", Payload: []byte(`{"qty":6}`)}
	if err := ob.Save(ctx, outboxpgx.Exec(tx), ev); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	// At once after commit; if this fails, the relay delivers it.
	_, _ = ob.Publish(ctx, ev)
}
