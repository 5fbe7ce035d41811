// Package outboxpgx runs the outbox on pgx v5 without database/sql in the
// service's code: Exec lets Save join a pgx.Tx (or anything with pgx's
// Exec), and New builds the Postgres store on a *pgxpool.Pool.
//
// The store is sqlstore's, on a database/sql handle that borrows its
// connections from the pool (stdlib.OpenDBFromPool): the same schema, the
// same migrations, the same SQL and the same guarantees, passing the same
// conformance suite. What pgx does better is used natively: Save writes
// through pgx's Exec, as one COPY from CopyMinRows events on, and Listen
// holds a connection taken out of the pool. It is a package of its own so
// that users of sqlstore on database/sql do not depend on pgxpool through
// it.
//
// A service on pgx writes its business rows and its events in one pgx
// transaction, publishes after commit, and runs the relay on the store:
//
//	store, err := outboxpgx.New(pool)
//	...
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { ... }
//	ob, err := outbox.New(store, publisher)
//	...
//	tx, err := pool.Begin(ctx)
//	... business writes through tx ...
//	err = ob.Save(ctx, outboxpgx.Exec(tx), events...)
//	err = tx.Commit(ctx)
//	_, _ = ob.Publish(ctx, events...) // or leave them to the relay
package outboxpgx
