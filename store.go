package outbox

import (
	"context"
	"database/sql"

	"github.com/eventsync/outbox/storage"
)

// Executor is what Save writes through: the caller's *sql.Tx or *sqlx.Tx
// (anything with ExecContext). Save never commits or rolls it back, so the
// events exist exactly when the caller's transaction commits.
type Executor interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Store keeps events in the service's database and hands them out to
// relays under leases. The sqlstore package implements it for PostgreSQL,
// MySQL/MariaDB and SQLite; the types an implementation works with are in
// package storage.
//
// Every method but Insert runs in its own short transaction (or single
// statement): a relay never holds a transaction open while it talks to the
// broker.
type Store interface {
	// Insert writes events that Save validated (ID and CreatedAt set, exec
	// not nil) through exec, in one statement per batch, as pending and due
	// now.
	Insert(ctx context.Context, exec Executor, events []*Event) error

	// Claim leases up to req.Limit due events (pending, not dead, next
	// attempt due, not leased by a live claim) for req.Lease and returns
	// them in save order. With req.IDs set it claims only those of them
	// that are claimable. A Claim with no events is not an error.
	Claim(ctx context.Context, req storage.ClaimRequest) (*Claim, error)

	// MarkSynced records that the broker acknowledged the events. Only rows
	// still held by the claim token change; it returns how many did.
	MarkSynced(ctx context.Context, token string, ids []string) (int, error)

	// Fail records failed attempts: attempts+1, the error, and either the
	// next attempt after the given delay or, with Dead set, burial. Only
	// rows still held by the token change; it returns how many did.
	Fail(ctx context.Context, token string, failures []storage.Failure) (int, error)

	// Release gives claimed events back without counting an attempt, so
	// another relay may take them at once (used on shutdown).
	Release(ctx context.Context, token string, ids []string) (int, error)
}

// Claim is a batch of events claimed by one relay pass, as Store.Claim
// returns it (storage.Claim, for Event): its Token fences the claim, so
// that once the claim ended and another relay claimed the events, writes
// made with the old token change nothing.
type Claim = storage.Claim[Event]

// Stats are the figures operators watch (storage.Stats). A Store that can
// compute them implements StatsReader.
type Stats = storage.Stats

// StatsReader is implemented by a Store that computes Stats
// (storage.StatsReader).
type StatsReader = storage.StatsReader
