// Package storage holds what an implementation of outbox.Store works
// with: the claim request and the claim, the record of a failed attempt,
// the figures of Stats, and the optional capabilities the relay looks for
// by type assertion. A Store imports it and the outbox package's Event. Services
// that use the outbox never need it; whoever writes a Store does. The
// sqlstore package is the implementation for PostgreSQL, MySQL/MariaDB and
// SQLite, and outboxtest's store suite tells whether another one is right.
//
// Like the outbox package, it imports only the standard library.
package storage

import (
	"context"
	"time"
)

// MaxErrorLength is how many bytes of a publish error the relay keeps as an
// event's last error (Failure.Err is never longer, and is valid UTF-8).
const MaxErrorLength = 1000

// ClaimRequest says what to claim. Its zero value keeps per-aggregate
// order and lets a dead event hold back its aggregate.
type ClaimRequest struct {
	Limit int           // at most this many events; must be positive
	Lease time.Duration // how long the claim holds them; must be positive
	IDs   []string      // if non-nil, claim only these events (an empty, non-nil slice claims none)

	// Unordered drops per-aggregate order for throughput: any due event
	// may be claimed. By default an aggregate's events are claimed only
	// from its earliest undelivered event on, as a run with no gap, and
	// not at all while that event is leased elsewhere or backing off.
	// Events with an empty aggregate ID belong to no aggregate and are
	// never held back by others.
	Unordered bool

	// SkipDead lets later events of an aggregate go past a dead one. By
	// default a dead event holds its aggregate until it is re-queued.
	SkipDead bool
}

// Claim is a batch of events claimed by one relay pass, as a Store's
// Claim returns it; E is the outbox's Event (outbox.Claim is
// Claim[outbox.Event], the type a Store returns). Token fences the claim:
// once it ended (its lease ran out, or the relay lost the part of the
// table the events are in) and another relay claimed the events, writes
// made with the old token change nothing.
type Claim[E any] struct {
	Token  string // fences the claim; MarkSynced, Fail and Release take it
	Events []*E   // the claimed events, in save order

	// Elsewhere lists, for a claim by IDs, the IDs it did not take because
	// another relay owns their partition (a store whose relays own
	// partitions, see Owner), so that relay delivers them. The outbox's
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

// Failure is one failed publish attempt.
type Failure struct {
	ID    string        // the event that failed
	Err   string        // the error text, kept as the event's last error; at most MaxErrorLength bytes
	Delay time.Duration // when to try again, from now (ignored if Dead)
	Dead  bool          // bury the event: it will not be retried
}

// Notifier is implemented by a Store that can tell relays at once that
// events were committed (sqlstore on PostgreSQL, through LISTEN/NOTIFY). A
// running relay finds it by type assertion and wakes on it.
type Notifier interface {
	// Listen calls wake each time events were committed, until ctx ends,
	// then returns nil. It reconnects by itself after a lost connection and
	// returns an error only if it cannot listen at all.
	Listen(ctx context.Context, wake func()) error
}

// Purger is implemented by a Store that can delete synced events, for
// outbox.WithRetention.
type Purger interface {
	// Purge deletes at most limit events synced longer than olderThan ago
	// and returns how many it deleted.
	Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error)
}

// Owner is implemented by a Store whose relays own parts of the table
// rather than leasing rows (sqlstore's partition ownership). Run finds it
// by type assertion: it beats in a goroutine of its own while it runs,
// and leaves when it stops.
type Owner interface {
	// Heartbeat proves the relay alive among the table's relays and
	// rebalances what it owns: it keeps its parts, gives back what it
	// holds beyond its fair share once nothing of it is in flight, and
	// takes free parts up to its share. It returns when to call it again
	// and whether it took parts (whose events then wait for the relay's
	// next pass). A relay that stops beating loses its parts to the
	// others after the Store's time to live.
	Heartbeat(ctx context.Context) (next time.Duration, took bool, err error)
	// Leave gives back what the Store owns, each part as soon as nothing
	// of it is in flight (waiting until ctx ends for that), and ends its
	// membership, so that other relays take them over without waiting
	// for its leases to end; a later claim or heartbeat joins again. Run
	// calls it when it stops.
	Leave(ctx context.Context) error
	// Rebalancing reports whether the Store owns less than its fair
	// share, so that parts other relays give back wait to be taken: the
	// relay then claims again within a fraction of a second, not after
	// its interval.
	Rebalancing() bool
}

// Maintainer is implemented by a Store that keeps its table in shape
// apart from the relay's passes (sqlstore's time partitions: it creates
// the partitions ahead of the clock). Run finds it by type assertion and
// calls Maintain in a goroutine of its own while it runs: at once, then
// after each returned interval, until Maintain returns 0 (nothing to
// maintain) or Run stops. A failure is logged and retried.
type Maintainer interface {
	Maintain(ctx context.Context) (next time.Duration, err error)
}

// Runway is the state of a table partitioned by save time.
type Runway struct {
	// Ahead is how far past now the partitions reach without a gap; zero
	// or negative when none covers now (saves then land in the default
	// partition).
	Ahead time.Duration
	// DefaultRows counts the rows in the default partition (capped by
	// the store): normally zero.
	DefaultRows int64
}

// RunwayReader is implemented by a Store that may be partitioned by save
// time (sqlstore): ok is false when it is not, and Runway then reads
// nothing.
type RunwayReader interface {
	Runway(ctx context.Context) (r Runway, ok bool, err error)
}
