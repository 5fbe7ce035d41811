package sqlstore

import (
	"cmp"
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
	// c hands events out and records what became of them: partition
	// ownership (*owner) or row leases (rowLeases), chosen in New.
	c claimer
	// marks: delivery is recorded per partition (WithWatermarks).
	marks bool
	// tp: the table is partitioned by save time (WithTimePartitions).
	tp *timeParts
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

// WithWatermarks makes a relay record delivery per partition instead of
// per event (Postgres and SQLite, partition ownership only; refused on
// MySQL and MariaDB and with WithRowLeases): in the steady state one
// write per partition and heartbeat, however many events it publishes,
// where a Store without it marks each event. Events that fail, and those
// held behind them, are still recorded per row. A crash may publish
// again what was delivered since the last heartbeat, as a crash between
// the broker's ack and the mark may without it. Every relay of a table
// must use it, or none. Needs the schema of Migrate (version 9 on
// Postgres, 7 on SQLite, where a mark is a seq alone: one writer at a
// time commits events in seq order).
// The operator views (Stats, Get, List, Purge, the console) read the
// table as it writes it: an event its partition's mark covers is synced,
// as of the time that mark was recorded. A relay with marks finds a
// single new event more slowly than one without (it reads every partition
// it owns); a transaction left open for minutes does not hold delivery
// back. BENCHMARKS.md has the figures.
//
// New, and off by default: docs/order-and-relays.md says what the long
// chaos run found with it (an event skipped, about one in 100,000 under
// heavy faults, until the read's snapshot listed every transaction in
// progress) and how it runs now.
func WithWatermarks() Option { return func(o *options) { o.Watermarks = true } }

// The defaults and limits of WithHeartbeat.
const (
	// DefaultHeartbeat is how often a relay proves itself alive.
	DefaultHeartbeat = time.Second
	// DefaultMemberTTL is how long a relay counts as alive, and holds its
	// partitions, after its last heartbeat: a relay killed without
	// leaving has its partitions taken over within DefaultMemberTTL +
	// DefaultHeartbeat (4 s).
	DefaultMemberTTL = 3 * time.Second
	// MinHeartbeat is the shortest heartbeat WithHeartbeat accepts.
	MinHeartbeat = 50 * time.Millisecond
)

// WithHeartbeat sets how often a relay of partition ownership proves
// itself alive (every) and how long it counts as alive after its last
// heartbeat (ttl), both on the database's clock; ttl must be at least
// twice every. Each heartbeat is one short transaction of six to nine
// statements on the partitions and relays tables, and a read of the
// aggregates held by dead events (on Postgres about 6.7 KB of WAL for a
// relay that owns all 64 partitions); during a rebalance a relay beats
// every twentieth of every. A relay whose heartbeats fail for ttl loses
// its partitions, and it stops claiming from them one heartbeat period
// before that. Defaults to DefaultHeartbeat and DefaultMemberTTL (1 s and
// 3 s): a killed relay's partitions have a live owner again within about
// 3 s, once its membership lapses. Has no effect with WithRowLeases.
func WithHeartbeat(every, ttl time.Duration) Option {
	return func(o *options) { o.Heartbeat, o.MemberTTL = every, ttl }
}

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
	every, ttl := cmp.Or(o.Heartbeat, DefaultHeartbeat), cmp.Or(o.MemberTTL, DefaultMemberTTL)
	if every < MinHeartbeat || ttl < 2*every {
		return nil, fmt.Errorf("sqlstore: heartbeat every %v, alive for %v: the heartbeat must be at least %v and the time alive at least twice it: %w",
			every, ttl, MinHeartbeat, outbox.ErrInvalidConfig)
	}
	d := dialects[t.Dialect()]
	s := &Store{db: db, d: d, sx: d.syntax(), t: t, now: utcNow}
	if o.Watermarks && (o.RowLeases || t.Dialect() == MySQL) {
		return nil, fmt.Errorf("sqlstore: WithWatermarks needs Postgres or SQLite and partition ownership (not WithRowLeases): %w", outbox.ErrInvalidConfig)
	}
	s.marks = o.Watermarks
	if s.tp, err = newTimeParts(t.Dialect(), o); err != nil {
		return nil, err
	}
	if o.RowLeases {
		s.c = rowLeases{s}
	} else {
		s.c = newOwner(s, o.RelayName, every, ttl, o.Watermarks)
	}
	return s, nil
}

// Leave stops the Store's claims from taking anything of its partitions,
// gives each back as soon as nothing of it is in flight (waiting for
// claims in flight until they end, their lease runs out or ctx ends, the
// partitions' leases renewed meanwhile), and ends its membership among
// the table's relays, so that the others take them over at once without
// a duplicate. The relay (outbox.Outbox.Run) calls it when it stops,
// with a deadline of a few seconds. A later claim or heartbeat joins
// again. With WithRowLeases it does nothing.
func (s *Store) Leave(ctx context.Context) error { return s.c.leave(ctx) }

// Heartbeat proves the Store's relay alive among the table's relays and
// rebalances what it owns (storage.Owner): in one short transaction on
// the database's clock it renews its membership and its partitions'
// leases, gives back what it holds beyond its fair share once nothing of
// it is in flight, and takes free partitions up to its share. It returns
// when to call it again. The relay (outbox.Outbox.Run) calls it in a
// goroutine of its own; a Store whose claims run without it beats when
// it claims. It returns when to call it again, and whether it took
// partitions. With WithRowLeases it does nothing and returns 0.
func (s *Store) Heartbeat(ctx context.Context) (next time.Duration, took bool, err error) {
	return s.c.heartbeat(ctx)
}

// Rebalancing reports whether the Store relays and owns fewer partitions
// than its fair share at its last renewal (storage.Owner): the relay then
// claims again soon, to take what other relays give back. False with
// WithRowLeases.
func (s *Store) Rebalancing() bool { return s.c.rebalancing() }

// Owned returns the partitions the Store owns now, as far as it knows
// (nil with WithRowLeases).
func (s *Store) Owned() []int { return s.c.owned() }

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
	if token == "" || len(ids) == 0 {
		return 0, nil
	}
	return s.c.markSynced(ctx, token, ids)
}

// Release ends the lease on the events without counting an attempt, so
// any relay may claim them at once. Only rows still held by token change;
// it returns how many did.
func (s *Store) Release(ctx context.Context, token string, ids []string) (int, error) {
	if token == "" || len(ids) == 0 {
		return 0, nil
	}
	return s.c.release(ctx, token, ids)
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
	return s.c.fail(ctx, token, failures)
}

// failSet starts the UPDATE of a Fail of failures at now: the table and
// the SET of attempts, last error, next attempt and burial, for the
// claimer to append its fence to.
func (s *Store) failSet(failures []storage.Failure, now time.Time) *query {
	q := newQuery(s.sx)
	q.sql("UPDATE ", s.t.Quoted, " SET attempts = attempts + 1, last_error = CASE id")
	for _, f := range failures {
		q.sql(" WHEN ", q.arg(f.ID), " THEN ", s.sx.castText(q.arg(f.Err)))
	}
	q.sql(" END")
	var dead []string
	live := false
	for _, f := range failures {
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
	return q
}

func failureIDs(failures []storage.Failure) []string {
	ids := make([]string, len(failures))
	for i, f := range failures {
		ids[i] = f.ID
	}
	return ids
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
