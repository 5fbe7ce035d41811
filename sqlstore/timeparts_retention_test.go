package sqlstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// TestTimePartitionsRetention: Purge drops a partition past the
// retention whose events were all delivered, per row or by watermarks,
// and keeps one with a dead event or a pending one until they are
// delivered; it deletes no row of the partitions it keeps.
func TestTimePartitionsRetention(t *testing.T) {
	for _, marks := range []bool{false, true} {
		t.Run(fmt.Sprintf("watermarks=%v", marks), func(t *testing.T) {
			t.Parallel()
			opts := []Option{WithTimePartitions(time.Hour, 2*time.Hour)}
			if marks {
				opts = append(opts, WithWatermarks())
			}
			b := setup(t, Postgres, opts...)
			ctx := t.Context()
			group := func(prefix string, n int) []*outbox.Event {
				events := b.newEvents(n)
				for i, e := range events {
					e.AggregateID = fmt.Sprintf("%s-%d", prefix, i)
				}
				b.save(t, events...)
				return events
			}
			exists := func(e *outbox.Event) bool {
				t.Helper()
				name := b.store.partName(e.CreatedAt.Truncate(time.Hour), time.Hour)
				var ok bool
				if err := b.db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", b.store.t.Sibling(name[len(b.table):])).Scan(&ok); err != nil {
					t.Fatal(err)
				}
				return ok
			}
			purge := func(want int) {
				t.Helper()
				n, err := b.store.Purge(ctx, time.Hour, 1000)
				wantN(t, "Purge", n, err, want)
			}
			delivered := group("a", 5)
			b.clock.Advance(time.Hour)
			dead := group("d", 1)
			b.clock.Advance(time.Hour)
			pending := group("p", 1)

			c := b.claim(t, 100)
			if len(c.Events) != 7 {
				t.Fatalf("claimed %d events, want 7", len(c.Events))
			}
			b.mark(t, c, delivered...)
			n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: dead[0].ID, Err: "refused", Dead: true}})
			wantN(t, "Fail", n, err, 1)
			n, err = b.store.Release(ctx, c.Token, ids(pending))
			wantN(t, "Release", n, err, 1)
			b.beat(t)

			if n, err := b.store.Purge(ctx, 3*time.Hour, 1000); err != nil || n != 0 {
				t.Fatalf("Purge of partitions older than 3 hours: %d, %v; want none", n, err)
			}
			b.clock.Advance(10 * time.Hour)
			if _, err := b.store.MaintainTimePartitions(ctx); err != nil {
				t.Fatal(err)
			}
			purge(5)
			if exists(delivered[0]) || !exists(dead[0]) || !exists(pending[0]) {
				t.Fatalf("after the purge: delivered %v, dead %v, pending %v; want only the delivered partition gone",
					exists(delivered[0]), exists(dead[0]), exists(pending[0]))
			}
			purge(0)
			if got, err := b.store.Get(ctx, dead[0].ID); err != nil || got.Delivery.Status() != outbox.StatusDead {
				t.Fatalf("the dead event after the purge: %+v, %v", got, err)
			}

			n, err = b.store.Requeue(ctx, RequeueFilter{IDs: ids(dead)})
			wantN(t, "Requeue", n, err, 1)
			equalIDs(t, "delivered after requeue", b.drain(t, 100), ids(append(dead, pending...)))
			purge(1)
			purge(1)
			purge(0)
			if exists(dead[0]) || exists(pending[0]) {
				t.Fatal("a delivered partition past the retention was kept")
			}
			st, err := b.store.Stats(ctx, time.Hour)
			if err != nil || st.Pending != 0 || st.Dead != 0 {
				t.Fatalf("stats after the purges: %+v, %v", st, err)
			}
		})
	}
}

// TestTimePartDelivered checks each way timePartDelivered settles a
// partition: the fast probes of the marks, the walk of its events when a
// mark's snapshot is older than its events' transactions, and an event a
// mark does not cover.
func TestTimePartDelivered(t *testing.T) {
	b := setup(t, Postgres, WithTimePartitions(0, 0), WithWatermarks())
	ctx := t.Context()
	events := b.newEvents(5)
	b.save(t, events...)
	part := b.store.t.Sibling(b.store.partName(events[0].CreatedAt.Truncate(24*time.Hour), 24*time.Hour)[len(b.table):])
	delivered := func(what string, want bool) {
		t.Helper()
		got, err := b.store.timePartDelivered(ctx, b.db, part)
		if err != nil || got != want {
			t.Fatalf("%s: delivered %v, %v; want %v", what, got, err, want)
		}
	}
	delivered("pending, no mark yet", false)
	equalIDs(t, "drain", b.drain(t, 100), ids(events))
	delivered("covered by the marks", true)
	marks := b.store.t.Sibling(partitionsSuffix)
	if _, err := b.db.ExecContext(ctx, "UPDATE "+marks+" SET mark_snap = ('1:' || txid_snapshot_xmax(mark_snap) || ':')::txid_snapshot WHERE mark_snap IS NOT NULL"); err != nil {
		t.Fatal(err)
	}
	delivered("covered by snapshots older than the events' transactions", true)
	if _, err := b.db.ExecContext(ctx, "UPDATE "+marks+" SET mark_seq = 0 WHERE partition_no = (SELECT partition_no FROM "+b.store.t.Quoted+" LIMIT 1)"); err != nil {
		t.Fatal(err)
	}
	delivered("a mark set back before an event", false)
}

// TestTimePartitionsRetentionLockTimeout: retention waits at most
// timePartsLockTimeout for the table while a service's transaction that
// saved events holds it, fails that turn without dropping anything and
// without holding up that transaction, and drops the partition at the
// next turn; creating a partition meanwhile does not wait for it (the
// transaction's event is in a partition of its own, not the DEFAULT one).
func TestTimePartitionsRetentionLockTimeout(t *testing.T) {
	b := setup(t, Postgres, WithTimePartitions(time.Hour, 2*time.Hour))
	ctx := t.Context()
	old := b.newEvents(3)
	b.save(t, old...)
	c := b.claim(t, 10)
	b.mark(t, c, c.Events...)
	b.clock.Advance(3 * time.Hour)
	if _, err := b.store.MaintainTimePartitions(ctx); err != nil {
		t.Fatal(err)
	}

	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // committed below
	if err := b.store.Insert(ctx, tx, b.newEvents(1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := b.store.Purge(ctx, time.Hour, 1000)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "lock timeout") {
		t.Fatalf("Purge while a transaction holds the table: %d, %v; want a lock timeout", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Purge gave up after %v", d)
	}
	b.clock.Advance(2 * time.Hour)
	if st, err := b.store.MaintainTimePartitions(ctx); err != nil || st.Runway < 2*time.Hour {
		t.Fatalf("maintenance while a transaction holds the table: %+v, %v", st, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	n, err = b.store.Purge(ctx, time.Hour, 1000)
	wantN(t, "Purge after the transaction ended", n, err, 3)
}
