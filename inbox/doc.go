// Package inbox is the consumer side of the outbox: an inbox table in the
// consumer's own database that makes processing an event effectively
// once, however often the broker delivers it.
//
// The publishing side delivers at least once: a crash between the
// broker's acknowledgement and the mark publishes an event again, with the
// same ID, and consumer groups redeliver whatever was not acknowledged
// when a consumer died. Process records the event ID in the caller's
// transaction, beside the handler's writes, and skips an ID already
// recorded:
//
//	in, err := inbox.New(db) // *sqlx.DB; dialect from the driver name
//	err = in.Migrate(ctx)    // creates inbox_events
//
//	tx, err := db.BeginTxx(ctx, nil)
//	ran, err := in.Process(ctx, tx, event, func(ctx context.Context, e *outbox.Event) error {
//		_, err := tx.ExecContext(ctx, `UPDATE stock SET reserved = reserved + 1 WHERE id = $1`, e.AggregateID)
//		return err
//	})
//	if err != nil {
//		tx.Rollback()
//		return err // the broker redelivers; nothing was recorded
//	}
//	err = tx.Commit() // the writes and the record, together
//
// Handle does the same in a transaction of its own. The handler's effects
// outside that transaction (an e-mail, an HTTP call) are not covered: they
// happen at least once.
//
// Reading events back: the subpackages redisconsumer (Redis Streams
// consumer groups) and kafkaconsumer (Kafka consumer groups on sarama)
// decode the documented wire format and acknowledge an entry only after
// the handler returned nil, so together with Handle each event is
// processed once.
//
// # Schema
//
// Migrate applies embedded, versioned migrations (migrations/<dialect>/)
// in their own transactions, records them in <table>_migrations and is
// safe when several instances start at once, as in sqlstore. Schema
// prints the SQL for another migration tool. The table holds the event ID
// (primary key), topic, type and the time it was processed; Purge deletes
// old records.
package inbox
