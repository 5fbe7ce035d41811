package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// Stores made one after the other in one process are distinct relays by
// default: a shared name would make them share every partition.
func TestDefaultRelayNamesDiffer(t *testing.T) {
	db := openDB(t, SQLite)
	seen := map[string]bool{}
	for range 50 {
		s, err := New(db)
		if err != nil {
			t.Fatal(err)
		}
		if seen[ownerOf(s).name] {
			t.Fatalf("two Stores got the relay name %q", ownerOf(s).name)
		}
		if len(ownerOf(s).name) > 64 {
			t.Fatalf("relay name %q is longer than 64 bytes", ownerOf(s).name)
		}
		seen[ownerOf(s).name] = true
	}
}

// A later event of an aggregate never goes before an earlier one that a
// claim gave back, failed or let expire. A1 and B1 are claimed, A2 is
// saved after them; whatever happened to A1, the next claims return A1
// before A2.
func TestClaimsGiveBackInOrder(t *testing.T) {
	for _, how := range []string{"release", "fail", "expire"} {
		t.Run(how, func(t *testing.T) {
			eachDialect(t, func(t *testing.T, b *bundle) {
				ctx := t.Context()
				a1, b1, a2 := b.event("A", 0), b.event("B", 0), b.event("A", 0)
				b.save(t, a1, b1, a2)
				c := b.claim(t, 2)
				equalIDs(t, "first claim", ids(c.Events), []string{a1.ID, b1.ID})
				b.mark(t, c, b1)
				switch how {
				case "release":
					n, err := b.store.Release(ctx, c.Token, []string{a1.ID})
					wantN(t, "Release", n, err, 1)
				case "fail":
					n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: a1.ID, Err: "nack"}})
					wantN(t, "Fail", n, err, 1)
				case "expire":
					b.clock.Advance(2 * time.Minute) // past the claim's lease
				}
				got := b.claim(t, 10)
				equalIDs(t, "claim after A1 came back", ids(got.Events), []string{a1.ID, a2.ID})
			})
		})
	}
}

// A Store short of its fair share asks its relay to claim again soon only
// for a while after the relays changed: with 64 partitions and three
// relays one of them owns 20 of a share of 22 for good, and its relay must
// then wait its interval like the others.
func TestRebalancingEnds(t *testing.T) {
	b := setup(t, Postgres)
	ctx := t.Context()
	var stores []*Store
	for i := range 3 {
		s := newStore(t, b.db, b.table, WithRelayName(fmt.Sprintf("relay-%d", i)))
		useClock(s, b.clock)
		stores = append(stores, s)
	}
	claim := func(s *Store) {
		if _, err := s.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	// Join all three, then let them settle: each renews (the clock moved
	// past the renewal cadence) and takes what the others gave back.
	for range 4 {
		for _, s := range stores {
			claim(s)
		}
		b.clock.Advance(time.Second)
	}
	total, short := 0, 0
	for _, s := range stores {
		total += len(s.Owned())
		if len(s.Owned()) < 22 {
			short++
		}
	}
	if total != 64 || short != 1 {
		t.Fatalf("after settling: %d partitions owned in all, %d stores short of 22; want 64 and 1", total, short)
	}
	b.clock.Advance(eagerWindow)
	for _, s := range stores {
		claim(s)
		if s.Rebalancing() {
			t.Fatalf("store %s owning %d partitions still rebalancing %v after the relays settled", ownerOf(s).name, len(s.Owned()), eagerWindow)
		}
	}
}

// A table whose schema predates partitions (the package upgraded, Migrate
// not run) makes a relay's claim fail with ErrNoPartitions, which says to
// run Migrate, rather than with the driver's "no such table" alone; its
// events stay pending.
func TestClaimOnATableWithoutPartitions(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		e := b.event("A", 0)
		b.save(t, e)
		ms, err := ddl.Migrations(b.store.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		v := 0
		for _, m := range ms {
			if strings.Contains(m.Name, "_partitions") {
				v = m.Version
			}
		}
		if v == 0 {
			t.Fatal("no partitions migration")
		}
		var drops []string
		switch b.store.Dialect() {
		case Postgres: // the delivery view reads both
			drops = append(drops, "DROP VIEW "+b.store.t.Sibling(deliveryViewSuffix))
		case SQLite: // and what the watermarks migration after it added, which it adds again
			drops = append(drops, "DROP VIEW "+b.store.t.Sibling(deliveryViewSuffix), "DROP TABLE "+b.store.t.Sibling(deliveriesSuffix),
				"DROP INDEX "+b.store.t.Sibling(partSeqIndex), "DROP INDEX "+b.store.t.Sibling(perRowIndex), "ALTER TABLE "+b.store.t.Quoted+" DROP COLUMN xid")
		}
		for _, stmt := range append(drops,
			"DROP TABLE "+b.store.t.Sibling(partitionsSuffix),
			"DROP TABLE "+b.store.t.Sibling(relaysSuffix),
			"ALTER TABLE "+b.store.t.Quoted+" DROP COLUMN partition_no",
			"DELETE FROM "+b.store.t.MigrationsTable()+" WHERE version >= "+strconv.Itoa(v),
		) {
			if _, err := b.db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		_, err = b.store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute})
		if !errors.Is(err, ErrNoPartitions) || !strings.Contains(err.Error(), "schema version") {
			t.Fatalf("Claim on a table without partitions: %v, want ErrNoPartitions naming the schema version", err)
		}
		got, err := b.store.Get(ctx, e.ID)
		if err != nil || got.Delivery.Status() != outbox.StatusPending {
			t.Fatalf("event after the failed claim: %+v, %v; want pending", got, err)
		}
		// Migrate brings the partitions back, computing the waiting
		// event's, and the relay claims it.
		if err := b.store.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		equalIDs(t, "claim after Migrate", ids(b.claim(t, 10).Events), []string{e.ID})
	})
}

// A relay name longer than the owner column is refused at New.
func TestRelayNameTooLong(t *testing.T) {
	db := openDB(t, SQLite)
	if _, err := New(db, WithRelayName(strings.Repeat("r", 65))); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("New with a 65-byte relay name: %v, want ErrInvalidConfig", err)
	}
	if _, err := New(db, WithRelayName(strings.Repeat("r", 64))); err != nil {
		t.Fatalf("New with a 64-byte relay name: %v", err)
	}
}

// Transactions commit in an order other than their seqs': an event can
// become visible after a later seq was read and claimed. The next event
// of its aggregate, saved once it committed, must not be taken first (a
// read that went on from where the last one stopped did):
// A1 is saved in a transaction that stays open while B1 is saved,
// claimed and marked (the cursor passes A1's seq); A1 commits, A2 is
// saved; the claims that follow return A1 before A2.
func TestLateCommitKeepsOrder(t *testing.T) {
	b := setup(t, Postgres)
	z := b.event("Z", 0)
	b.save(t, z)
	b.mark(t, b.claim(t, 10), z)

	a1, b1, a2 := b.event("A", 0), b.event("B", 0), b.event("A", 0)
	late := b.insertOpen(t, a1)
	b.save(t, b1)
	c := b.claim(t, 10)
	equalIDs(t, "claim while A1's transaction is open", ids(c.Events), []string{b1.ID})
	b.mark(t, c, b1)
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	b.save(t, a2)
	var got []string
	for range 3 {
		got = append(got, ids(b.claim(t, 10).Events)...)
	}
	equalIDs(t, "claims after A1 committed late", got, []string{a1.ID, a2.ID})
}

// A claim by IDs never waits for a heartbeat: a partition row that a
// relay's heartbeat holds locked (a relay paused in the middle of one)
// counts as owned, and the event is left to the relays. Before, the
// claim's share lock waited for as long as the heartbeat's transaction
// stayed open.
func TestClaimByIDsSkipsLockedPartitions(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db, st := ownTable(t, d, "writer")
			writer := st[0]
			e := ownEvents(1, 1)[0]
			insertAll(t, db, writer, []*outbox.Event{e})
			// A heartbeat in the middle of its transaction: it locks every
			// partition row, as its renew and take do.
			hb, err := db.BeginTxx(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = hb.Rollback() }()
			if _, err := hb.ExecContext(t.Context(), "UPDATE "+writer.t.Sibling(partitionsSuffix)+" SET token = token"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			c, err := writer.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{e.ID}})
			if err != nil {
				t.Fatalf("claim by ID while a heartbeat holds the partitions: %v (after %v)", err, time.Since(start))
			}
			if len(c.Events) != 0 || !slices.Equal(c.Elsewhere, []string{e.ID}) {
				t.Fatalf("claimed %d events, elsewhere %v; want none claimed and the event left to the relays", len(c.Events), c.Elsewhere)
			}
			if err := hb.Rollback(); err != nil {
				t.Fatal(err)
			}
			c, err = writer.Claim(t.Context(), storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{e.ID}})
			if err != nil || len(c.Events) != 1 {
				t.Fatalf("claim by ID once the heartbeat ended: %v, %v; want the event (no relay owns it)", c, err)
			}
		})
	}
}

// A claim never reads nothing for want of a heartbeat: one that finds
// its partitions' leases close to the margin beats first, with room for
// its own statements. The clock here moves 5 ms at every reading, as on a
// busy machine; the claims come at every point of a lease, the old
// boundary (ttl - every, checked at one reading and the take at a later
// one) included.
func TestClaimBeatsBeforeItsPartitionsLapse(t *testing.T) {
	b := setup(t, SQLite)
	o := ownerOf(b.store)
	var mu sync.Mutex
	now := time.Now()
	at := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	o.clock = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(5 * time.Millisecond)
		return now
	}
	first := b.newEvents(1)[0]
	b.save(t, first)
	c := b.claim(t, 10)
	equalIDs(t, "first claim", ids(c.Events), []string{first.ID})
	b.mark(t, c, first)
	var since []time.Duration
	for d := time.Duration(0); d < o.ttl; d += o.every / 8 {
		since = append(since, d)
	}
	for d := o.ttl - o.every - 40*time.Millisecond; d <= o.ttl-o.every; d += time.Millisecond {
		since = append(since, d)
	}
	for _, d := range since {
		o.l.mu.Lock()
		beat := o.l.beatAt
		o.l.mu.Unlock()
		mu.Lock()
		now = beat
		mu.Unlock()
		at(d)
		ev := b.newEvents(1)[0]
		b.save(t, ev)
		c := b.claim(t, 10)
		equalIDs(t, fmt.Sprintf("claim %v after the last heartbeat", d), ids(c.Events), []string{ev.ID})
		b.mark(t, c, ev)
	}
}

// A process that relays leases no row by ID: an event whose partition has
// no owner at that moment (here given back by one relay and not yet
// taken by the other) is left to the relays, its own among them. A row
// lease holds the aggregate until it is marked or runs out, and a relay
// killed between the two held it for the whole lease (a minute by
// default): the multi-process test of a killed relay found such an
// aggregate still pending 20 s after the last write. A process that runs
// no relay still leases the row: nothing else would take it over.
func TestRelayLeasesNoRowByID(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db, st := ownTable(t, d, "r1", "r2", "writer")
			r1, r2, writer := st[0], st[1], st[2]
			ctx := t.Context()
			for _, s := range []*Store{r1, r2, r1} { // r1 takes all, r2 joins, r1 gives half back
				if _, _, err := s.Heartbeat(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var free int
			err := db.QueryRowxContext(ctx, "SELECT MIN(partition_no) FROM "+r1.t.Sibling(partitionsSuffix)+" WHERE owner IS NULL OR lease_until <= "+r1.d.dbNow()).Scan(&free)
			if err != nil {
				t.Fatalf("no partition without an owner after r1 gave half back: %v", err)
			}
			agg := "agg"
			for i := 0; partitionOf(d, agg) != free; i++ {
				agg = fmt.Sprintf("agg-%d", i)
			}
			e := &outbox.Event{ID: outbox.NewID(), Topic: "stock", Type: "stock.updated", AggregateID: agg, Payload: []byte("{}"), CreatedAt: utcNow()}
			insertAll(t, db, r1, []*outbox.Event{e})
			c, err := r1.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{e.ID}})
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Events) != 0 || !slices.Equal(c.Elsewhere, []string{e.ID}) {
				t.Fatalf("a relay's claim by ID in a partition without an owner: claimed %d, elsewhere %v; want nothing claimed, the event left to the relays", len(c.Events), c.Elsewhere)
			}
			c, err = writer.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{e.ID}})
			if err != nil || len(c.Events) != 1 {
				t.Fatalf("the claim by ID of a process that runs no relay: %v, %v; want the event leased", c, err)
			}
		})
	}
}
