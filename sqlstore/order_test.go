package sqlstore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// event returns a valid event of aggregate agg with priority prio.
func (b *bundle) event(agg string, prio int) *outbox.Event {
	return &outbox.Event{
		ID: outbox.NewID(), Topic: "stock", Type: "stock.updated", AggregateID: agg,
		Payload: []byte("{}"), CreatedAt: b.clock.Now(), Priority: prio,
	}
}

// run returns n events of aggregate agg with priority 0.
func (b *bundle) run(agg string, n int) []*outbox.Event {
	out := make([]*outbox.Event, n)
	for i := range out {
		out[i] = b.event(agg, 0)
	}
	return out
}

func (b *bundle) claimReq(t *testing.T, req storage.ClaimRequest) *outbox.Claim {
	t.Helper()
	if req.Lease == 0 {
		req.Lease = time.Minute
	}
	c, err := b.store.Claim(t.Context(), req)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return c
}

func (b *bundle) mark(t *testing.T, c *outbox.Claim, events ...*outbox.Event) {
	t.Helper()
	n, err := b.store.MarkSynced(t.Context(), c.Token, ids(events))
	wantN(t, "MarkSynced", n, err, len(events))
}

func cat(runs ...[]*outbox.Event) []*outbox.Event { return slices.Concat(runs...) }

func TestOrderedClaimWaitsForLeasedHead(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		a, x := b.run("A", 3), b.run("B", 1)
		b.save(t, cat(a, x)...)
		head := b.claim(t, 1)
		equalIDs(t, "first claim", ids(head.Events), ids(a[:1]))
		// A's later events wait while its head is leased elsewhere; B flows.
		next := b.claim(t, 10)
		equalIDs(t, "while A's head is leased", ids(next.Events), ids(x))
		b.mark(t, head, a[0])
		rest := b.claim(t, 10)
		equalIDs(t, "after the head is synced", ids(rest.Events), ids(a[1:]))
	})
}

func TestOrderedClaimWaitsForBackoff(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		a, x := b.run("A", 2), b.run("B", 2)
		b.save(t, cat(a, x)...)
		c := b.claim(t, 1)
		n, err := b.store.Fail(t.Context(), c.Token, []storage.Failure{{ID: a[0].ID, Err: "down", Delay: 10 * time.Second}})
		wantN(t, "Fail", n, err, 1)
		other := b.claim(t, 10)
		equalIDs(t, "while A's head backs off", ids(other.Events), ids(x))
		b.clock.Advance(10 * time.Second)
		again := b.claim(t, 10)
		equalIDs(t, "after the backoff", ids(again.Events), ids(a))
	})
}

func TestOrderedClaimDeadHoldsAggregate(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		a, x := b.run("A", 3), b.run("B", 1)
		b.save(t, cat(a, x)...)
		c := b.claim(t, 1)
		n, err := b.store.Fail(t.Context(), c.Token, []storage.Failure{{ID: a[0].ID, Err: "poison", Dead: true}})
		wantN(t, "Fail", n, err, 1)
		held := b.claim(t, 10)
		equalIDs(t, "behind a dead event", ids(held.Events), ids(x))
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %v behind a dead event", ids(c.Events))
		}
		passed := b.claimReq(t, storage.ClaimRequest{Limit: 10, SkipDead: true})
		equalIDs(t, "with SkipDead", ids(passed.Events), ids(a[1:]))
	})
}

func TestOrderedClaimGaplessPrefix(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		a := b.run("A", 5)
		b.save(t, a...)
		first := b.claim(t, 3)
		equalIDs(t, "limited claim", ids(first.Events), ids(a[:3]))
		// The prefix's second event fails: the rest of A waits for it.
		n, err := b.store.Fail(t.Context(), first.Token, []storage.Failure{{ID: a[1].ID, Err: "x", Delay: time.Hour}})
		wantN(t, "Fail", n, err, 1)
		b.mark(t, first, a[0], a[2]) // acknowledged, as a broker may do
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %v while an earlier event backs off", ids(c.Events))
		}
		b.clock.Advance(time.Hour)
		equalIDs(t, "after the retry is due", ids(b.claim(t, 10).Events), []string{a[1].ID, a[3].ID, a[4].ID})
	})
}

func TestOrderedClaimPriority(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		low := []*outbox.Event{b.event("L1", 0), b.event("L2", 0), b.event("", 0)}
		high := []*outbox.Event{b.event("H1", 7), b.event("", 7)}
		b.save(t, cat(low, high)...)
		c := b.claim(t, 2)
		equalIDs(t, "higher priority first", ids(c.Events), ids(high))
		equalIDs(t, "then the rest", ids(b.claim(t, 10).Events), ids(low))
		if c.Events[0].Priority != 7 {
			t.Fatalf("priority read back as %d", c.Events[0].Priority)
		}

		// Order per aggregate wins over priority: A's urgent second event
		// waits for its first, and is claimed at once after it.
		a := []*outbox.Event{b.event("A", 0), b.event("A", 9), b.event("A", 9)}
		other := b.event("B", 5)
		b.save(t, append(a, other)...)
		first := b.claim(t, 10)
		equalIDs(t, "A's head and B", ids(first.Events), []string{a[0].ID, other.ID})
		b.mark(t, first, first.Events...)
		equalIDs(t, "A's urgent events", ids(b.claim(t, 10).Events), ids(a[1:]))
	})
}

func TestOrderedClaimByIDs(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		a := b.run("A", 3)
		free := b.event("", 0)
		b.save(t, append(a, free)...)
		// The immediate path names only a later event: it is left alone.
		if c := b.claim(t, 10, a[1].ID, a[2].ID); len(c.Events) != 0 {
			t.Fatalf("claimed %v by ID ahead of their aggregate's head", ids(c.Events))
		}
		c := b.claim(t, 10, a[0].ID, a[1].ID, free.ID)
		equalIDs(t, "a prefix and an unordered event", ids(c.Events), []string{a[0].ID, a[1].ID, free.ID})
		if c := b.claim(t, 10, a[2].ID); len(c.Events) != 0 {
			t.Fatalf("claimed %v by ID while earlier events are leased", ids(c.Events))
		}
		b.mark(t, c, a[0], a[1])
		equalIDs(t, "after the prefix is synced", ids(b.claim(t, 10, a[2].ID).Events), ids(a[2:]))
	})
}

func TestClaimEmptyAggregateIsUnordered(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		free := []*outbox.Event{b.event("", 0), b.event("", 0), b.event("", 0)}
		b.save(t, free...)
		c := b.claim(t, 1)
		n, err := b.store.Fail(t.Context(), c.Token, []storage.Failure{{ID: free[0].ID, Err: "x", Dead: true}})
		wantN(t, "Fail", n, err, 1)
		held := b.claim(t, 1)
		equalIDs(t, "past a leased or dead event without aggregate", ids(held.Events), ids(free[1:2]))
		equalIDs(t, "and the next", ids(b.claim(t, 10).Events), ids(free[2:]))
	})
}

// A claim another relay is making (rows locked, lease not yet committed)
// is invisible to SKIP LOCKED; the order check must still see those rows.
func TestOrderedClaimBehindInFlightClaim(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			b := setup(t, d, WithRowLeases()) // a claim in flight holds row locks
			a, x := b.run("A", 3), b.run("B", 1)
			b.save(t, cat(a, x)...)
			tx, err := b.db.BeginTxx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			lock := newQuery(b.store.sx)
			lock.sql("SELECT seq FROM ", b.store.t.Quoted, " WHERE id = ", lock.arg(a[0].ID), " FOR UPDATE")
			var seq int64
			if err := tx.QueryRowxContext(t.Context(), lock.String(), lock.args...).Scan(&seq); err != nil {
				t.Fatal(err)
			}
			c := b.claim(t, 10)
			equalIDs(t, "while A's head is locked by another claim", ids(c.Events), ids(x))
			c = b.claimReq(t, storage.ClaimRequest{Limit: 10, IDs: ids(a[1:])})
			if len(c.Events) != 0 {
				t.Fatalf("claimed %v by ID behind a locked head", ids(c.Events))
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			equalIDs(t, "once the other claim ended", ids(b.claim(t, 10).Events), ids(a))
		})
	}
}

// Many claimers claim, publish and mark in a loop, failing and releasing
// some events; no two ever hold events of one aggregate, and each
// aggregate's events are acknowledged in save order, each once.
func TestOrderedClaimStress(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		const aggregates, perAggregate, claimers = 50, 40, 6
		if b.store.Dialect() == SQLite {
			// One writer at a time anyway: queue in the pool rather than
			// in SQLite's busy handler, which is slow to hand the lock on.
			b.db.SetMaxOpenConns(1)
		}
		var events []*outbox.Event
		for i := range aggregates * perAggregate {
			events = append(events, b.event(fmt.Sprintf("agg-%d", i%aggregates), 0))
		}
		for chunk := range slices.Chunk(events, 500) {
			b.save(t, chunk...)
		}
		seqOf := make(map[string]int, len(events))
		for i, e := range events {
			seqOf[e.ID] = i
		}

		var mu sync.Mutex
		holder := map[string]int{}  // aggregate -> claimer holding it
		acked := map[string][]int{} // aggregate -> save positions in ack order
		done := 0
		var failures []string
		fail := func(format string, args ...any) {
			mu.Lock()
			failures = append(failures, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		var wg sync.WaitGroup
		for w := range claimers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				for idle := 0; idle < 2000; {
					mu.Lock()
					finished := done == len(events) || len(failures) > 0
					mu.Unlock()
					if finished {
						return
					}
					c, err := b.store.Claim(t.Context(), storage.ClaimRequest{Limit: 1 + rng.IntN(30), Lease: time.Minute})
					if err != nil {
						fail("claim: %v", err)
						return
					}
					if len(c.Events) == 0 {
						idle++
						time.Sleep(time.Millisecond)
						continue
					}
					idle = 0
					mu.Lock()
					for _, e := range c.Events {
						if h, ok := holder[e.AggregateID]; ok && h != w {
							failures = append(failures, fmt.Sprintf("claimers %d and %d both hold aggregate %s", h, w, e.AggregateID))
						}
						holder[e.AggregateID] = w
					}
					// "Publish": acknowledge in batch order until an event
					// fails; later events of its aggregate are held back.
					var ok, release []*outbox.Event
					var fails []storage.Failure
					bad := map[string]bool{}
					for _, e := range c.Events {
						switch {
						case bad[e.AggregateID]:
							release = append(release, e)
						case rng.IntN(10) == 0:
							bad[e.AggregateID] = true
							fails = append(fails, storage.Failure{ID: e.ID, Err: "nack"})
						default:
							ok = append(ok, e)
							acked[e.AggregateID] = append(acked[e.AggregateID], seqOf[e.ID])
						}
					}
					done += len(ok)
					for _, e := range c.Events {
						delete(holder, e.AggregateID)
					}
					mu.Unlock()
					if n, err := b.store.MarkSynced(t.Context(), c.Token, ids(ok)); err != nil || n != len(ok) {
						fail("mark: %d of %d, %v", n, len(ok), err)
						return
					}
					if n, err := b.store.Fail(t.Context(), c.Token, fails); err != nil || n != len(fails) {
						fail("fail: %d of %d, %v", n, len(fails), err)
						return
					}
					if n, err := b.store.Release(t.Context(), c.Token, ids(release)); err != nil || n != len(release) {
						fail("release: %d of %d, %v", n, len(release), err)
						return
					}
				}
				fail("claimer %d found nothing to claim for too long", w)
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d problems, first: %s", len(failures), failures[0])
		}
		if done != len(events) {
			t.Fatalf("acknowledged %d of %d", done, len(events))
		}
		for agg, got := range acked {
			if !slices.IsSorted(got) || len(got) != perAggregate {
				t.Fatalf("aggregate %s acknowledged in order %v", agg, got)
			}
		}
	})
}
