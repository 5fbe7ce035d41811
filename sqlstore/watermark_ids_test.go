package sqlstore

import (
	"strings"
	"testing"
)

// The claim by IDs right after commit (watermarks) checks an event's
// aggregate against the front, in memory: an aggregate whose previous
// event went out by ID a moment ago, with no heartbeat since to record
// it, publishes its next event right after commit too. An earlier event
// still in flight, unread, or waiting to be parked holds it back.
func TestWatermarkClaimByIDsAfterADeliveryByID(t *testing.T) {
	forMarkStores(t, testClaimByIDsAfterADeliveryByID)
}

func testClaimByIDsAfterADeliveryByID(t *testing.T, d Dialect) {
	b := markBundleOn(t, d)
	b.beat(t)
	e, c := b.claimAfterCommit(t, "A")

	// In flight: the aggregate is busy.
	f := b.event("A", 0)
	b.save(t, f)
	equalIDs(t, "claim by ID while the previous event is in flight", ids(b.claim(t, 10, f.ID).Events), nil)
	b.mark(t, c, e)

	// Delivered by ID, recorded by no heartbeat yet: f goes out at once.
	c = b.claim(t, 10, f.ID)
	equalIDs(t, "claim by ID after the previous event was delivered by ID", ids(c.Events), []string{f.ID})
	b.mark(t, c, f)
	g, c := b.claimAfterCommit(t, "A")
	b.mark(t, c, g)

	// Unread and undelivered: h waits for the relay, which takes both.
	h, i := b.event("A", 0), b.event("A", 0)
	b.save(t, h)
	b.save(t, i)
	equalIDs(t, "claim by ID behind an unread event", ids(b.claim(t, 10, i.ID).Events), nil)
	equalIDs(t, "the relay's drain", b.drain(t, 10), []string{h.ID, i.ID})
	if synced, parked := b.perRowWrites(t); synced != 0 || parked != 0 {
		t.Fatalf("%d synced_at written and %d made per-row; want none", synced, parked)
	}
	if again := b.reopen(t).drain(t, 10); len(again) != 0 {
		t.Fatalf("delivered again after a handoff: %v", again)
	}
}

// An event of the aggregate that committed late, below the front's seq
// (its transaction was in progress when the front's read ran), holds the
// next event's claim by IDs back: the check looks it up among the
// front's transactions in progress (MODEL.md, BYID_NO_LATE).
func TestWatermarkClaimByIDsBehindALateCommit(t *testing.T) {
	forShapes(t, func(t *testing.T) {
		b := markBundle(t)
		b.beat(t)
		a1, other, a2 := b.event("A", 0), b.event(sibling("A"), 0), b.event("A", 0)
		late := b.insertOpen(t, a1)
		b.save(t, other)
		equalIDs(t, "drain while A1's transaction is open", b.drain(t, 10), []string{other.ID})
		if err := late.Commit(); err != nil {
			t.Fatal(err)
		}
		b.save(t, a2)
		equalIDs(t, "claim by ID behind the late event", ids(b.claim(t, 10, a2.ID).Events), nil)
		equalIDs(t, "the relay's drain", b.drain(t, 10), []string{a1.ID, a2.ID})
	})
}

// An event a claim released without an ack waits to be parked (made
// per-row) until the heartbeat; until then no read returns it, and it
// must hold its aggregate's claim by IDs back (MODEL.md, BYID_NO_HOLD).
func TestWatermarkClaimByIDsBehindAnEventToPark(t *testing.T) {
	forMarkStores(t, testClaimByIDsBehindAnEventToPark)
}

func testClaimByIDsBehindAnEventToPark(t *testing.T, d Dialect) {
	b := markBundleOn(t, d)
	b.beat(t)
	e := b.event("A", 0)
	b.save(t, e)
	c := b.claim(t, 10)
	equalIDs(t, "bulk claim", ids(c.Events), []string{e.ID})
	if _, err := b.store.Release(t.Context(), c.Token, []string{e.ID}); err != nil {
		t.Fatal(err)
	}
	f := b.event("A", 0)
	b.save(t, f)
	equalIDs(t, "claim by ID behind a released event", ids(b.claim(t, 10, f.ID).Events), nil)
	equalIDs(t, "the relay's drain", b.drain(t, 10), []string{e.ID, f.ID})
}

// The check reads only what the front does not cover: an aggregate with
// thousands of delivered events, which under watermarks all keep
// synced_at NULL until purged, costs a claim by IDs what a new one does,
// in the plan made on the empty table and in the one made after ANALYZE.
func TestWatermarkClaimByIDsOnALongHistory(t *testing.T) {
	b := markBundle(t)
	o := ownerOf(b.store)
	ctx := t.Context()
	b.beat(t)
	conn, err := b.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET jit = off"); err != nil {
		t.Fatal(err)
	}
	next := func() (*query, string) {
		e := b.event("A", 0)
		b.save(t, e)
		owned := o.l.claimable(o.clock(), o.every)
		cr := claimRun{token: "plan", now: b.clock.Now(), ordered: true}
		return o.idsMarkedQuery(cr, o.l.fronts(owned), 10, []string{e.ID}), e.ID
	}
	q, _ := next()
	if _, err := conn.ExecContext(ctx, "PREPARE byids AS "+q.String()); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	defer conn.ExecContext(ctx, "DEALLOCATE byids") //nolint:errcheck
	// Past the plan cache's five custom plans: the generic plan.
	for range 6 {
		if _, err := conn.ExecContext(ctx, "EXECUTE byids("+literals(q.args)+")"); err != nil {
			t.Fatalf("execute on the empty table: %v", err)
		}
	}
	b.drain(t, 10)
	for range 10 {
		events := b.run("A", 1000)
		b.save(t, events...)
	}
	if got := b.drain(t, 1000); len(got) != 10_000 {
		t.Fatalf("delivered %d events, want 10000", len(got))
	}
	b.beat(t)
	for _, when := range []string{"as prepared", "after ANALYZE"} {
		if when == "after ANALYZE" {
			if _, err := b.db.ExecContext(ctx, "ANALYZE "+b.store.t.Quoted); err != nil {
				t.Fatal(err)
			}
		}
		q, id := next()
		plan := explainLines(t, conn, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE byids("+literals(q.args)+")")
		if got := buffersTouched(plan); got > 200 {
			t.Errorf("%s: the claim by ID touched %d buffers behind 10,000 delivered events of its aggregate:\n%s", when, got, plan)
		}
		if !strings.Contains(plan, "rows=1 loops=1") {
			t.Errorf("%s: the statement did not return the event alone:\n%s", when, plan)
		}
		c := b.claim(t, 10, id)
		equalIDs(t, when+": claim by ID", ids(c.Events), []string{id})
		b.mark(t, c, c.Events...)
	}
}
