package outbox

import (
	"context"
	"database/sql"
	"time"
)

// Executor is what Save writes through: the caller's *sql.Tx or *sqlx.Tx
// (anything with ExecContext). Save never commits or rolls it back, so the
// events exist exactly when the caller's transaction commits.
type Executor interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Store keeps events in the service's database and hands them out to
// relays under leases. The sqlstore package implements it for Postgres,
// MySQL/MariaDB and SQLite; implement it to keep events elsewhere.
//
// Every method but Insert runs in its own short transaction (or single
// statement): a relay never holds a transaction open while it talks to the
// broker.
type Store interface {
	// Insert writes already validated events (ID and CreatedAt set)
	// through exec, in one statement per batch, as pending and due now.
	Insert(ctx context.Context, exec Executor, events []*Event) error

	// Claim leases up to req.Limit due events (pending, not dead, next
	// attempt due, not leased by a live claim) for req.Lease and returns
	// them in save order. With req.IDs set it claims only those of them
	// that are claimable. A Claim with no events is not an error.
	Claim(ctx context.Context, req ClaimRequest) (*Claim, error)

	// MarkSynced records that the broker acknowledged the events. Only rows
	// still held by the claim token change; it returns how many did.
	MarkSynced(ctx context.Context, token string, ids []string) (int, error)

	// Fail records failed attempts: attempts+1, the error, and either the
	// next attempt after the given delay or, with Dead set, burial. Only
	// rows still held by the token change; it returns how many did.
	Fail(ctx context.Context, token string, failures []Failure) (int, error)

	// Release gives claimed events back without counting an attempt, so
	// another relay may take them at once (used on shutdown).
	Release(ctx context.Context, token string, ids []string) (int, error)
}

// ClaimRequest says what to claim. Its zero value keeps per-aggregate
// order and lets a buried event hold back its aggregate.
type ClaimRequest struct {
	Limit int           // at most this many events; must be positive
	Lease time.Duration // how long the claim holds them; must be positive
	IDs   []string      // if non-nil, claim only these events (an empty, non-nil slice claims none)

	// Unordered drops per-aggregate order for throughput: any due event
	// may be claimed. By default an aggregate's events are claimed only
	// from its earliest undelivered event on, as a run with no gap, and
	// not at all while that event is leased elsewhere or backing off.
	Unordered bool
	// Events with an empty AggregateID belong to no aggregate and are never
	// held back by others.
	//
	// PassDead lets later events of an aggregate go past a buried one.
	// By default a buried event holds its aggregate until it is re-queued.
	PassDead bool
}

// Claim is a batch of events leased to one relay pass. Token fences the
// lease: once it expires and another relay claims the events, writes made
// with the old token change nothing.
type Claim struct {
	Token  string
	Events []*Event
}

// Notifier is implemented by a Store that can tell relays at once that
// events were committed (sqlstore on Postgres, through LISTEN/NOTIFY). A
// running Worker finds it by type assertion and wakes on it.
type Notifier interface {
	// Listen calls wake each time events were committed, until ctx ends,
	// then returns nil. It reconnects by itself after a lost connection and
	// returns an error only if it cannot listen at all.
	Listen(ctx context.Context, wake func()) error
}

// Purger is implemented by a Store that can delete synced events, for
// WithRetention.
type Purger interface {
	// Purge deletes at most limit events synced longer than olderThan ago
	// and returns how many it deleted.
	Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error)
}

// Failure is one failed publish attempt.
type Failure struct {
	ID    string
	Err   string        // the error text, kept as the event's LastError
	Delay time.Duration // when to try again, from now (ignored if Dead)
	Dead  bool          // bury the event: it will not be retried
}
