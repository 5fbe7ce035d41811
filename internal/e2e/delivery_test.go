package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

func newEvents(topic string, n int) []*outbox.Event {
	out := make([]*outbox.Event, n)
	for i := range out {
		out[i] = &outbox.Event{
			Topic: topic, Type: "stock.updated", AggregateID: fmt.Sprintf("p%d", i%3),
			Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}
	}
	return out
}

func idsOf(events []*outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func newOutbox(t *testing.T, store outbox.Store, pub outbox.Publisher, opts ...outbox.Option) *outbox.Outbox {
	t.Helper()
	ob, err := outbox.New(store, pub, append([]outbox.Option{
		outbox.WithBackoff(time.Millisecond, time.Millisecond), outbox.WithLogger(testLogger(t)),
	}, opts...)...)
	mustNoErr(t, err, "outbox.New")
	return ob
}

// saveCommitted saves events in a transaction of its own and commits,
// without publishing: what the relay finds after a crash right after commit.
func saveCommitted(t *testing.T, db *sqlx.DB, ob *outbox.Outbox, events ...*outbox.Event) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	mustNoErr(t, err, "begin")
	mustNoErr(t, ob.Save(ctx, tx, events...), "save")
	mustNoErr(t, tx.Commit(), "commit")
}

func status(t *testing.T, store *sqlstore.Store, id string) *outbox.Event {
	t.Helper()
	e, err := store.Get(context.Background(), id)
	mustNoErr(t, err, "get %s", id)
	return e
}

// The original system's first test: a failed first publish leaves the
// event pending with its attempt recorded; the relay's next pass marks it.
func TestSeedFailedPublishStaysPendingThenRelayMarks(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		pub := outboxtest.NewPublisher()
		pub.SetDown(errors.New("dial tcp: connection refused"))
		ob := newOutbox(t, store, pub)

		ev := &outbox.Event{Topic: "inventory", Type: "stock.created", AggregateID: "s1/p1", Payload: []byte("{}")}
		_, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, ev) })
		mustNoErr(t, err, "the business operation must not fail because the broker is down")

		got := status(t, store, ev.ID)
		if got.Delivery.Status() != outbox.StatusPending || got.Delivery.Attempts != 1 ||
			!strings.Contains(got.Delivery.LastError, "connection refused") || got.Delivery.NextAttemptAt.Before(got.CreatedAt) {
			t.Fatalf("after a failed publish: %+v", got.Delivery)
		}

		pub.SetDown(nil)
		time.Sleep(5 * time.Millisecond) // past the 1ms backoff
		res, err := ob.SyncPending(ctx, 100)
		mustNoErr(t, err, "sync")
		if res.Synced != 1 || status(t, store, ev.ID).Delivery.Status() != outbox.StatusSynced {
			t.Fatalf("second pass: %+v", res)
		}
	})
}

// The second: of 4 pending events 2 fail; exactly the other 2 are marked.
func TestSeedTwoOfFourFail(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		pub := outboxtest.NewPublisher()
		ob := newOutbox(t, store, pub)
		evs := newEvents("inventory", 4)
		saveCommitted(t, db, ob, evs...)
		pub.FailWhen(func(e *outbox.Event) error {
			if e.ID == evs[1].ID || e.ID == evs[3].ID {
				return errors.New("rejected")
			}
			return nil
		})
		res, err := ob.SyncPending(context.Background(), 100)
		mustNoErr(t, err, "sync")
		if res.Claimed != 4 || res.Synced != 2 || res.Failed != 2 {
			t.Fatalf("result %+v", res)
		}
		for i, want := range []outbox.Status{outbox.StatusSynced, outbox.StatusPending, outbox.StatusSynced, outbox.StatusPending} {
			if got := status(t, store, evs[i].ID).Delivery; got.Status() != want {
				t.Errorf("event %d: %s, want %s", i, got.Status(), want)
			}
		}
	})
}

// The third: a publisher that accepts everything marks the whole backlog in
// one pass.
func TestSeedNoopMarksAllInOnePass(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ob := newOutbox(t, store, outbox.Noop{})
		saveCommitted(t, db, ob, newEvents("inventory", 50)...)
		res, err := ob.SyncPending(context.Background(), 100)
		mustNoErr(t, err, "sync")
		st, err := store.Stats(context.Background(), time.Hour)
		mustNoErr(t, err, "stats")
		if res.Synced != 50 || st.Pending != 0 || st.Synced != 50 {
			t.Fatalf("result %+v, stats %+v", res, st)
		}
	})
}

// Guarantee 1: an event exists iff the caller's transaction commits.
func TestAtomicWrite(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		ob := newOutbox(t, store, outbox.Noop{})
		exists := func(id string) bool {
			_, err := store.Get(ctx, id)
			if err != nil && !errors.Is(err, sqlstore.ErrNotFound) {
				t.Fatal(err)
			}
			return err == nil
		}

		// Transact: fn's error rolls back the event with the business writes.
		ev := newEvents("atomic", 1)[0]
		boom := errors.New("out of stock")
		_, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error {
			if err := tx.Save(ctx, ev); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || exists(ev.ID) {
			t.Fatalf("Transact with a failing fn: err %v, event exists %v", err, exists(ev.ID))
		}

		// A panic rolls back too, and still panics.
		ev = newEvents("atomic", 1)[0]
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic was swallowed")
				}
			}()
			_, _ = ob.Transact(ctx, db, func(tx *outbox.Tx) error {
				_ = tx.Save(ctx, ev)
				panic("bug in business code")
			})
		}()
		if exists(ev.ID) {
			t.Error("event of a panicking transaction exists")
		}

		// The caller's own *sqlx.Tx: rollback leaves none, commit leaves all,
		// many events are one call.
		evs := newEvents("atomic", 3)
		tx, err := db.BeginTxx(ctx, nil)
		mustNoErr(t, err, "begin")
		mustNoErr(t, ob.Save(ctx, tx, evs...), "save")
		mustNoErr(t, tx.Rollback(), "rollback")
		for _, e := range evs {
			if exists(e.ID) {
				t.Errorf("rolled-back event %s exists", e.ID)
			}
		}
		saveCommitted(t, db, ob, evs...)
		for _, e := range evs {
			if !exists(e.ID) {
				t.Errorf("committed event %s is missing", e.ID)
			}
		}

		// A transaction already ended is refused, clearly.
		tx2, err := db.BeginTx(ctx, nil)
		mustNoErr(t, err, "begin")
		mustNoErr(t, tx2.Commit(), "commit")
		if err := ob.Save(ctx, tx2, newEvents("atomic", 1)...); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("Save on a committed tx = %v, want sql.ErrTxDone", err)
		}
	})
}

// Guarantees 2 and 3 with the real Redis publisher: commit while Redis is
// down leaves the events pending; once Redis is back the relay delivers
// them, and the stream holds exactly the committed events, in order.
func TestRedisDownThenBack(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		b := newBroker(t)
		pub, err := redisstream.New(b.client)
		mustNoErr(t, err, "redisstream.New")
		ob := newOutbox(t, store, pub, outbox.WithInterval(20*time.Millisecond), outbox.WithTimeout(2*time.Second))
		stream := b.prefix + "inventory"

		save := func(n int) []*outbox.Event {
			evs := newEvents(stream, n)
			_, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, evs...) })
			mustNoErr(t, err, "transact")
			return evs
		}
		up := save(3) // published at once
		if got := b.ids(t, stream); !slices.Equal(got, idsOf(up)) {
			t.Fatalf("with Redis up the stream holds %v, want %v", got, idsOf(up))
		}

		b.proxy.Cut()
		down := save(5)
		for _, e := range down {
			if d := status(t, store, e.ID).Delivery; d.Status() != outbox.StatusPending || d.Attempts != 1 || d.LastError == "" {
				t.Fatalf("with Redis down, event %s: %+v", e.ID, d)
			}
		}
		rolledBack := newEvents(stream, 1)
		_, _ = ob.Transact(ctx, db, func(tx *outbox.Tx) error { _ = tx.Save(ctx, rolledBack...); return errors.New("abort") })

		b.proxy.Restore()
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ob.Run(runCtx) }()
		waitFor(t, "the backlog to drain", func() bool {
			st, err := store.Stats(ctx, time.Hour)
			return err == nil && st.Pending == 0
		})
		stop()
		mustNoErr(t, <-done, "Run")

		want := append(idsOf(up), idsOf(down)...)
		if got := b.ids(t, stream); !slices.Equal(got, want) {
			t.Fatalf("stream holds %v,\nwant exactly the committed events %v", got, want)
		}
	})
}

// markFailsOnce is a Store that cannot mark the first claim it is asked
// to mark, however often the relay tries: the crash window between the
// broker's ack and the mark. Marks of every later claim go through.
type markFailsOnce struct {
	outbox.Store
	mu    sync.Mutex
	token string // the claim whose marks fail
}

func (s *markFailsOnce) MarkSynced(ctx context.Context, token string, ids []string) (int, error) {
	s.mu.Lock()
	if s.token == "" {
		s.token = token
	}
	fail := s.token == token
	s.mu.Unlock()
	if fail {
		return 0, errors.New("connection reset by peer")
	}
	return s.Store.MarkSynced(ctx, token, ids)
}

// Guarantee 3: a failure between the broker's ack and the mark loses
// nothing; the event is published again, with the same ID, when its lease
// ends.
func TestMarkFailsAfterPublish(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		b := newBroker(t)
		pub, err := redisstream.New(b.client)
		mustNoErr(t, err, "redisstream.New")
		flaky := &markFailsOnce{Store: store}
		// A lease long enough that the second pass surely runs within
		// it, on a loaded machine too.
		lease := 1500 * time.Millisecond
		ob := newOutbox(t, flaky, pub, outbox.WithTimeout(500*time.Millisecond), outbox.WithLease(lease))
		stream := b.prefix + "inventory"
		ev := newEvents(stream, 1)[0]
		saveCommitted(t, db, ob, ev)

		if _, err := ob.SyncPending(ctx, 10); err == nil {
			t.Fatal("a failed mark was not reported")
		}
		if d := status(t, store, ev.ID).Delivery; d.Status() != outbox.StatusPending {
			t.Fatalf("event marked although the mark failed: %+v", d)
		}
		if res, _ := ob.SyncPending(ctx, 10); res.Claimed != 0 {
			t.Fatalf("event claimed again while its lease holds: %+v", res)
		}
		time.Sleep(lease + 50*time.Millisecond)
		res, err := ob.SyncPending(ctx, 10)
		mustNoErr(t, err, "sync after the lease")
		if res.Synced != 1 || status(t, store, ev.ID).Delivery.Status() != outbox.StatusSynced {
			t.Fatalf("after the lease: %+v", res)
		}
		if got := b.ids(t, stream); !slices.Equal(got, []string{ev.ID, ev.ID}) {
			t.Fatalf("stream holds %v, want the event twice with the same ID", got)
		}
	})
}

// A relay killed mid-batch: its claim lapses and another relay delivers
// the events.
func TestRelayKilledMidBatch(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		pub := outboxtest.NewPublisher()
		lease := 300 * time.Millisecond
		ob := newOutbox(t, store, pub, outbox.WithTimeout(100*time.Millisecond), outbox.WithLease(lease))
		evs := newEvents("inventory", 5)
		for i, e := range evs {
			e.AggregateID = fmt.Sprintf("item-%d", i) // independent: none waits behind another
		}
		saveCommitted(t, db, ob, evs...)

		dead, err := store.Claim(ctx, storage.ClaimRequest{Limit: 3, Lease: lease}) // then the process dies
		mustNoErr(t, err, "claim")
		if len(dead.Events) != 3 {
			t.Fatalf("claimed %d", len(dead.Events))
		}
		res, err := ob.SyncPending(ctx, 10)
		mustNoErr(t, err, "sync")
		if res.Synced != 2 {
			t.Fatalf("while the dead relay's lease holds, synced %d, want the 2 unclaimed", res.Synced)
		}
		time.Sleep(lease + 50*time.Millisecond)
		res, err = ob.SyncPending(ctx, 10)
		mustNoErr(t, err, "sync")
		if res.Synced != 3 {
			t.Fatalf("after the lease, synced %d, want 3", res.Synced)
		}
		if n, _ := store.MarkSynced(ctx, dead.Token, idsOf(dead.Events)); n != 0 {
			t.Errorf("the dead relay's stale token still marked %d events", n)
		}
		if got := idsOf(pub.Published()); !slices.Equal(sorted(got), sorted(idsOf(evs))) {
			t.Errorf("published %v", got)
		}
	})
}

// Guarantee 8: stopping the relay mid-publish releases its batch (no
// attempt counted) and Run returns; the next relay takes the events at once.
func TestStopReleasesBatch(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		entered := make(chan struct{})
		slow := outbox.PublisherFunc(func(ctx context.Context, evs []*outbox.Event) error {
			close(entered)
			<-ctx.Done() // a broker that never answers
			return ctx.Err()
		})
		ob := newOutbox(t, store, slow, outbox.WithTimeout(time.Minute))
		evs := newEvents("inventory", 4)
		saveCommitted(t, db, ob, evs...)

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ob.Run(runCtx) }()
		<-entered
		stop()
		select {
		case err := <-done:
			mustNoErr(t, err, "Run")
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after stop")
		}
		for _, e := range evs {
			if d := status(t, store, e.ID).Delivery; d.Attempts != 0 || d.Status() != outbox.StatusPending {
				t.Errorf("event %s after stop: %+v", e.ID, d)
			}
		}
		next := newOutbox(t, store, outbox.Noop{})
		res, err := next.SyncPending(ctx, 10)
		mustNoErr(t, err, "sync")
		if res.Synced != 4 {
			t.Fatalf("the next relay synced %d of the released events, want 4", res.Synced)
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
