package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

func noOrder(f StoreFeatures) string {
	if f.NoOrder {
		return "per-aggregate order (StoreFeatures.NoOrder)"
	}
	return ""
}

var storeTests = []storeTest{
	{name: "SaveCommitAndRollback", run: testSaveCommitAndRollback},
	{name: "RoundTrip", run: testRoundTrip},
	{name: "ClaimLeases", run: testClaimLeases},
	{name: "LeaseExpiryAndFencing", run: testLeaseExpiryAndFencing},
	{name: "MarkOnlyAcknowledged", run: testMarkOnlyAcknowledged},
	{name: "FailCountsAttempts", run: testFailCountsAttempts},
	{name: "Bury", run: testBury},
	{name: "Release", run: testRelease},
	{name: "ClaimByIDs", run: testClaimByIDs},
	{name: "OrderGaplessPrefix", skip: noOrder, run: testOrderGaplessPrefix},
	{name: "OrderBackoffHoldsAggregate", skip: noOrder, run: testOrderBackoff},
	{name: "OrderDeadHoldsAggregate", skip: noOrder, run: testOrderDead},
	{name: "OrderByIDs", skip: noOrder, run: testOrderByIDs},
	{name: "Unordered", run: testUnordered},
	{name: "Priority", skip: func(f StoreFeatures) string {
		if f.NoPriority {
			return "Event.Priority (StoreFeatures.NoPriority)"
		}
		return ""
	}, run: testPriority},
	{name: "Requeue", run: testRequeue},
	{name: "BadInput", run: testBadInput},
	{name: "ContextCancelled", run: testContextCancelled},
	{name: "ConcurrentRelays", skip: func(f StoreFeatures) string {
		if f.NoConcurrentRelays {
			return "several relays on one store (StoreFeatures.NoConcurrentRelays)"
		}
		return ""
	}, run: testConcurrentRelays},
	{name: "WorkerPartialFailure", run: testWorkerPartialFailure},
	{name: "WorkerCleanStop", run: testWorkerCleanStop},
}

// Insert writes through the caller's transaction and never ends it: a
// rollback leaves nothing, a commit makes the events claimable, and an
// ended transaction is an error.
func testSaveCommitAndRollback(s *storeT) {
	ctx := s.Context()
	rolled := s.events("", 2)
	tx, err := s.setup.Begin(ctx)
	if err != nil {
		s.Fatalf("begin: %v", err)
	}
	if err := s.store.Insert(ctx, tx, rolled); err != nil {
		s.Fatalf("Insert: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		s.Fatalf("rollback after Insert: %v (did Insert end the caller's transaction?)", err)
	}
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after rollback")

	committed := s.events("", 3)
	s.save(committed...) // fails if Insert committed on its own
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after commit", committed...)

	tx, err = s.setup.Begin(ctx)
	if err != nil {
		s.Fatalf("begin: %v", err)
	}
	if err := tx.Commit(); err != nil {
		s.Fatalf("commit: %v", err)
	}
	late := s.events("", 1)
	if err := s.store.Insert(ctx, tx, late); err == nil {
		s.Fatal("Insert through a committed transaction returned nil")
	}
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after an Insert on an ended transaction")
}

// Every field Save sets comes back from Claim unchanged, with a fresh
// delivery state.
func testRoundTrip(s *storeT) {
	full := s.event("order-1")
	full.Payload = []byte{0, 1, 2, 0xff, 0xfe, '\n', '"', '\\'}
	full.Headers = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "ключ": "значение"}
	full.Priority = 7
	empty := s.event("")
	empty.Payload = nil
	long := s.event(fmt.Sprintf("%0255d", 1)) // every field at its longest
	long.Type = fmt.Sprintf("%0255d", 2)
	long.Topic = fmt.Sprintf("%0255d", 3)
	long.ID = fmt.Sprintf("%064d", 4)
	s.save(full, empty, long)
	c := s.claimN(10)
	if len(c.Events) != 3 {
		s.Fatalf("claimed %d events, want 3", len(c.Events))
	}
	byID := map[string]*outbox.Event{}
	for _, e := range c.Events {
		byID[e.ID] = e
	}
	for _, want := range []*outbox.Event{full, empty, long} {
		got := byID[want.ID]
		if got == nil {
			s.Fatalf("event %s was not claimed", want.ID)
		}
		sameEvent(s.T, "claimed event", got, want)
		if got.Delivery.Attempts != 0 || got.Delivery.LastError != "" || got.Delivery.Status() != outbox.StatusPending {
			s.Fatalf("new event %s has delivery state %+v, want pending with no attempts", got.ID, got.Delivery)
		}
	}
	if s.features.NoPriority {
		return
	}
	if byID[full.ID].Priority != 7 {
		s.Fatalf("Priority came back as %d, want 7", byID[full.ID].Priority)
	}
}

// Claim takes at most Limit due events in save order under a fresh token,
// and a leased event is not claimed again while its lease lasts.
func testClaimLeases(s *storeT) {
	events := s.events("", 5)
	s.save(events...)
	c1 := s.wantClaim(storage.ClaimRequest{Limit: 3}, "first claim", events[:3]...)
	c2 := s.wantClaim(storage.ClaimRequest{Limit: 3}, "second claim", events[3:]...)
	if c1.Token == c2.Token {
		s.Fatalf("two claims share the token %q", c1.Token)
	}
	s.wantClaim(storage.ClaimRequest{Limit: 3}, "claim with everything leased")
}

// An expired lease can be claimed again under a new token; the old token
// then changes nothing (fencing).
func testLeaseExpiryAndFencing(s *storeT) {
	events := s.events("", 2)
	s.save(events...)
	old := s.wantClaim(storage.ClaimRequest{Limit: 10, Lease: s.unit}, "first claim", events...)
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim while leased")
	s.pastUnit()
	cur := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after the lease ended", events...)
	if cur.Token == old.Token {
		s.Fatal("a re-claim kept the expired claim's token")
	}
	s.mark(old.Token, 0, events...)
	s.fail(old.Token, 0, storage.Failure{ID: events[0].ID, Err: "stale", Dead: true})
	s.release(old.Token, 0, events...)
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after the stale token's writes")
	s.mark(cur.Token, 2, events...)
	s.mark(cur.Token, 0, events...)
	s.pastUnit()
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after everything was marked")
}

// Only the acknowledged events of a batch are marked; the others are
// failed or released and come back.
func testMarkOnlyAcknowledged(s *storeT) {
	events := []*outbox.Event{s.event("a"), s.event("b"), s.event("c"), s.event("d")}
	s.save(events...)
	c := s.wantClaim(storage.ClaimRequest{Limit: 4}, "claim", events...)
	s.mark(c.Token, 2, events[0], events[2])
	s.fail(c.Token, 1, storage.Failure{ID: events[1].ID, Err: "broker said no"})
	s.release(c.Token, 1, events[3])
	got := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after a partial batch", events[1], events[3])
	if d := got.Events[0].Delivery; d.Attempts != 1 || d.LastError != "broker said no" {
		s.Fatalf("failed event has delivery %+v, want 1 attempt and its error", d)
	}
	if d := got.Events[1].Delivery; d.Attempts != 0 {
		s.Fatalf("released event has %d attempts, want 0", d.Attempts)
	}
	n, err := s.store.MarkSynced(s.Context(), got.Token, []string{"no-such-event"})
	wantCount(s.T, "MarkSynced of an unknown ID", n, err, 0)
	n, err = s.store.MarkSynced(s.Context(), got.Token, nil)
	wantCount(s.T, "MarkSynced of no IDs", n, err, 0)
	s.mark(got.Token, 2, got.Events...)
}

// Fail counts attempts, keeps the last error and makes the event due
// again after the delay.
func testFailCountsAttempts(s *storeT) {
	e := s.event("")
	s.save(e)
	c := s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim", e)
	s.fail(c.Token, 1, storage.Failure{ID: e.ID, Err: "first", Delay: s.unit})
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim while backing off")
	s.pastUnit()
	c = s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim after the delay", e)
	d := c.Events[0].Delivery
	if d.Attempts != 1 || d.LastError != "first" {
		s.Fatalf("after one failure: delivery %+v, want 1 attempt, last error %q", d, "first")
	}
	s.fail(c.Token, 1, storage.Failure{ID: e.ID, Err: "second"}) // no delay: due at once
	c = s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim after a failure without delay", e)
	if d := c.Events[0].Delivery; d.Attempts != 2 || d.LastError != "second" {
		s.Fatalf("after two failures: delivery %+v, want 2 attempts, last error %q", d, "second")
	}
}

// A Failure with Dead buries the event: it is never claimed again.
func testBury(s *storeT) {
	dead, live := s.event(""), s.event("")
	s.save(dead, live)
	c := s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim", dead, live)
	s.fail(c.Token, 1, storage.Failure{ID: dead.ID, Err: "poison", Dead: true})
	s.release(c.Token, 1, live)
	s.pastUnit()
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after burial", live)
	s.wantClaim(storage.ClaimRequest{Limit: 10, SkipDead: true}, "claim with SkipDead after burial")
	s.wantClaim(storage.ClaimRequest{Limit: 10, Unordered: true}, "unordered claim after burial")
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: []string{dead.ID}}, "claim of the buried event by ID")
}

// Release gives events back at once without counting an attempt; a wrong
// token releases nothing.
func testRelease(s *storeT) {
	events := s.events("", 2)
	s.save(events...)
	c := s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim", events...)
	s.release("not-the-token", 0, events...)
	s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim after a release with a wrong token")
	s.release(c.Token, 2, events...)
	c = s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim after release", events...)
	for _, e := range c.Events {
		if e.Delivery.Attempts != 0 {
			s.Fatalf("released event %s has %d attempts, want 0", e.ID, e.Delivery.Attempts)
		}
	}
}

// IDs nil claims any due event; IDs empty claims none; IDs set claims only
// those that are due.
func testClaimByIDs(s *storeT) {
	events := s.events("", 3)
	s.save(events...)
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: []string{}}, "claim with empty, non-nil IDs")
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: []string{events[1].ID, "no-such-event", events[1].ID}}, "claim by IDs", events[1])
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: []string{events[1].ID}}, "claim of a leased event by ID")
	s.wantClaim(storage.ClaimRequest{Limit: 1, IDs: idsOf(events)}, "claim by IDs with a limit", events[0])
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim with nil IDs", events[2])
}

// The default claim takes an aggregate's events only as a gapless prefix
// of its undelivered events, and none while an earlier one is leased.
func testOrderGaplessPrefix(s *storeT) {
	x := s.events("x", 3)
	y := s.event("y")
	free := s.event("")
	s.save(x[0], x[1], y, x[2], free)
	c1 := s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim of two", x[0], x[1])
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim while x's first events are leased", y, free)
	s.mark(c1.Token, 1, x[0])
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim while x's second event is leased")
	s.release(c1.Token, 1, x[1])
	c := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after x's lease was released", x[1], x[2])
	s.mark(c.Token, 2, x[1], x[2])
}

// A failed event backing off holds back the later events of its
// aggregate, and only of its aggregate.
func testOrderBackoff(s *storeT) {
	x := s.events("x", 2)
	y := s.events("y", 2)
	free := s.events("", 2)
	s.save(x[0], free[0], x[1], y[0], free[1], y[1])
	c := s.wantClaim(storage.ClaimRequest{Limit: 2}, "claim", x[0], free[0])
	s.fail(c.Token, 2,
		storage.Failure{ID: x[0].ID, Err: "down", Delay: s.unit},
		storage.Failure{ID: free[0].ID, Err: "down", Delay: s.unit})
	c = s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim while x's first event backs off", y[0], free[1], y[1])
	s.mark(c.Token, 3, c.Events...)
	s.pastUnit()
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after the backoff", x[0], free[0], x[1])
}

// A buried event holds its aggregate unless SkipDead; Unordered passes it
// too.
func testOrderDead(s *storeT) {
	x := s.events("x", 3)
	s.save(x...)
	c := s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim", x[0])
	s.fail(c.Token, 1, storage.Failure{ID: x[0].ID, Err: "poison", Dead: true})
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim behind a buried event")
	c = s.wantClaim(storage.ClaimRequest{Limit: 1, SkipDead: true}, "claim with SkipDead", x[1])
	s.wantClaim(storage.ClaimRequest{Limit: 10, SkipDead: true}, "claim with SkipDead while x's second event is leased")
	s.mark(c.Token, 1, x[1])
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim behind a buried event, after a later one was synced")
	s.wantClaim(storage.ClaimRequest{Limit: 10, SkipDead: true}, "claim with SkipDead of the rest", x[2])
}

// A claim by IDs keeps order too: an event whose earlier undelivered event
// is not among the IDs is not claimed.
func testOrderByIDs(s *storeT) {
	x := s.events("x", 2)
	s.save(x...)
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: []string{x[1].ID}}, "claim of x's second event alone")
	s.wantClaim(storage.ClaimRequest{Limit: 10, IDs: idsOf(x)}, "claim of both by IDs", x...)
}

// Unordered may claim any due event, even past a leased earlier event of
// its aggregate.
func testUnordered(s *storeT) {
	x := s.events("x", 2)
	s.save(x...)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim", x[0])
	s.wantClaim(storage.ClaimRequest{Limit: 10, Unordered: true}, "unordered claim", x[1])
}

// Higher priority is claimed first; within a claim events are in save
// order; an aggregate's order still beats priority.
func testPriority(s *storeT) {
	low, high, mid, highFree := s.event("a"), s.event("b"), s.event("c"), s.event("")
	low.Priority, high.Priority, mid.Priority, highFree.Priority = 0, 5, 1, 5
	s.save(low, high, mid, highFree)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "first claim", high)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "second claim", highFree)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "third claim", mid)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "fourth claim", low)

	before, urgent := s.event("x"), s.event("x")
	urgent.Priority = 9
	neg := s.event("")
	neg.Priority = outbox.MinPriority
	top := s.event("")
	top.Priority = outbox.MaxPriority
	s.save(neg, before, urgent, top)
	s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim of the highest priority", top)
	if s.features.NoOrder {
		s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim of the rest", neg, before, urgent)
		return
	}
	c := s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim with an urgent event behind a normal one", before)
	s.mark(c.Token, 1, before)
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim of the rest", neg, urgent)
}

// A buried event re-queued is due at once, and its aggregate follows it.
func testRequeue(s *storeT) {
	if s.setup.Requeue == nil {
		s.Skip("not claimed by the store: re-queue of buried events (StoreSetup.Requeue is nil)")
	}
	x := s.events("x", 2)
	s.save(x...)
	c := s.wantClaim(storage.ClaimRequest{Limit: 1}, "claim", x[0])
	s.fail(c.Token, 1, storage.Failure{ID: x[0].ID, Err: "poison", Dead: true})
	n, err := s.setup.Requeue(s.Context(), []string{"no-such-event"})
	wantCount(s.T, "Requeue of an unknown ID", n, err, 0)
	n, err = s.setup.Requeue(s.Context(), []string{x[0].ID})
	wantCount(s.T, "Requeue", n, err, 1)
	want := x
	if s.features.NoOrder {
		want = x[:1]
		s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim", x[1])
	}
	c = s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after Requeue", want...)
	if st := c.Events[0].Delivery.Status(); st != outbox.StatusPending {
		s.Fatalf("re-queued event has status %s, want pending", st)
	}
	n, err = s.setup.Requeue(s.Context(), []string{x[1].ID})
	wantCount(s.T, "Requeue of an event that is not buried", n, err, 0)
}

// Bad requests are errors, empty ones are no-ops, and neither changes
// anything.
func testBadInput(s *storeT) {
	ctx := s.Context()
	e := s.event("")
	s.save(e)
	for _, req := range []storage.ClaimRequest{{Limit: 0, Lease: time.Minute}, {Limit: -1, Lease: time.Minute}, {Limit: 10, Lease: 0}, {Limit: 10, Lease: -time.Second}} {
		if c, err := s.store.Claim(ctx, req); err == nil {
			s.Fatalf("Claim(%+v) returned no error (%d events)", req, len(c.Events))
		}
	}
	for _, token := range []string{"", "not-a-token"} {
		n, err := s.store.MarkSynced(ctx, token, []string{e.ID})
		wantCount(s.T, fmt.Sprintf("MarkSynced with token %q", token), n, err, 0)
		n, err = s.store.Fail(ctx, token, []storage.Failure{{ID: e.ID, Err: "x"}})
		wantCount(s.T, fmt.Sprintf("Fail with token %q", token), n, err, 0)
		n, err = s.store.Release(ctx, token, []string{e.ID})
		wantCount(s.T, fmt.Sprintf("Release with token %q", token), n, err, 0)
	}
	c := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after bad requests", e)
	n, err := s.store.Fail(ctx, c.Token, nil)
	wantCount(s.T, "Fail of no failures", n, err, 0)
	n, err = s.store.Release(ctx, c.Token, []string{})
	wantCount(s.T, "Release of no IDs", n, err, 0)
	s.mark(c.Token, 1, e)
}

// An ended context is an error for every method and changes nothing.
func testContextCancelled(s *storeT) {
	events := s.events("", 2)
	s.save(events...)
	dead := cancelled(s.Context())
	if c, err := s.store.Claim(dead, storage.ClaimRequest{Limit: 10, Lease: longLease}); err == nil {
		s.Fatalf("Claim with an ended context returned no error (%d events)", len(c.Events))
	}
	c := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after a cancelled claim", events...)
	if _, err := s.store.MarkSynced(dead, c.Token, idsOf(events)); err == nil {
		s.Fatal("MarkSynced with an ended context returned no error")
	}
	if _, err := s.store.Fail(dead, c.Token, []storage.Failure{{ID: events[0].ID, Err: "x", Dead: true}}); err == nil {
		s.Fatal("Fail with an ended context returned no error")
	}
	if _, err := s.store.Release(dead, c.Token, idsOf(events)); err == nil {
		s.Fatal("Release with an ended context returned no error")
	}
	s.release(c.Token, 2, events...) // still held: nothing above changed them
	tx, err := s.setup.Begin(s.Context())
	if err != nil {
		s.Fatalf("begin: %v", err)
	}
	late := s.event("")
	if err := s.store.Insert(dead, tx, []*outbox.Event{late}); err == nil {
		s.Error("Insert with an ended context returned no error")
	}
	if err := tx.Commit(); err != nil && !errors.Is(err, context.Canceled) {
		s.Logf("commit after a cancelled Insert: %v", err)
	}
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after the cancelled calls", events...)
}

// Several relays claiming and marking at once deliver every event exactly
// once (nothing crashes, so no duplicate is allowed) and each aggregate in
// save order.
func testConcurrentRelays(s *storeT) {
	const (
		relays     = 4
		aggregates = 3
		perAgg     = 60
	)
	var all []*outbox.Event
	for range perAgg {
		for a := range aggregates {
			all = append(all, s.event(fmt.Sprintf("agg-%d", a)))
		}
		all = append(all, s.event("")) // no aggregate: unordered
	}
	for i := 0; i < len(all); i += 50 {
		s.save(all[i:min(i+50, len(all))]...)
	}
	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		log       = map[string][]string{} // aggregate -> IDs in delivery order
		failures  []string
	)
	ctx, cancel := context.WithTimeout(s.Context(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for r := range relays {
		wg.Go(func() {
			limit := 3 + r*2
			for ctx.Err() == nil {
				c, err := s.store.Claim(ctx, storage.ClaimRequest{Limit: limit, Lease: longLease})
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("relay %d: Claim: %v", r, err))
						mu.Unlock()
					}
					return
				}
				if len(c.Events) > 0 {
					// The broker's round trip: long enough for another
					// relay to claim meanwhile if the store let it.
					time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
				}
				mu.Lock()
				for _, e := range c.Events {
					delivered[e.ID]++
					if e.AggregateID != "" {
						log[e.AggregateID] = append(log[e.AggregateID], e.ID)
					}
				}
				done := len(delivered) == len(all)
				mu.Unlock()
				if len(c.Events) > 0 {
					// Not ctx: another relay may end it while this one marks.
					n, err := s.store.MarkSynced(s.Context(), c.Token, idsOf(c.Events))
					if err != nil || n != len(c.Events) {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("relay %d: MarkSynced: %d of %d, %v", r, n, len(c.Events), err))
						mu.Unlock()
						return
					}
				}
				if done {
					cancel()
					return
				}
				if len(c.Events) == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		s.Error(f)
	}
	if len(delivered) != len(all) {
		s.Fatalf("relays delivered %d of %d events before the deadline", len(delivered), len(all))
	}
	for id, n := range delivered {
		if n != 1 {
			s.Errorf("event %s was claimed %d times with no fault", id, n)
		}
	}
	if s.features.NoOrder {
		return
	}
	want := map[string][]string{}
	for _, e := range all {
		if e.AggregateID != "" {
			want[e.AggregateID] = append(want[e.AggregateID], e.ID)
		}
	}
	for agg, ids := range want {
		got := log[agg]
		for i := range ids {
			if i >= len(got) || got[i] != ids[i] {
				s.Fatalf("aggregate %s: delivery %d is %v, want %s (saved %d events, delivered %d)", agg, i, at(got, i), ids[i], len(ids), len(got))
			}
		}
	}
}

// The seed's test through a real relay: of four events two fail, only the
// two acknowledged are marked, and the two failed are delivered by a later
// pass.
func testWorkerPartialFailure(s *storeT) {
	events := []*outbox.Event{s.event("a"), s.event("b"), s.event("c"), s.event("d")}
	s.save(events...)
	pub := NewPublisher()
	bad := map[string]bool{events[1].ID: true, events[3].ID: true}
	pub.FailWhen(func(e *outbox.Event) error {
		if bad[e.ID] {
			return errors.New("refused")
		}
		return nil
	})
	w, err := outbox.New(s.store, pub, outbox.WithBackoff(s.unit/2, s.unit/2), outbox.WithLease(longLease))
	if err != nil {
		s.Fatal(err)
	}
	res, err := w.SyncPending(s.Context(), 10)
	if err != nil {
		s.Fatalf("SyncPending: %v", err)
	}
	if res.Claimed != 4 || res.Synced != 2 || res.Failed != 2 {
		s.Fatalf("first pass: %+v, want 4 claimed, 2 synced, 2 failed", res)
	}
	pub.FailWhen(nil)
	s.pastUnit()
	res, err = w.SyncPending(s.Context(), 10)
	if err != nil {
		s.Fatalf("SyncPending: %v", err)
	}
	if res.Claimed != 2 || res.Synced != 2 {
		s.Fatalf("second pass: %+v, want the 2 failed events claimed and synced", res)
	}
	sameIDs(s.T, "published", idsOf(pub.Published()), []string{events[0].ID, events[2].ID, events[1].ID, events[3].ID})
	s.pastUnit()
	s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim after everything was delivered")
}

// A relay stopped while it waits on the broker releases its batch: the
// events are claimable at once, with no attempt counted, and Run returns.
func testWorkerCleanStop(s *storeT) {
	events := s.events("z", 3)
	s.save(events...)
	entered := make(chan struct{}, 1)
	pub := outbox.PublisherFunc(func(ctx context.Context, _ []*outbox.Event) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	})
	w, err := outbox.New(s.store, pub, outbox.WithLease(longLease), outbox.WithTimeout(time.Minute), outbox.WithInterval(time.Hour))
	if err != nil {
		s.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		cancel()
		s.Fatal("the relay did not publish within 30s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			s.Fatalf("Run returned %v after its context ended, want nil", err)
		}
	case <-time.After(30 * time.Second):
		s.Fatal("Run did not return within 30s of its context ending")
	}
	c := s.wantClaim(storage.ClaimRequest{Limit: 10}, "claim right after the relay stopped", events...)
	for _, e := range c.Events {
		if e.Delivery.Attempts != 0 {
			s.Fatalf("event %s has %d attempts after a stop, want 0", e.ID, e.Delivery.Attempts)
		}
	}
}

func at(ids []string, i int) string {
	if i < len(ids) {
		return ids[i]
	}
	return "nothing"
}
