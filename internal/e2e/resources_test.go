package e2e

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// Guarantee 7: nothing holds a database connection, let alone a
// transaction, while it talks to the broker. With the pool cut to one
// connection, a query the publisher runs mid-publish on the same pool can
// only get through if the relay (and the immediate path after commit) let
// go of the database before publishing.
func TestNoConnectionHeldWhilePublishing(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		db.SetMaxOpenConns(1)
		ctx := context.Background()
		var publishes, blocked atomic.Int32
		pub := outbox.PublisherFunc(func(ctx context.Context, evs []*outbox.Event) error {
			publishes.Add(1)
			qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var one int
			if err := db.QueryRowContext(qctx, "SELECT 1").Scan(&one); err != nil {
				blocked.Add(1)
				return errors.New("the database pool was held during publish")
			}
			return nil
		})
		ob := newOutbox(t, store, pub)

		// The immediate path after commit.
		mustNoErr(t, transactErr(ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, newEvents("t", 3)...) })), "transact")
		// The relay.
		saveCommitted(t, db, ob, newEvents("t", 5)...)
		res, err := ob.SyncPending(ctx, 100)
		mustNoErr(t, err, "sync")

		if publishes.Load() != 2 || blocked.Load() != 0 {
			t.Fatalf("%d publishes, %d of them found the pool held", publishes.Load(), blocked.Load())
		}
		if res.Synced != 5 {
			t.Fatalf("relay pass: %+v", res)
		}
	})
}
