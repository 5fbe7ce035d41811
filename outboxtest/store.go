package outboxtest

import (
	"context"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// Tx is a transaction of the store's database as TestStore uses it: the
// executor Insert writes through, and its end. *sql.Tx and *sqlx.Tx
// satisfy it.
type Tx interface {
	outbox.Executor
	Commit() error
	Rollback() error
}

// StoreSetup is one fresh, empty store under test and what TestStore needs
// around it. StoreHarness.New returns one per subtest.
type StoreSetup struct {
	// Store is the implementation under test, on an empty table (or
	// whatever it keeps events in) that no other subtest uses.
	Store outbox.Store

	// Begin opens a transaction on the store's database, the way a
	// service opens the one it saves its events in. Required.
	Begin func(ctx context.Context) (Tx, error)

	// Advance moves the store's clock forward by d, so that leases end
	// and backoff delays pass without waiting. Nil means the store keeps
	// real time: the suite then sleeps instead, with leases and delays of
	// two seconds, and takes a few seconds longer.
	Advance func(d time.Duration)

	// Requeue gives buried events with the given IDs back to the relay,
	// due at once, and returns how many it changed. It is not part of
	// outbox.Store; nil skips the re-queue tests (reported as not claimed).
	Requeue func(ctx context.Context, ids []string) (int, error)
}

// StoreFeatures says which optional parts of the Store contract an
// implementation does not claim. The zero value claims everything; each
// field set skips the tests of that part, with a message naming it.
type StoreFeatures struct {
	// NoOrder: the default claim does not keep per-aggregate order
	// (ClaimRequest.Unordered is then what every claim does).
	NoOrder bool
	// NoPriority: claims ignore Event.Priority.
	NoPriority bool
	// NoConcurrentRelays: the store cannot be shared by several relays.
	NoConcurrentRelays bool
}

// StoreHarness tells TestStore how to make the store under test.
type StoreHarness struct {
	// New returns a fresh, empty store for the subtest t, and registers
	// with t.Cleanup whatever releases it. Required.
	New func(t *testing.T) StoreSetup
	// Features lists the parts of the contract the store does not claim.
	Features StoreFeatures
	// Sequential runs the subtests one after another instead of in
	// parallel, for a store whose setups cannot coexist.
	Sequential bool
}

// TestStore runs the outbox.Store conformance suite against the store that
// h makes: atomic save with commit and rollback, round trip of every
// field, claims and leases, lease expiry and fencing by token, marking only
// what was acknowledged, partial batch failure, attempts and backoff,
// burial and re-queue, release, claims by ID (nil versus empty),
// per-aggregate order and priority, bad input, context cancellation,
// concurrent relays, and a relay (outbox.Outbox.Run) that delivers through the
// store and stops cleanly. Every subtest gets a store of its own from
// h.New.
//
// Beyond the comments of outbox.Store, the suite expects a Claim with a
// Limit or Lease that is not positive to be an error, and a Claim with no
// due events to return a Claim with no events and no error.
func TestStore(t *testing.T, h StoreHarness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("outboxtest: StoreHarness.New is nil")
	}
	for _, tc := range storeTests {
		t.Run(tc.name, func(t *testing.T) {
			if !h.Sequential {
				t.Parallel()
			}
			if tc.skip != nil {
				if why := tc.skip(h.Features); why != "" {
					t.Skipf("not claimed by the store: %s", why)
				}
			}
			setup := h.New(t)
			if setup.Store == nil || setup.Begin == nil {
				t.Fatal("outboxtest: StoreSetup needs Store and Begin")
			}
			tc.run(newStoreT(t, setup, h.Features))
		})
	}
}

type storeTest struct {
	name string
	skip func(StoreFeatures) string // non-empty: skip with this reason
	run  func(s *storeT)
}
