// Command quickstartpgx is the quickstart on pgx v5: the stock change and
// its event in one pgx transaction, the store on the same pgxpool.Pool.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxpgx"
	"github.com/eventsync/outbox/redisstream"
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
	pool, err := pgxpool.New(ctx, env("DATABASE_URL", "postgres://postgres@localhost:5432/postgres?sslmode=disable"))
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := outboxpgx.New(pool) // sqlstore's schema and SQL, on the pool
	if err != nil {
		return err
	}
	defer store.Close() // the pool stays open
	if err := store.Migrate(ctx); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS stock (id text PRIMARY KEY, quantity int NOT NULL)`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO stock VALUES ('sku-42', 10) ON CONFLICT DO NOTHING`); err != nil {
		return err
	}

	opts, err := redis.ParseURL(env("REDIS_URL", "redis://localhost:6379/0"))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	pub, err := redisstream.New(rdb)
	if err != nil {
		return err
	}
	ob, err := outbox.New(store, pub)
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- ob.Run(relayCtx) }()
	defer func() { stopRelay(); <-relayDone }()

	ev := &outbox.Event{Topic: env("TOPIC", "inventory.events"), Type: "stock.updated", AggregateID: "sku-42", Payload: []byte(`{"change":-2}`)}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE stock SET quantity = quantity - 2 WHERE id = $1`, "sku-42"); err != nil {
			return err
		}
		return ob.Save(ctx, outboxpgx.Exec(tx), ev) // in the caller's pgx transaction
	})
	if err != nil {
		return err
	}
	res, err := ob.Publish(ctx, ev) // after commit: at once, or handed to the relay
	if err != nil {
		log.Printf("not all published at once; the relay delivers them: %v", err)
	}
	for _, o := range res.Outcomes {
		log.Printf("event %s: %s", o.ID, o)
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
