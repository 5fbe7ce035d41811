package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/eventsync/outbox/outboxtest"
)

// TestConformance runs the shared outbox.Store suite on every dialect:
// SQLite always, Postgres and MySQL/MariaDB when their variables are set.
// Each subtest gets its own migrated table and a clock it can move.
func TestConformance(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			if d != SQLite {
				openDB(t, d) // skips, with the variable to set, when the server is not configured
			}
			outboxtest.TestStore(t, outboxtest.StoreHarness{
				New: func(t *testing.T) outboxtest.StoreSetup {
					return setup(t, d).storeSetup()
				},
			})
		})
	}
}

// TestConformanceWatermarks runs the suite with delivery recorded per
// partition (WithWatermarks): on Postgres with each shape of its read,
// and on SQLite.
func TestConformanceWatermarks(t *testing.T) {
	t.Run(string(SQLite), func(t *testing.T) { conformanceWatermarks(t, SQLite, 0) })
	t.Run(string(Postgres), func(t *testing.T) {
		openDB(t, Postgres)
		for _, shape := range []int{0, 1} { // adaptive (lateral for the small reads), and merged
			t.Run(map[int]string{0: "adaptive", 1: "merged"}[shape], func(t *testing.T) { conformanceWatermarks(t, Postgres, shape) })
		}
	})
}

func conformanceWatermarks(t *testing.T, d Dialect, shape int) {
	outboxtest.TestStore(t, outboxtest.StoreHarness{
		New: func(t *testing.T) outboxtest.StoreSetup {
			b := setup(t, d, WithWatermarks())
			b.store.c.(*owner).shape = shape
			return b.storeSetup()
		},
	})
}

// TestConformanceRealClock runs the suite once more on SQLite with the
// store's own clock, as a third party without a clock hook would: leases
// and delays then pass in real time.
func TestConformanceRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time leases take a few seconds; skipped with -short")
	}
	t.Parallel()
	outboxtest.TestStore(t, outboxtest.StoreHarness{
		New: func(t *testing.T) outboxtest.StoreSetup {
			db := openDB(t, SQLite)
			s := newStore(t, db, randomName("outbox_test_"))
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			return outboxtest.StoreSetup{
				Store: s,
				Begin: func(ctx context.Context) (outboxtest.Tx, error) { return db.BeginTxx(ctx, nil) },
				Requeue: func(ctx context.Context, ids []string) (int, error) {
					return s.Requeue(ctx, RequeueFilter{IDs: ids})
				},
			}
		},
	})
}

// storeSetup is the conformance suite's view of the bundle: its Store,
// transactions on its database, its clock and Requeue by IDs.
func (b *bundle) storeSetup() outboxtest.StoreSetup {
	return outboxtest.StoreSetup{
		Store:   b.store,
		Begin:   func(ctx context.Context) (outboxtest.Tx, error) { return b.db.BeginTxx(ctx, nil) },
		Advance: b.clock.Advance,
		Requeue: func(ctx context.Context, ids []string) (int, error) {
			return b.store.Requeue(ctx, RequeueFilter{IDs: ids})
		},
	}
}
