package outboxpgx

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/outbox/outboxtest"
	"github.com/eventsync/outbox/sqlstore"
)

// TestConformance runs the shared outbox.Store suite on the pool-backed
// store, each subtest on a table of its own, with every save through a
// pgx.Tx (Exec): once in pgx's default exec mode (prepared statements
// cached per connection) and once in the simple protocol that a
// transaction-mode PgBouncer needs. sqlstore has no clock hook outside its
// package, so leases and delays pass in real time.
func TestConformance(t *testing.T) {
	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"cache_statement", pgx.QueryExecModeCacheStatement},
		{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			// One pool for all the subtests, as a service shares one
			// between its stores and its own queries.
			pool := newPool(t, m.mode, 12)
			outboxtest.TestStore(t, outboxtest.StoreHarness{
				New: func(t *testing.T) outboxtest.StoreSetup {
					s := newStore(t, pool)
					return outboxtest.StoreSetup{
						Store: s,
						Begin: func(ctx context.Context) (outboxtest.Tx, error) { return beginTx(ctx, pool) },
						Requeue: func(ctx context.Context, ids []string) (int, error) {
							return s.Requeue(ctx, sqlstore.RequeueFilter{IDs: ids})
						},
					}
				},
			})
		})
	}
}
