package outbox

import (
	"context"
	"database/sql"
	"time"

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

// Claim is a batch of events leased to one relay pass, as Store.Claim
// returns it. Token fences the lease: once it expires and another relay
// claims the events, writes made with the old token change nothing.
type Claim struct {
	Token  string   // fences the lease; MarkSynced, Fail and Release take it
	Events []*Event // the claimed events, in save order

	// Elsewhere lists, for a claim by IDs, the IDs it did not take because
	// another relay owns their partition (a store whose relays own
	// partitions, see storage.Owner), so that relay delivers them.
	// Publish reports them as handed to the relay (OwnedElsewhere); an ID
	// asked for that is neither claimed nor here is reported as InFlight.
	// A bulk claim, and a store without ownership, leave it nil.
	Elsewhere []string
}

// Stats are the figures operators watch. A Store that can compute them
// implements StatsReader.
type Stats struct {
	Pending          int64            // committed, not yet acknowledged, not dead
	PendingByType    map[string]int64 // Pending by event type
	OldestPendingAge time.Duration    // age of the oldest pending event; 0 with none
	Dead             int64            // dead events
	Synced           int64            // events acknowledged within the window asked for
	AvgSyncLatency   time.Duration    // mean created → synced within the window
	P99SyncLatency   time.Duration    // 99th percentile of the same
}

// StatsReader is implemented by a Store that computes Stats. window bounds
// Synced and the latencies to events synced in the last window.
type StatsReader interface {
	Stats(ctx context.Context, window time.Duration) (Stats, error)
}
