package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// markBundle is a Postgres table with a Store that records delivery by
// watermarks.
func markBundle(t *testing.T) *bundle {
	t.Helper()
	return markBundleOn(t, Postgres)
}

// markBundleOn is markBundle on dialect d.
func markBundleOn(t *testing.T, d Dialect) *bundle {
	t.Helper()
	b := setup(t, d, WithWatermarks(), WithRelayName("wm-"+randomName("")))
	b.store.c.(*owner).shape = testShape
	return b
}

// forMarkStores runs f on Postgres with each shape of the watermark read
// (forShapes), and on SQLite, whose read has one shape.
func forMarkStores(t *testing.T, f func(t *testing.T, d Dialect)) {
	t.Run(string(Postgres), func(t *testing.T) { forShapes(t, func(t *testing.T) { f(t, Postgres) }) })
	t.Run(string(SQLite), func(t *testing.T) { f(t, SQLite) })
}

// testShape is the shape of the watermark reads of markBundle's Stores
// (see owner.marksLateral); forShapes runs a test with each.
var testShape int

// forShapes runs f once with each shape of the watermark read: merged
// (a branch per partition) and lateral (a loop over the partitions).
// Both must return the same rows.
func forShapes(t *testing.T, f func(t *testing.T)) {
	for _, shape := range []int{1, 2} {
		t.Run(map[int]string{1: "merged", 2: "lateral"}[shape], func(t *testing.T) {
			testShape = shape
			defer func() { testShape = 0 }()
			f(t)
		})
	}
}

// drain claims and marks until a claim returns nothing, beating after
// each claim, and returns the IDs in the order claimed.
func (b *bundle) drain(t *testing.T, limit int) []string {
	t.Helper()
	var got []string
	for range 1000 {
		c := b.claim(t, limit)
		if len(c.Events) == 0 {
			return got
		}
		got = append(got, ids(c.Events)...)
		b.mark(t, c, c.Events...)
		b.beat(t)
	}
	t.Fatal("the drain did not end")
	return nil
}

// claimAfterCommit saves an event of aggregate agg and claims it by ID,
// as the publication right after commit does, and fails the test unless
// the claim got it.
func (b *bundle) claimAfterCommit(t *testing.T, agg string) (*outbox.Event, *outbox.Claim) {
	t.Helper()
	e := b.event(agg, 0)
	b.save(t, e)
	c := b.claim(t, 10, e.ID)
	equalIDs(t, "claim by ID right after commit", ids(c.Events), []string{e.ID})
	return e, c
}

func (b *bundle) beat(t *testing.T) {
	t.Helper()
	if _, _, err := b.store.Heartbeat(t.Context()); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
}

// perRowWrites counts the rows delivered per row (synced_at written) and
// the rows made per-row (xid NULL).
func (b *bundle) perRowWrites(t *testing.T) (synced, parked int) {
	t.Helper()
	err := b.db.QueryRowContext(t.Context(), "SELECT COUNT(*) FILTER (WHERE synced_at IS NOT NULL), COUNT(*) FILTER (WHERE xid IS NULL) FROM "+b.store.t.Quoted).Scan(&synced, &parked)
	if err != nil {
		t.Fatal(err)
	}
	return synced, parked
}

// reopen returns a new Store on the table after the bundle's Store left
// (a relay restarted, or another relay taking over), with the same clock.
func (b *bundle) reopen(t *testing.T) *bundle {
	t.Helper()
	if err := b.store.Leave(t.Context()); err != nil {
		t.Fatalf("leave: %v", err)
	}
	s, err := New(b.db, WithTable(b.table), WithWatermarks(), WithRelayName("wm-"+randomName("")))
	if err != nil {
		t.Fatal(err)
	}
	useClock(s, b.clock)
	return &bundle{store: s, db: b.db, clock: b.clock, table: b.table}
}

// sibling returns an aggregate ID other than agg in agg's partition.
func sibling(agg string) string {
	for i := 0; ; i++ {
		if o := fmt.Sprintf("%s-%d", agg, i); partitionOf(Postgres, o) == partitionOf(Postgres, agg) {
			return o
		}
	}
}

func inOrder(t *testing.T, got []string, events []*outbox.Event) {
	t.Helper()
	pos := map[string]int{}
	for i, id := range got {
		if _, dup := pos[id]; dup {
			t.Fatalf("event %s delivered twice", id)
		}
		pos[id] = i
	}
	last := map[string]int{}
	for _, e := range events {
		i, ok := pos[e.ID]
		if !ok {
			t.Fatalf("event %s never delivered", e.ID)
		}
		if j, seen := last[e.AggregateID]; seen && i < j {
			t.Fatalf("event %s of %s delivered before an earlier one of its aggregate", e.ID, e.AggregateID)
		}
		last[e.AggregateID] = i
	}
	if len(got) != len(events) {
		t.Fatalf("delivered %d events, want %d", len(got), len(events))
	}
}

// In the steady state a relay with watermarks writes nothing per event:
// every event is delivered once, in order, with no synced_at written
// and none made per-row, and the partitions' marks record it, so that a
// relay that takes over delivers nothing again.
func TestWatermarkDeliversWithoutPerEventWrites(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		var events []*outbox.Event
		for i := range 60 {
			e := b.event(string(rune('A'+i%7)), 0)
			events = append(events, e)
			if i%3 == 2 {
				b.save(t, events[i-2:i+1]...)
			}
		}
		got := b.drain(t, 16)
		inOrder(t, got, events)
		if synced, parked := b.perRowWrites(t); synced != 0 || parked != 0 {
			t.Fatalf("%d events got synced_at and %d were made per-row; want none of either", synced, parked)
		}
		var marked int
		if err := b.db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+b.store.t.Sibling(partitionsSuffix)+" WHERE mark_seq > 0").Scan(&marked); err != nil {
			t.Fatal(err)
		}
		if marked == 0 {
			t.Fatal("no partition records a mark")
		}
		if used, err := b.store.WatermarksInUse(t.Context()); err != nil || !used {
			t.Fatalf("WatermarksInUse = %v, %v; want true", used, err)
		}
		var delivered int
		if err := b.db.QueryRowContext(t.Context(), "SELECT COALESCE(SUM(events), 0) FROM "+b.store.t.Sibling(deliveriesSuffix)).Scan(&delivered); err != nil {
			t.Fatal(err)
		}
		if delivered != len(events) {
			t.Fatalf("the deliveries table counts %d events, want %d", delivered, len(events))
		}
		st, err := b.store.Stats(t.Context(), 0)
		if err != nil || st.Pending != 0 {
			t.Fatalf("Stats after the drain: %+v, %v; want nothing pending", st, err)
		}
		next := b.reopen(t)
		if again := next.drain(t, 16); len(again) != 0 {
			t.Fatalf("the next relay delivered %d events again", len(again))
		}
	})
}

// A transaction that took a lower seq and commits after a later event was
// delivered and recorded is still delivered, exactly once: by the relay
// that read past it, and by a relay that takes over from the recorded
// mark.
func TestWatermarkLateCommit(t *testing.T) {
	forShapes(t, func(t *testing.T) {
		for _, takeover := range []bool{false, true} {
			name := map[bool]string{false: "same relay", true: "after a takeover"}[takeover]
			t.Run(name, func(t *testing.T) {
				b := markBundle(t)
				// B in A's partition: its read moves the front past A1's seq.
				a1, b1, a2 := b.event("A", 0), b.event(sibling("A"), 0), b.event("A", 0)
				late := b.insertOpen(t, a1)
				b.save(t, b1)
				got := b.drain(t, 10)
				equalIDs(t, "drain while A1's transaction is open", got, []string{b1.ID})
				if err := late.Commit(); err != nil {
					t.Fatal(err)
				}
				b.save(t, a2)
				if takeover {
					b = b.reopen(t)
				}
				got = b.drain(t, 10)
				equalIDs(t, "drain after A1 committed late", got, []string{a1.ID, a2.ID})
				if again := b.reopen(t).drain(t, 10); len(again) != 0 {
					t.Fatalf("delivered again after all: %v", again)
				}
			})
		}
	})
}

// A transaction left open, with or without outbox events of its own,
// holds nothing else back: the events of other transactions are
// delivered at once, and the open transaction's event once it commits.
func TestWatermarkLongTransactionDoesNotStall(t *testing.T) {
	forShapes(t, func(t *testing.T) {
		b := markBundle(t)
		ctx := t.Context()
		idle, err := b.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = idle.Rollback() }()
		if _, err := idle.ExecContext(ctx, "SELECT txid_current()"); err != nil { // holds the oldest transaction ID open
			t.Fatal(err)
		}
		mine := b.event("L", 0)
		long := b.insertOpen(t, mine)
		for round := range 3 {
			batch := []*outbox.Event{b.event(sibling("L"), 0), b.event("Y", 0)}
			b.save(t, batch...)
			got := b.drain(t, 10)
			equalIDs(t, "round "+string(rune('0'+round)), got, ids(batch))
		}
		if err := long.Commit(); err != nil {
			t.Fatal(err)
		}
		equalIDs(t, "after the long transaction committed", b.drain(t, 10), []string{mine.ID})
		if synced, parked := b.perRowWrites(t); synced != 0 || parked != 0 {
			t.Fatalf("%d synced_at written and %d made per-row; want none", synced, parked)
		}
	})
}

// A failed event is delivered per row from then on, and holds its
// aggregate: the later events of its aggregate wait (made per-row too),
// the others flow, and once it is delivered they follow, in order.
func TestWatermarkFailureHoldsItsAggregate(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		ctx := t.Context()
		a := b.run("A", 3)
		x := b.run(sibling("A"), 2)
		b.save(t, a[0], x[0])
		c := b.claim(t, 10)
		equalIDs(t, "first claim", ids(c.Events), []string{a[0].ID, x[0].ID})
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: a[0].ID, Err: "broker said no", Delay: time.Hour}})
		wantN(t, "Fail", n, err, 1)
		b.mark(t, c, x[0])
		b.save(t, a[1], a[2], x[1])
		got := b.drain(t, 10)
		equalIDs(t, "while A's head backs off", got, []string{x[1].ID})
		_, parked := b.perRowWrites(t)
		if parked != 3 {
			t.Fatalf("%d events per-row, want 3 (A's failed head and the two held behind it)", parked)
		}
		b.clock.Advance(2 * time.Hour)
		got = b.drain(t, 10)
		equalIDs(t, "once A's head is due", got, ids(a))
		synced, _ := b.perRowWrites(t)
		if synced != 3 {
			t.Fatalf("%d events delivered per row, want 3", synced)
		}
		if again := b.reopen(t).drain(t, 10); len(again) != 0 {
			t.Fatalf("delivered again: %v", again)
		}
	})
}

// A claim by IDs right after commit delivers an event before any read
// covered it (ahead, no write); a read then passes over it, and a relay
// that leaves writes what its marks do not cover, so a takeover
// delivers nothing twice.
func TestWatermarkAheadThenHandoff(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		b.beat(t) // the relay owns the partitions
		e, c := b.claimAfterCommit(t, "A")
		b.mark(t, c, e)
		if synced, _ := b.perRowWrites(t); synced != 0 {
			t.Fatalf("the claim by ID wrote synced_at for %d events, want none", synced)
		}
		f := b.event("A", 0)
		b.save(t, f)
		c = b.claim(t, 10, f.ID)
		if len(c.Events) == 1 {
			b.mark(t, c, f)
		}
		next := b.reopen(t) // Leave writes what no mark covers
		if again := next.drain(t, 10); len(again) != 0 && !(len(c.Events) == 0 && slices.Equal(again, []string{f.ID})) {
			t.Fatalf("after the handoff the next relay delivered %v", again)
		}
		_ = context.Background
	})
}

// Migration 009: an event's seq is taken after its transaction has an ID,
// which the late read relies on (lateralBranches).
func TestWatermarkSeqAfterTransactionID(t *testing.T) {
	b := markBundle(t)
	var def string
	err := b.db.QueryRowContext(t.Context(), "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = $1::regclass AND a.attname = 'seq'", b.store.t.Quoted).Scan(&def)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def, "txid_current()") || strings.Index(def, "txid_current()") > strings.Index(def, "nextval(") {
		t.Fatalf("seq's default %q does not take the transaction's ID before the seq", def)
	}
	e := b.event("A", 0)
	b.save(t, e)
	var seq, xid int64
	if err := b.db.QueryRowContext(t.Context(), "SELECT seq, xid FROM "+b.store.t.Quoted+" WHERE id = $1", e.ID).Scan(&seq, &xid); err != nil || seq == 0 || xid == 0 {
		t.Fatalf("saved event: seq %d, xid %d, %v", seq, xid, err)
	}
}

// An event delivered right after its commit, in a partition with nothing
// else to read, is recorded by the next pass and heartbeat: it does not
// stay pending (in Stats, and for a relay after a crash) until the
// partition's next event.
func TestWatermarkAheadInAnIdlePartitionIsRecorded(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		b.beat(t)
		e, c := b.claimAfterCommit(t, "A")
		b.mark(t, c, e)
		if got := b.claim(t, 10); len(got.Events) != 0 {
			t.Fatalf("the pass took %v, want nothing", ids(got.Events))
		}
		b.beat(t)
		st, err := b.store.Stats(t.Context(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending != 0 {
			t.Fatalf("Stats: %d pending after a pass and a heartbeat, want 0 (the event was delivered right after commit)", st.Pending)
		}
		if synced, parked := b.perRowWrites(t); synced != 0 || parked != 0 {
			t.Fatalf("%d synced_at written and %d made per-row; want none", synced, parked)
		}
	})
}

// A heartbeat that took a partition again under a raised token can
// commit while its reply is lost (the connection cut at COMMIT): the
// ledger keeps the old token, and its parks, fenced by that token, write
// nothing. The next heartbeat must then not record the mark of the old
// token's segments either: it would cover the events those parks left
// undelivered, and nothing would deliver them (the long chaos run lost
// events so).
func TestWatermarkMarkFencedLikeItsPark(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		ctx := t.Context()
		b.beat(t)
		a := b.run("A", 3)
		b.save(t, a...)
		c := b.claim(t, 10)
		equalIDs(t, "claim", ids(c.Events), ids(a))
		// What the lost heartbeat committed: the partitions taken again
		// by this relay, under raised tokens.
		if _, err := b.db.ExecContext(ctx, "UPDATE "+b.store.t.Sibling(partitionsSuffix)+" SET token = token + 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.store.Release(ctx, c.Token, ids(c.Events)); err != nil {
			t.Fatalf("release: %v", err)
		}
		b.beat(t)
		var covered int
		err := b.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+b.store.t.Quoted+" e JOIN "+b.store.t.Sibling(partitionsSuffix)+
			" p ON p.partition_no = e.partition_no WHERE e.xid IS NOT NULL AND e.seq <= p.mark_seq").Scan(&covered)
		if err != nil {
			t.Fatal(err)
		}
		if covered != 0 {
			t.Fatalf("%d released events left with their xid are at or below their partition's mark", covered)
		}
		equalIDs(t, "delivered after the release", b.drain(t, 10), ids(a))
	})
}

// A transaction that had its ID after the latest one to end before a
// read, and gave its event a seq below that of an event the read
// returned, is in progress for the read's snapshot but at or above its
// xmax, where Postgres lists no transaction. The snapshot the front
// keeps must list it (widenSnapshot): else the late read never looks it
// up, and the next recorded mark covers its event unread.
func TestWatermarkLateCommitAboveXmax(t *testing.T) {
	forShapes(t, func(t *testing.T) {
		for attempt := 1; !lateAboveXmax(t); attempt++ {
			if attempt == 200 {
				t.Fatal("in 200 attempts another transaction ended above the late one's ID before the read each time: the case was never set up")
			}
		}
	})
}

// lateAboveXmax runs the case of TestWatermarkLateCommitAboveXmax once,
// and reports false, having tested nothing, when another transaction of
// the server ended with a higher ID than the late one's before the read:
// then the late one is listed anyway.
func lateAboveXmax(t *testing.T) bool {
	t.Helper()
	b := markBundle(t)
	ctx := t.Context()
	b.beat(t)
	e, v := b.event("A", 0), b.event(sibling("A"), 0)
	early, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Rollback() //nolint:errcheck // after Commit: nothing to undo
	var vx, ex int64
	if err := early.QueryRowContext(ctx, "SELECT txid_current()").Scan(&vx); err != nil {
		t.Fatal(err)
	}
	late := b.insertOpen(t, e) // its ID after early's, its seq before v's
	defer late.Rollback()      //nolint:errcheck // after Commit: nothing to undo
	if err := late.QueryRowContext(ctx, "SELECT txid_current()").Scan(&ex); err != nil {
		t.Fatal(err)
	}
	if err := b.store.Insert(ctx, early, []*outbox.Event{v}); err != nil {
		t.Fatal(err)
	}
	if err := early.Commit(); err != nil {
		t.Fatal(err)
	}
	xmax := func() int64 {
		var x int64
		if err := b.db.QueryRowContext(ctx, "SELECT txid_snapshot_xmax(txid_current_snapshot())").Scan(&x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	if xmax() > ex {
		return false
	}
	c := b.claim(t, 10)
	if xmax() > ex {
		return false // it may have ended before the read's snapshot
	}
	equalIDs(t, "read while the late transaction is open", ids(c.Events), []string{v.ID})
	b.mark(t, c, v)
	b.beat(t) // records the front past e's seq
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	equalIDs(t, "drain after the late commit", b.drain(t, 10), []string{e.ID})
	return true
}

// A relay built without WithWatermarks refuses a table whose relays
// record marks: it would publish again every event they delivered. It is
// refused before its first heartbeat takes anything.
func TestRelayWithoutMarksRefusesAMarkedTable(t *testing.T) {
	forMarkStores(t, func(t *testing.T, d Dialect) {
		b := markBundleOn(t, d)
		b.beat(t)
		b.save(t, b.event("A", 0))
		if got := b.drain(t, 10); len(got) != 1 {
			t.Fatalf("drained %v, want one event", got)
		}
		plain, err := New(b.db, WithTable(b.table), WithRelayName("plain-"+randomName("")))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = plain.Heartbeat(t.Context())
		if !errors.Is(err, ErrWatermarksInUse) {
			t.Fatalf("heartbeat of a Store without marks on a marked table: %v, want ErrWatermarksInUse", err)
		}
		if owned := ownerOf(plain).l.tokens(); len(owned) != 0 {
			t.Fatalf("the refused Store owns %v", owned)
		}
		if _, err := plain.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute}); !errors.Is(err, ErrWatermarksInUse) {
			t.Fatalf("claim of a Store without marks on a marked table: %v, want ErrWatermarksInUse", err)
		}
	})
}

// On a table from before the marks' migration, WatermarksInUse says
// false rather than failing, and a relay without marks runs.
func TestWatermarksInUseOnATableWithoutMarks(t *testing.T) {
	for _, d := range []Dialect{Postgres, SQLite} {
		t.Run(string(d), func(t *testing.T) {
			b := setup(t, d)
			ctx := t.Context()
			for _, stmt := range []string{
				"DROP VIEW " + b.store.t.Sibling(deliveryViewSuffix),
				"ALTER TABLE " + b.store.t.Sibling(partitionsSuffix) + " DROP COLUMN mark_seq",
			} {
				if _, err := b.db.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("%s: %v", stmt, err)
				}
			}
			used, err := b.store.WatermarksInUse(ctx)
			if err != nil || used {
				t.Fatalf("WatermarksInUse = %v, %v; want false, nil", used, err)
			}
			b.beat(t)
		})
	}
}
