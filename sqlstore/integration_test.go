package sqlstore

import (
	"bytes"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

func TestAtomicWrite(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		// *sql.Tx: rollback leaves nothing, commit makes the events visible.
		rolled := b.newEvents(2)
		tx, err := b.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.store.Insert(ctx, tx, rolled); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		for _, e := range rolled {
			if _, err := b.store.Get(ctx, e.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after rollback: err = %v, want ErrNotFound", err)
			}
		}
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %d events after rollback", len(c.Events))
		}

		committed := b.newEvents(2)
		b.save(t, committed...)

		// *sqlx.Tx works the same way.
		viaSqlx := b.newEvents(1)
		xtx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.store.Insert(ctx, xtx, viaSqlx); err != nil {
			t.Fatal(err)
		}
		if err := xtx.Commit(); err != nil {
			t.Fatal(err)
		}
		xRolled := b.newEvents(1)
		xtx, err = b.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.store.Insert(ctx, xtx, xRolled); err != nil {
			t.Fatal(err)
		}
		if err := xtx.Rollback(); err != nil {
			t.Fatal(err)
		}

		c := b.claim(t, 10)
		equalIDs(t, "claimed", ids(c.Events), append(ids(committed), viaSqlx[0].ID))
	})
}

func TestInsertManyKeepsOrderAndIDs(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		events := b.newEvents(500)
		events[7].ID = "caller-chosen-id"
		b.save(t, events...)
		c := b.claim(t, 1000)
		equalIDs(t, "claimed", ids(c.Events), ids(events))
		for _, e := range c.Events {
			if e.Delivery.Attempts != 0 || e.Delivery.Status() != outbox.StatusPending {
				t.Fatalf("new event %s: delivery %+v, want pending with no attempts", e.ID, e.Delivery)
			}
			if !e.Delivery.NextAttemptAt.Equal(b.clock.Now()) {
				t.Fatalf("new event %s due at %v, want now (%v)", e.ID, e.Delivery.NextAttemptAt, b.clock.Now())
			}
		}
	})
}

func TestRoundTrip(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		created := time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("X", 5*3600))
		full := &outbox.Event{
			ID:          outbox.NewID(),
			Topic:       "orders",
			Type:        "order.created",
			AggregateID: "order-1",
			Payload:     []byte{0x00, 'a', 0xff, 0xfe, 0x80, 0x00, 'z'},
			Headers:     map[string]string{"traceparent": "00-abc-def-01", "ünïcode": "✓ \"quoted\""},
			CreatedAt:   created,
		}
		bare := &outbox.Event{ID: outbox.NewID(), Topic: "t", Type: "x", CreatedAt: b.clock.Now()}
		b.save(t, full, bare)

		got, err := b.store.Get(t.Context(), full.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Payload, full.Payload) {
			t.Errorf("payload = %x, want %x", got.Payload, full.Payload)
		}
		if !maps.Equal(got.Headers, full.Headers) {
			t.Errorf("headers = %v, want %v", got.Headers, full.Headers)
		}
		if got.Topic != full.Topic || got.Type != full.Type || got.AggregateID != full.AggregateID {
			t.Errorf("got %+v, want %+v", got, full)
		}
		wantCreated := created.UTC().Truncate(time.Microsecond)
		if !got.CreatedAt.Equal(wantCreated) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("CreatedAt = %v, want %v in UTC", got.CreatedAt, wantCreated)
		}

		got, err = b.store.Get(t.Context(), bare.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Headers != nil || len(got.Payload) != 0 || got.AggregateID != "" {
			t.Errorf("bare event read back as %+v", got)
		}
	})
}

func TestClaimExcludesLeased(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		events := b.newEvents(3)
		b.save(t, events...)
		first := b.claim(t, 2)
		equalIDs(t, "first claim", ids(first.Events), ids(events[:2]))
		second := b.claim(t, 2)
		equalIDs(t, "second claim", ids(second.Events), ids(events[2:]))
		if first.Token == second.Token || first.Token == "" {
			t.Fatalf("tokens %q and %q, want distinct", first.Token, second.Token)
		}
		if c := b.claim(t, 2); len(c.Events) != 0 {
			t.Fatalf("third claim got %v, want nothing", ids(c.Events))
		}
	})
}

func TestLeaseExpiryAndFencing(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		events := b.newEvents(2)
		b.save(t, events...)
		old := b.claim(t, 10) // leased for a minute

		b.clock.Advance(59 * time.Second)
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %d events before the lease ended", len(c.Events))
		}
		b.clock.Advance(time.Second) // lease ends exactly now
		taken := b.claim(t, 10)
		equalIDs(t, "after expiry", ids(taken.Events), ids(events))
		if taken.Token == old.Token {
			t.Fatal("new claim reused the old token")
		}

		// The relay that lost its lease changes nothing.
		n, err := b.store.MarkSynced(ctx, old.Token, ids(events))
		wantN(t, "MarkSynced with old token", n, err, 0)
		n, err = b.store.Fail(ctx, old.Token, []storage.Failure{{ID: events[0].ID, Err: "x", Delay: time.Hour}, {ID: events[1].ID, Err: "y", Dead: true}})
		wantN(t, "Fail with old token", n, err, 0)
		n, err = b.store.Release(ctx, old.Token, ids(events))
		wantN(t, "Release with old token", n, err, 0)
		for _, e := range events {
			got, err := b.store.Get(ctx, e.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Delivery.Attempts != 0 || got.Delivery.Status() != outbox.StatusPending {
				t.Fatalf("event changed by a stale token: %+v", got.Delivery)
			}
		}

		n, err = b.store.MarkSynced(ctx, taken.Token, ids(events))
		wantN(t, "MarkSynced with the live token", n, err, 2)
		n, err = b.store.MarkSynced(ctx, taken.Token, ids(events))
		wantN(t, "second MarkSynced", n, err, 0)
		b.clock.Advance(time.Hour)
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed synced events: %v", ids(c.Events))
		}
		got, err := b.store.Get(ctx, events[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Delivery.Status() != outbox.StatusSynced {
			t.Fatalf("status %s, want synced", got.Delivery.Status())
		}
	})
}

func TestFailReschedules(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		events := b.newEvents(3)
		b.save(t, events...)
		c := b.claim(t, 10)
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{
			{ID: events[0].ID, Err: "broker down", Delay: 10 * time.Second},
			{ID: events[1].ID, Err: "timeout", Delay: time.Hour},
		})
		wantN(t, "Fail", n, err, 2)
		// The third event is still leased by c.
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %v before any retry was due", ids(c.Events))
		}
		b.clock.Advance(9 * time.Second)
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %v before the retry was due", ids(c.Events))
		}
		b.clock.Advance(time.Second)
		retry := b.claim(t, 10)
		equalIDs(t, "retry after 10s", ids(retry.Events), ids(events[:1]))
		d := retry.Events[0].Delivery
		if d.Attempts != 1 || d.LastError != "broker down" {
			t.Fatalf("delivery after one failure: %+v", d)
		}

		n, err = b.store.Fail(ctx, retry.Token, []storage.Failure{{ID: events[0].ID, Err: "still down", Delay: time.Minute}})
		wantN(t, "second Fail", n, err, 1)
		b.clock.Advance(time.Hour)
		later := b.claim(t, 10) // the third event's lease has ended too
		equalIDs(t, "after an hour", ids(later.Events), ids(events))
		if d := later.Events[0].Delivery; d.Attempts != 2 || d.LastError != "still down" {
			t.Fatalf("delivery after two failures: %+v", d)
		}
		if d := later.Events[1].Delivery; d.Attempts != 1 || d.LastError != "timeout" {
			t.Fatalf("delivery of the other event: %+v", d)
		}
	})
}

func TestFailDeadBuries(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		events := b.newEvents(2)
		b.save(t, events...)
		c := b.claim(t, 10)
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{
			{ID: events[0].ID, Err: "poison", Dead: true},
			{ID: events[1].ID, Err: "flaky", Delay: time.Second},
		})
		wantN(t, "Fail", n, err, 2)
		b.clock.Advance(365 * 24 * time.Hour)
		again := b.claim(t, 10)
		equalIDs(t, "claim after a year", ids(again.Events), ids(events[1:]))

		got, err := b.store.Get(ctx, events[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Delivery.Status() != outbox.StatusDead || got.Delivery.Attempts != 1 || got.Delivery.LastError != "poison" {
			t.Fatalf("buried event: %+v", got.Delivery)
		}
		st, err := b.store.Stats(ctx, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead != 1 || st.Pending != 1 {
			t.Fatalf("stats %+v, want 1 dead and 1 pending", st)
		}
	})
}

func TestRelease(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		events := b.newEvents(2)
		b.save(t, events...)
		c := b.claim(t, 10)
		n, err := b.store.Release(t.Context(), c.Token, ids(events[:1]))
		wantN(t, "Release", n, err, 1)
		again := b.claim(t, 10)
		equalIDs(t, "claim after release", ids(again.Events), ids(events[:1]))
		if d := again.Events[0].Delivery; d.Attempts != 0 || d.LastError != "" {
			t.Fatalf("release counted an attempt: %+v", d)
		}
	})
}

func TestClaimByIDs(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		events := b.newEvents(4)
		b.save(t, events[:3]...)
		synced := b.claim(t, 1, events[2].ID)
		n, err := b.store.MarkSynced(ctx, synced.Token, []string{events[2].ID})
		wantN(t, "MarkSynced", n, err, 1)

		want := []string{events[1].ID}
		if b.store.Dialect() != SQLite {
			// An open writer would hold SQLite's only write lock, and the
			// claim would wait for it; on the servers it must simply not
			// see the uncommitted row.
			tx, err := b.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if err := b.store.Insert(ctx, tx, events[3:]); err != nil {
				t.Fatal(err)
			}
		}
		c := b.claim(t, 10, events[3].ID, events[2].ID, events[1].ID, "no-such-event", events[1].ID)
		equalIDs(t, "claim by IDs", ids(c.Events), want)

		if c := b.claim(t, 10, events[1].ID); len(c.Events) != 0 {
			t.Fatal("claimed a leased event by ID")
		}
		if c := b.claim(t, 10, []string{}...); len(c.Events) != 0 {
			t.Fatalf("claim with an empty ID list: %v, want nothing", ids(c.Events))
		}
	})
}

func TestConcurrentClaimers(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		const total, workers = 1000, 4
		events := b.newEvents(total)
		b.save(t, events...)

		var mu sync.Mutex
		seen := make(map[string]int, total)
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				for {
					c, err := b.store.Claim(t.Context(), storage.ClaimRequest{Limit: 25, Lease: time.Minute})
					if err != nil {
						errs <- err
						return
					}
					if len(c.Events) == 0 {
						// With per-aggregate order an empty claim may only
						// mean that other claimers hold the heads of every
						// aggregate: stop when nothing is pending.
						st, err := b.store.Stats(t.Context(), 24*time.Hour)
						if err != nil {
							errs <- err
							return
						}
						if st.Pending == 0 {
							return
						}
						time.Sleep(time.Millisecond)
						continue
					}
					mu.Lock()
					for _, e := range c.Events {
						seen[e.ID]++
					}
					mu.Unlock()
					if _, err := b.store.MarkSynced(t.Context(), c.Token, ids(c.Events)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(seen) != total {
			t.Fatalf("claimed %d distinct events, want %d", len(seen), total)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("event %s claimed %d times", id, n)
			}
		}
		st, err := b.store.Stats(t.Context(), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Synced != total || st.Pending != 0 {
			t.Fatalf("stats %+v, want all %d synced", st, total)
		}
	})
}
