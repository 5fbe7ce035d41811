package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
	"github.com/eventsync/outbox/storage"
)

// Store is an outbox.Store in a SQL database. It is safe for concurrent
// use by any number of goroutines and processes sharing the table.
type Store struct {
	db *sqlx.DB
	d  dialect
	sx *syntax // d.syntax()
	t  sqlschema.Table
	// now is the clock every statement uses; tests move it.
	now func() time.Time
	// own claims by partition ownership; nil with WithRowLeases.
	own *owner
}

var _ outbox.Store = (*Store)(nil)

// Option configures New.
type Option func(*options)

type options = sqlschema.Options

// WithTable sets the outbox table's name: a plain SQL identifier, or
// schema.table on Postgres and MySQL (where the schema is the database).
// Defaults to DefaultTable ("outbox_events"). The migrations table is the
// same name with "_migrations" appended.
func WithTable(name string) Option { return func(o *options) { o.Table = name } }

// WithDialect sets the SQL dialect. Defaults to the one that db's driver
// name implies: "pgx" and "postgres" are Postgres, "mysql" is MySQL,
// "sqlite" and "sqlite3" are SQLite.
func WithDialect(d Dialect) Option { return func(o *options) { o.Dialect = d } }

// WithRowLeases makes claims lease rows, as the relays of versions before
// partition ownership do, instead of owning partitions: for a rollout
// while relays of an earlier version still run against the table (see
// the package documentation), and for a table not yet migrated to
// partitions. A Store of each kind must never relay from the same table
// at the same time.
func WithRowLeases() Option { return func(o *options) { o.RowLeases = true } }

// WithRelayName sets the name under which the Store owns partitions, as
// the partitions table and `outbox status` show it: at most 64 bytes,
// unique among the relays of the table. Defaults to the host name, the
// process ID and a random suffix.
func WithRelayName(name string) Option { return func(o *options) { o.RelayName = name } }

// New returns a Store on db, which it never closes. It does no I/O: call
// Migrate to create the table.
func New(db *sqlx.DB, opts ...Option) (*Store, error) {
	t, err := sqlschema.Open(ddl, db, opts)
	if err != nil {
		return nil, err
	}
	o := sqlschema.Apply(opts)
	if len(o.RelayName) > 64 {
		return nil, fmt.Errorf("sqlstore: relay name %q is longer than 64 bytes: %w", o.RelayName, outbox.ErrInvalidConfig)
	}
	d := dialects[t.Dialect()]
	s := &Store{db: db, d: d, sx: d.syntax(), t: t, now: utcNow}
	if !o.RowLeases {
		s.own = newOwner(s, o.RelayName)
	}
	return s, nil
}

// Leave gives back at once the partitions the Store owns and has nothing
// in flight of, and ends its membership among the table's relays, so
// that the others take them without waiting for the leases to end. The
// relay (outbox.Outbox.Run) calls it when it stops. A later claim joins
// again. With WithRowLeases it does nothing.
func (s *Store) Leave(ctx context.Context) error {
	if s.own == nil {
		return nil
	}
	return s.own.leave(ctx)
}

// Rebalancing reports whether the Store relays and owns fewer partitions
// than its fair share at its last renewal (storage.Owner): the relay then
// claims again soon, to take what other relays give back. False with
// WithRowLeases.
func (s *Store) Rebalancing() bool {
	if s.own == nil {
		return false
	}
	return s.own.rebalancing()
}

// Owned returns the partitions the Store owns now, as far as it knows
// (nil with WithRowLeases).
func (s *Store) Owned() []int {
	if s.own == nil {
		return nil
	}
	return s.own.owned()
}

// utcNow is the clock: UTC at the microsecond precision every dialect
// stores.
func utcNow() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Dialect reports the store's SQL dialect.
func (s *Store) Dialect() Dialect { return s.t.Dialect() }

// Table reports the outbox table's name as configured.
func (s *Store) Table() string { return s.t.Qualified() }

// insertColumns is how many parameters one row of Insert takes.
const insertColumns = 9

// Insert writes events through exec, the caller's transaction, as pending,
// due now and not leased, in one multi-row INSERT (more only past the
// dialect's bind-parameter limit, or on MySQL past 8 MiB of payload). It
// never commits or rolls back. Like every Store, it takes what
// outbox.Save validated: exec not nil, and CreatedAt in UTC to the
// microsecond, stored as it is. Errors wrap the driver's, so
// errors.Is(err, sql.ErrTxDone) tells an ended transaction.
func (s *Store) Insert(ctx context.Context, exec outbox.Executor, events []*outbox.Event) error {
	now := s.now()
	for len(events) > 0 {
		n := s.insertChunk(events)
		q := newQuery(s.sx).sql("INSERT INTO ", s.t.Quoted,
			" (id, topic, event_type, aggregate_id, priority, payload, headers, created_at, next_attempt_at) VALUES ")
		for i, e := range events[:n] {
			headers, err := encodeHeaders(e.Headers)
			if err != nil {
				return fmt.Errorf("sqlstore: insert: event %s: headers: %w", e.ID, err)
			}
			payload := e.Payload
			if payload == nil {
				payload = []byte{}
			}
			if i > 0 {
				q.sql(", ")
			}
			q.sql("(", q.arg(e.ID), ", ", q.arg(e.Topic), ", ", q.arg(e.Type), ", ", q.arg(e.AggregateID), ", ",
				q.arg(e.Priority), ", ", q.arg(payload), ", ", q.arg(headers), ", ", q.arg(s.sx.Time(e.CreatedAt)), ", ",
				q.arg(s.sx.Time(now)), ")")
		}
		if _, err := exec.ExecContext(ctx, q.String(), q.args...); err != nil {
			return fmt.Errorf("sqlstore: insert %d events: %w", n, err)
		}
		events = events[n:]
	}
	return nil
}

// insertChunk returns how many of events the next INSERT takes.
func (s *Store) insertChunk(events []*outbox.Event) int {
	n := min(len(events), s.sx.maxParams/insertColumns)
	if s.sx.maxStatementBytes <= 0 {
		return n
	}
	size := 0
	for i, e := range events[:n] {
		size += len(e.Payload) + 64
		for k, v := range e.Headers {
			size += len(k) + len(v) + 6
		}
		if i > 0 && size > s.sx.maxStatementBytes {
			return i
		}
	}
	return n
}

// MarkSynced records that the broker acknowledged the events: synced_at
// becomes now and the lease ends. Only rows still held by token change
// (fencing: a relay whose lease was taken over changes nothing); it
// returns how many did.
func (s *Store) MarkSynced(ctx context.Context, token string, ids []string) (int, error) {
	now := s.sx.Time(s.now())
	if tokens, held, seqs, ok := s.ownedClaim(token, ids); ok {
		// By seq, the primary key: the claim knows each row's.
		total := 0
		for _, chunk := range chunks(seqs, s.sx.maxParams-2-2*len(tokens)) {
			q := newQuery(s.sx)
			q.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", q.arg(now), " WHERE ", q.seqIn("seq", chunk), " AND synced_at IS NULL")
			s.own.fence(q, "partition_no", tokens)
			n, err := s.fencedExec(ctx, q)
			total += n
			if err != nil {
				return total, fmt.Errorf("sqlstore: mark synced: %w", err)
			}
		}
		s.own.finish(token, held)
		return total, nil
	}
	n, err := s.perChunk(ctx, token, ids, 2, func(q *query, chunk []string) {
		q.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", q.arg(now),
			", claim_token = NULL, locked_until = NULL WHERE claim_token = ", q.arg(token), " AND ", q.in("id", chunk, false))
	})
	if err != nil {
		return n, fmt.Errorf("sqlstore: mark synced: %w", err)
	}
	return n, nil
}

// Release ends the lease on the events without counting an attempt, so
// any relay may claim them at once. Only rows still held by token change;
// it returns how many did.
func (s *Store) Release(ctx context.Context, token string, ids []string) (int, error) {
	if _, held, _, ok := s.ownedClaim(token, ids); ok {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("sqlstore: release: %w", err)
		}
		// Nothing was written to the rows: ending the claim in memory
		// is the release.
		s.own.finish(token, held)
		s.own.released()
		return len(held), nil
	}
	n, err := s.perChunk(ctx, token, ids, 1, func(q *query, chunk []string) {
		q.sql("UPDATE ", s.t.Quoted, " SET claim_token = NULL, locked_until = NULL WHERE claim_token = ",
			q.arg(token), " AND ", q.in("id", chunk, false))
	})
	if err != nil {
		return n, fmt.Errorf("sqlstore: release: %w", err)
	}
	return n, nil
}

// Fail records failed attempts in one statement: attempts+1, last_error,
// the lease ended, and next_attempt_at = now + Delay, or for a Failure
// with Dead set dead_at = now. Per-row values go through CASE expressions,
// so a batch with different delays is still one UPDATE (more only past the
// bind-parameter limit). Only rows still held by token change; it returns
// how many did. The error texts are kept as given (the relay cuts them to
// storage.MaxErrorLength).
func (s *Store) Fail(ctx context.Context, token string, failures []storage.Failure) (int, error) {
	if token == "" || len(failures) == 0 {
		return 0, nil
	}
	now := s.now()
	tokens, held, _, owned := s.ownedClaim(token, failureIDs(failures))
	if owned && len(held) == 0 {
		return 0, nil
	}
	total := 0
	for _, chunk := range chunks(failures, (s.sx.maxParams-4-2*len(tokens))/6) {
		q := newQuery(s.sx)
		q.sql("UPDATE ", s.t.Quoted, " SET attempts = attempts + 1, last_error = CASE id")
		for _, f := range chunk {
			q.sql(" WHEN ", q.arg(f.ID), " THEN ", s.sx.castText(q.arg(f.Err)))
		}
		q.sql(" END")
		var dead []string
		live := false
		for _, f := range chunk {
			if f.Dead {
				dead = append(dead, f.ID)
				continue
			}
			if !live {
				q.sql(", next_attempt_at = CASE id")
				live = true
			}
			at := now.Add(max(f.Delay, 0)).Truncate(time.Microsecond)
			q.sql(" WHEN ", q.arg(f.ID), " THEN ", s.sx.castTime(q.arg(s.sx.Time(at))))
		}
		if live {
			q.sql(" ELSE next_attempt_at END")
		}
		if len(dead) > 0 {
			q.sql(", dead_at = CASE WHEN ", q.in("id", dead, false), " THEN ", s.sx.castTime(q.arg(s.sx.Time(now))), " ELSE dead_at END")
		}
		ids := make([]string, len(chunk))
		for i, f := range chunk {
			ids[i] = f.ID
		}
		if owned {
			q.sql(" WHERE ", q.in("id", ids, false), " AND synced_at IS NULL")
			s.own.fence(q, "partition_no", tokens)
		} else {
			q.sql(", claim_token = NULL, locked_until = NULL WHERE claim_token = ", q.arg(token), " AND ", q.in("id", ids, false))
		}
		exec := s.exec
		if owned {
			exec = s.fencedExec
		}
		n, err := exec(ctx, q)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlstore: fail: %w", err)
		}
	}
	if owned {
		s.own.fail(token, failures, now)
		s.own.finish(token, failureIDs(failures))
	}
	return total, nil
}

func failureIDs(failures []storage.Failure) []string {
	ids := make([]string, len(failures))
	for i, f := range failures {
		ids[i] = f.ID
	}
	return ids
}

// ownedClaim returns, when token is a claim of partition ownership, the
// partition tokens of the events of ids it holds, those events and their
// seqs.
func (s *Store) ownedClaim(token string, ids []string) (map[int]int64, []string, []int64, bool) {
	if s.own == nil || token == "" {
		return nil, nil, nil, false
	}
	return s.own.tokensOf(token, ids)
}

// perChunk runs one UPDATE per chunk of ids (one in all but huge batches)
// built by build, and adds up the rows changed. fixed is how many
// parameters build adds besides the ids.
func (s *Store) perChunk(ctx context.Context, token string, ids []string, fixed int, build func(q *query, chunk []string)) (int, error) {
	if token == "" || len(ids) == 0 {
		return 0, nil
	}
	total := 0
	for _, chunk := range chunks(ids, s.sx.maxParams-fixed) {
		q := newQuery(s.sx)
		build(q, chunk)
		n, err := s.exec(ctx, q)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s *Store) exec(ctx context.Context, q *query) (int, error) {
	res, err := s.db.ExecContext(ctx, q.String(), q.args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// fencedExec runs a write fenced by partition tokens (owner.fence), again
// if the database rolled it back to break a deadlock (see
// deadlockRetries).
func (s *Store) fencedExec(ctx context.Context, q *query) (int, error) {
	var n int
	err := s.own.retryDeadlock(ctx, func() error {
		var err error
		n, err = s.exec(ctx, q)
		return err
	})
	return n, err
}

// chunks splits s into pieces of at most size elements.
func chunks[T any](s []T, size int) [][]T {
	var out [][]T
	for len(s) > size {
		out = append(out, s[:size])
		s = s[size:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// ErrNotFound is wrapped by Get when no event has the ID.
var ErrNotFound = errors.New("sqlstore: event not found")
