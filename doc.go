// Package outbox saves events in the same database transaction as the
// business data they describe, and gets every committed event to a
// message broker: at once when the broker is up, eventually when it is
// down, never lost, in order per aggregate, and never retried forever.
//
// The package imports only the standard library (and its leaf package
// storage, which does too): no database driver, no broker client. A Store
// keeps the events (package sqlstore: PostgreSQL, MySQL/MariaDB, SQLite)
// and a Publisher sends them (packages redisstream, kafka and natsjs).
// Outbox is the one type a service holds.
//
// # Saving events
//
// Let the outbox run the transaction:
//
//	ob, err := outbox.New(store, publisher)
//	...
//	res, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error {
//		if _, err := tx.ExecContext(ctx, "UPDATE stock SET quantity = $1 WHERE id = $2", q, id); err != nil {
//			return err
//		}
//		return tx.Save(ctx, &outbox.Event{
//			Topic: "inventory", Type: "stock.updated", AggregateID: id, Payload: body,
//		})
//	})
//
// Transact commits, then publishes the saved events at once, and returns
// when the broker has answered. Its Result says of each event whether the
// broker acknowledged it, whether it was handed to the relay (and why:
// another relay owns its partition, or an earlier event of its aggregate
// is in flight) or whether it waits for a retry. It does not wait for a
// relay. Or keep your own transaction (a *sql.Tx or *sqlx.Tx) and call the
// pieces:
//
//	ev := &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: id, Payload: body}
//	if err := ob.Save(ctx, tx, ev); err != nil { ... }  // never commits
//	if err := tx.Commit(); err != nil { ... }
//	res, err := ob.Publish(ctx, ev) // an error here only means "a relay will do it"
//
// # The relay
//
// Whatever was not published at once (the broker was down, the process
// died after commit) is delivered by the relay, which runs until its
// context ends:
//
//	go ob.Run(ctx)
//
// Each pass reads a batch of due events of the partitions its relay owns
// (the aggregate space is cut into partitions; relays share them out
// through the database), publishes the batch in one round trip, marks
// what the broker acknowledged, and reschedules the rest with exponential
// backoff and jitter. An event that
// fails MaxAttempts times, or with an error marked Permanent, is buried:
// kept in the table as dead, with its last error. Several relays, in one
// process or many, may share one table. SyncPending runs one pass (the
// call to make from a cron job or a test).
//
// # Guarantees
//
// An event exists iff the caller's transaction commits. It is marked
// synced only after the broker acknowledged it. Every committed event
// reaches the broker once the broker is reachable, whatever crashed;
// duplicates come only from a crash between the broker's acknowledgement
// and the mark, and carry the same event ID. A relay holds no database
// transaction while it talks to the broker, holds one batch in memory,
// and on stop marks or releases its batch before Run returns.
//
// A relay owns partitions under a lease on the database's clock, fenced by
// a token raised on every change of hands, and writes nothing per event
// it reads: its mark changes nothing once another relay took a partition
// over. The publication right after commit goes through the partition's
// owner (or, where no relay owns it, leases the rows it sends). So any
// number of relays and the immediate path never publish an event twice
// while nothing crashes.
// Events with the same AggregateID reach the broker in the order they were
// saved; a failing event holds back the later events of its aggregate only
// (WithPerAggregateOrder, WithSkipDead). Higher Priority events
// are claimed first, never ahead of an earlier event of their aggregate.
//
// # Failures
//
// A publisher reports a partial failure as a *PublishError naming the
// events it could not deliver. Mark an error no retry can fix with
// Permanent (the event is buried at once), and a per-event failure the
// broker or the connection caused with Unavailable (it is retried like an
// outage and never buried for). When the broker fails whole batches, the
// circuit breaker (WithBreaker) stops sending and probes it, with the
// publisher's Ping if it is a Pinger; the first good probe drains the
// backlog at full speed. Dead events can go to a dead-letter topic
// (WithDeadLetterTopic) and to a DeadHook; sqlstore re-queues them.
//
// # Observing
//
// WithHooks takes values implementing SaveHook, PublishHook, BreakerHook
// or DeadHook, so metrics and tracing live in their own packages
// (outboxprom, outboxotel, with alert rules and a dashboard beside them).
// Ready tells a readiness probe whether the relay keeps up.
//
// # Configuration
//
// Options have visible defaults (DefaultInterval, DefaultBatchSize,
// DefaultTimeout, ...) and are checked when New is called: an invalid one
// is an error wrapping ErrInvalidConfig that names it. The package never
// reads the environment on its own.
//
// # Writing a store or a publisher
//
// A Store implementation works with the types of package storage and can
// check itself against the outboxtest store suite. A Publisher reports a
// partly failed batch as a *PublishError; the outboxtest publisher suite
// checks one against a real broker.
package outbox
