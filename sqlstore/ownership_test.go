package sqlstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// The claim lease of the ownership tests, and the partition lease it
// makes: short, so that a lease ends within a test.
const (
	ownLease = time.Second
	ownTTL   = ownLease + ownLease/4
	ownEvery = ownTTL / 5 // the stores' heartbeat
)

// partitionOwners reads who owns each partition of s's table, with its
// token: partition -> (owner, token).
func partitionOwners(t *testing.T, s *Store) map[int]struct {
	owner string
	token int64
} {
	t.Helper()
	rows, err := s.db.QueryContext(t.Context(), "SELECT partition_no, COALESCE(owner, ''), token FROM "+s.t.Sibling(partitionsSuffix))
	if err != nil {
		t.Fatalf("read partitions: %v", err)
	}
	defer rows.Close()
	out := map[int]struct {
		owner string
		token int64
	}{}
	for rows.Next() {
		var p int
		var owner string
		var tok int64
		if err := rows.Scan(&p, &owner, &tok); err != nil {
			t.Fatal(err)
		}
		out[p] = struct {
			owner string
			token int64
		}{owner, tok}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ownTable returns n Stores named relay names on one fresh, migrated
// table of dialect d, dropped at cleanup.
func ownTable(t *testing.T, d Dialect, names ...string) (*sqlx.DB, []*Store) {
	t.Helper()
	db := openDB(t, d)
	table := randomName("outbox_own_")
	stores := make([]*Store, len(names))
	for i, name := range names {
		s, err := New(db, WithTable(table), WithRelayName(name), WithHeartbeat(ownEvery, ownTTL))
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	if err := stores[0].Migrate(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := stores[0].Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	return db, stores
}

func ownEvents(n, aggs int) []*outbox.Event {
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{
			ID: outbox.NewID(), Topic: "stock", Type: "stock.updated",
			AggregateID: fmt.Sprintf("agg-%d", i%aggs), Payload: []byte("{}"),
			CreatedAt: utcNow(),
		}
	}
	return events
}

func insertAll(t *testing.T, db *sqlx.DB, s *Store, events []*outbox.Event) {
	t.Helper()
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(t.Context(), tx, events); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func bulkClaim(t *testing.T, s *Store, limit int) *outbox.Claim {
	t.Helper()
	c, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: limit, Lease: ownLease})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return c
}

// A relay that lost its partitions while it held a claim (paused past
// its lease) writes nothing with that claim: not when another relay took
// them (owner and token differ), nor when they came back to a relay of
// the same name (a restarted relay with a fixed name; only the token
// differs). Each write is the store's answer: 0 rows, no attempt
// counted, nothing dead, nothing synced; the new owner then marks all.
func TestOwnershipStaleClaimWritesNothing(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			db, st := ownTable(t, d, "relay-a", "relay-b", "relay-a")
			a, b, a2 := st[0], st[1], st[2]
			events := ownEvents(10, 10) // one event per aggregate
			insertAll(t, db, a, events)

			// Two claims of a: each takes five aggregates.
			c1, c2 := bulkClaim(t, a, 5), bulkClaim(t, a, 5)
			if len(c1.Events) != 5 || len(c2.Events) != 5 {
				t.Fatalf("a claimed %d and %d events, want 5 and 5", len(c1.Events), len(c2.Events))
			}
			before := partitionOwners(t, a)
			// a is paused past its leases: b takes every partition.
			time.Sleep(ownTTL + 150*time.Millisecond)
			cb := bulkClaim(t, b, 100)
			if len(cb.Events) != 10 {
				t.Fatalf("b claimed %d events after taking over, want 10", len(cb.Events))
			}
			after := partitionOwners(t, b)
			for p, r := range after {
				if r.owner != "relay-b" || r.token != before[p].token+1 {
					t.Fatalf("partition %d after the takeover: owner %q token %d, want relay-b and token %d", p, r.owner, r.token, before[p].token+1)
				}
			}

			// a's late writes under the first claim: another owner.
			var fails []storage.Failure
			for _, e := range c1.Events {
				fails = append(fails, storage.Failure{ID: e.ID, Err: "late", Dead: true})
			}
			n, err := a.Fail(t.Context(), c1.Token, fails)
			wantN(t, "late Fail (another owner)", n, err, 0)

			// b gives every partition back; a relay named as a takes them.
			if n, err := b.Release(t.Context(), cb.Token, ids(cb.Events)); err != nil || n != 10 {
				t.Fatalf("b release: %d, %v", n, err)
			}
			if err := b.Leave(t.Context()); err != nil {
				t.Fatal(err)
			}
			c3 := bulkClaim(t, a2, 100)
			if len(c3.Events) != 10 {
				t.Fatalf("the second relay-a claimed %d events, want 10", len(c3.Events))
			}
			for p, r := range partitionOwners(t, a2) {
				if r.owner != "relay-a" || r.token != before[p].token+2 {
					t.Fatalf("partition %d after the return: owner %q token %d, want relay-a and token %d", p, r.owner, r.token, before[p].token+2)
				}
			}
			// a's late mark under the second claim: same owner name, old token.
			n, err = a.MarkSynced(t.Context(), c2.Token, ids(c2.Events))
			wantN(t, "late MarkSynced (same name, old token)", n, err, 0)

			var synced, dead, attempts int
			if err := db.QueryRowContext(t.Context(), "SELECT COUNT(synced_at), COUNT(dead_at), COALESCE(SUM(attempts), 0) FROM "+a.t.Quoted).Scan(&synced, &dead, &attempts); err != nil {
				t.Fatal(err)
			}
			if synced != 0 || dead != 0 || attempts != 0 {
				t.Fatalf("after the late writes: %d synced, %d dead, %d attempts; want none", synced, dead, attempts)
			}
			n, err = a2.MarkSynced(t.Context(), c3.Token, ids(c3.Events))
			wantN(t, "the owner's MarkSynced", n, err, 10)
		})
	}
}

// recorder is a Publisher that keeps what every relay published, in
// order.
type recorder struct {
	mu   sync.Mutex
	seen []recorded
	n    map[string]int
}

type recorded struct {
	relay string
	id    string
	agg   string
}

func (r *recorder) publisher(relay string) outbox.Publisher {
	return outbox.PublisherFunc(func(_ context.Context, events []*outbox.Event) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range events {
			r.seen = append(r.seen, recorded{relay, e.ID, e.AggregateID})
			r.n[e.ID]++
		}
		return nil
	})
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.n)
}

// skewed is a Store's application clock off the real one by an offset
// that the test may change while relays run (a clock step).
type skewed struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *skewed) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return utcNow().Add(c.off)
}

func (c *skewed) set(off time.Duration) {
	c.mu.Lock()
	c.off = off
	c.mu.Unlock()
}

// Three relays on one table, each saving events through its own Store:
// one with the real clock, one whose application clock runs minutes
// ahead and one minutes behind, and halfway through the two step to the
// other side. Leases are on the database's clock and local lease ends on
// the monotonic clock, so nothing is lost, no event is published twice
// (there is no fault) and every aggregate's events arrive in save order.
func TestOwnershipClockSkew(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			names := []string{"skew-real", "skew-ahead", "skew-behind"}
			db, st := ownTable(t, d, names...)
			clocks := []*skewed{{}, {off: 3 * time.Minute}, {off: -3 * time.Minute}}
			rec := &recorder{n: map[string]int{}}
			obs := make([]*outbox.Outbox, len(st))
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			for i, s := range st {
				s.now = clocks[i].now
				ob, err := outbox.New(s, rec.publisher(names[i]),
					outbox.WithTimeout(ownLease/2), outbox.WithLease(ownLease),
					outbox.WithInterval(20*time.Millisecond), outbox.WithBatchSize(50))
				if err != nil {
					t.Fatal(err)
				}
				obs[i] = ob
				wg.Go(func() {
					if err := ob.Run(ctx); err != nil {
						t.Errorf("run %s: %v", names[i], err)
					}
				})
			}

			// One writer, so that save order is commit order; each batch
			// through the next relay's Store, with that Store's clock.
			const total, aggs, batch = 900, 120, 10
			events := ownEvents(total, aggs)
			order := map[string][]string{}
			for _, e := range events {
				order[e.AggregateID] = append(order[e.AggregateID], e.ID)
			}
			start := time.Now()
			for i := 0; i < total; i += batch {
				if i == total/2 {
					clocks[1].set(-2 * time.Minute)
					clocks[2].set(2 * time.Minute)
				}
				k := (i / batch) % len(st)
				tx, err := db.BeginTx(t.Context(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := obs[k].Save(t.Context(), tx, events[i:i+batch]...); err != nil {
					_ = tx.Rollback()
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			deadline := time.Now().Add(20 * time.Second)
			for rec.distinct() < total {
				if time.Now().After(deadline) {
					var pending int
					_ = db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+st[0].t.Quoted+" WHERE synced_at IS NULL").Scan(&pending)
					t.Fatalf("after %v: %d of %d events published, %d pending in the table; owners %v",
						time.Since(start).Round(time.Millisecond), rec.distinct(), total, pending, ownersByRelay(t, st[0]))
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Let the last marks land, then stop the relays.
			waitNoPending(t, db, st[0])
			cancel()
			wg.Wait()

			rec.mu.Lock()
			defer rec.mu.Unlock()
			byRelay := map[string]int{}
			got := map[string][]string{}
			for _, r := range rec.seen {
				byRelay[r.relay]++
				got[r.agg] = append(got[r.agg], r.id)
			}
			for id, n := range rec.n {
				if n > 1 {
					t.Errorf("event %s published %d times without a fault", id, n)
				}
			}
			for agg, want := range order {
				if fmt.Sprint(got[agg]) != fmt.Sprint(want) {
					t.Errorf("aggregate %s arrived as %v, saved as %v", agg, got[agg], want)
				}
			}
			if d != SQLite { // SQLite has one partition: one relay owns it
				for _, name := range names {
					if byRelay[name] == 0 {
						t.Errorf("relay %s published nothing (by relay: %v): the test did not exercise its clock", name, byRelay)
					}
				}
			}
			var attempts int
			if err := db.QueryRowContext(t.Context(), "SELECT COALESCE(SUM(attempts), 0) FROM "+st[0].t.Quoted).Scan(&attempts); err != nil {
				t.Fatal(err)
			}
			if attempts != 0 {
				t.Errorf("%d attempts counted without a fault", attempts)
			}
			t.Logf("%d events in %v, by relay %v", total, time.Since(start).Round(time.Millisecond), byRelay)
		})
	}
}

func ownersByRelay(t *testing.T, s *Store) map[string]int {
	out := map[string]int{}
	for _, r := range partitionOwners(t, s) {
		out[r.owner]++
	}
	return out
}

func waitNoPending(t *testing.T, db *sqlx.DB, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pending int
		if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+s.t.Quoted+" WHERE synced_at IS NULL").Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still pending", pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
