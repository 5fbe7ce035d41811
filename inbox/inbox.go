package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
)

// Inbox records the IDs of the events a consumer processed, in the
// consumer's own database, so that a redelivered event is skipped. It is
// safe for concurrent use by any number of goroutines and processes
// sharing the table.
type Inbox struct {
	db     *sqlx.DB
	t      sqlschema.Table
	insert string
	now    func() time.Time
}

// Option configures New.
type Option func(*options)

type options = sqlschema.Options

// WithTable sets the inbox table's name: a plain SQL identifier, or
// schema.table on Postgres and MySQL. Defaults to DefaultTable
// ("inbox_events"). Consumers that must each process every event (two
// services, two handlers) need a table each.
func WithTable(name string) Option { return func(o *options) { o.Table = name } }

// WithDialect sets the SQL dialect. Defaults to the one db's driver name
// implies: "pgx" and "postgres" are Postgres, "mysql" is MySQL, "sqlite"
// and "sqlite3" are SQLite.
func WithDialect(d Dialect) Option { return func(o *options) { o.Dialect = d } }

// New returns an Inbox on db, which it never closes. It does no I/O: call
// Migrate to create the table.
func New(db *sqlx.DB, opts ...Option) (*Inbox, error) {
	t, err := sqlschema.Open(ddl, db, opts)
	if err != nil {
		return nil, err
	}
	return &Inbox{db: db, t: t, insert: fmt.Sprintf(inserts[t.Dialect()], t.Quoted), now: utcNow}, nil
}

func utcNow() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Table reports the inbox table's name as configured.
func (in *Inbox) Table() string { return in.t.Qualified() }

// Handler processes one event. Its database writes go through the
// transaction given to Process.
type Handler func(ctx context.Context, e *outbox.Event) error

// ErrNoID is returned by Process for an event without an ID.
var ErrNoID = errors.New("inbox: event has no ID")

// Process runs handle for e unless e's ID is in the inbox, and records
// the ID through tx, the caller's transaction, which it never commits or
// rolls back. It reports whether handle ran.
//
// The ID is recorded first: a concurrent Process of the same event in
// another transaction waits on the row until this one ends, and then
// skips the event if this transaction committed, or processes it if it
// rolled back. So the handler's writes and the record commit or vanish
// together, and each event ID is processed once, however often and by
// however many consumers it is delivered. When handle or the recording
// fails, Process returns the error and the caller must roll tx back.
//
// On Postgres and MySQL run tx at READ COMMITTED or REPEATABLE READ (the
// defaults); under SERIALIZABLE a concurrent duplicate fails with a
// serialization error instead of waiting, which a retry turns into a
// skip. On SQLite begin tx with BEGIN IMMEDIATE (modernc.org/sqlite:
// _txlock=immediate) so that concurrent writers wait instead of failing
// with SQLITE_BUSY.
func (in *Inbox) Process(ctx context.Context, tx outbox.Executor, e *outbox.Event, handle Handler) (bool, error) {
	if tx == nil {
		return false, fmt.Errorf("inbox: process: %w", outbox.ErrNilExecutor)
	}
	if e == nil || e.ID == "" {
		return false, ErrNoID
	}
	if len(e.ID) > outbox.MaxIDLength {
		return false, fmt.Errorf("inbox: event ID %.80q is longer than %d bytes", e.ID, outbox.MaxIDLength)
	}
	res, err := tx.ExecContext(ctx, in.insert, e.ID, truncate(e.Topic), truncate(e.Type), in.t.Syntax().Time(in.now()))
	if err != nil {
		return false, fmt.Errorf("inbox: record event %s: %w", e.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox: record event %s: %w", e.ID, err)
	}
	if n == 0 {
		return false, nil // processed before, by a committed transaction
	}
	if err := handle(ctx, e); err != nil {
		return false, err
	}
	return true, nil
}

// truncate keeps a name within the columns' 255 bytes; the inbox keeps
// it for reading only.
func truncate(s string) string {
	if len(s) > outbox.MaxNameLength {
		return s[:outbox.MaxNameLength]
	}
	return s
}

// Handle is Process in a transaction of its own: it begins one on the
// inbox's database, runs handle with it, and commits, or rolls back when
// handle fails. It reports whether handle ran and committed.
func (in *Inbox) Handle(ctx context.Context, e *outbox.Event, handle func(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error) (bool, error) {
	tx, err := in.db.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("inbox: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	ran, err := in.Process(ctx, tx, e, func(ctx context.Context, e *outbox.Event) error { return handle(ctx, tx, e) })
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("inbox: commit: %w", err)
	}
	return ran, nil
}

// Processed reports whether the event ID is recorded (committed) in the
// inbox.
func (in *Inbox) Processed(ctx context.Context, id string) (bool, error) {
	var n int
	q := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE id = %s", in.t.Quoted, in.t.Syntax().Placeholder(1))
	if err := in.db.QueryRowContext(ctx, q, id).Scan(&n); err != nil {
		return false, fmt.Errorf("inbox: processed %s: %w", id, err)
	}
	return n > 0, nil
}

// Purge deletes the records of events processed longer than olderThan
// ago and returns how many it deleted. Keep records for longer than any
// redelivery can come (the broker's retention, or how long a consumer
// group may lag): a redelivered event whose record was purged is
// processed again.
func (in *Inbox) Purge(ctx context.Context, olderThan time.Duration) (int64, error) {
	q := fmt.Sprintf("DELETE FROM %s WHERE processed_at < %s", in.t.Quoted, in.t.Syntax().Placeholder(1))
	res, err := in.db.ExecContext(ctx, q, in.t.Syntax().Time(in.now().Add(-olderThan)))
	if err != nil {
		return 0, fmt.Errorf("inbox: purge: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("inbox: purge: %w", err)
	}
	return n, nil
}
