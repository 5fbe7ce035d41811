package sqlstore

import (
	"database/sql"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
)

// The rules of partition ownership, step by step and without a
// database: each test drives the ledger as the owner does (adopt after a
// heartbeat, decide inside one, take after a read) and checks one rule
// of the protocol, named as in relay.pml.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	tTTL    = 3 * time.Second
	tMargin = time.Second
)

// row is an event of partition p, aggregate agg, seq seq, as a read
// returns it.
func row(seq int64, p int, agg string) eventRow {
	return eventRow{Seq: seq, ID: "e" + string(rune('0'+seq)), AggregateID: agg, Partition: sql.NullInt64{Int64: int64(p), Valid: true}}
}

// owning returns a ledger that owns parts (partition -> token) after a
// heartbeat at t0 with the given share.
func owning(parts map[int]int64, share int) *ledger {
	l := newLedger()
	l.adopt(parts, nil, nil, 4, share, t0, tTTL)
	return l
}

func req(token string) takeReq {
	return takeReq{token: token, now: t0, ordered: true, lease: time.Minute, margin: tMargin}
}

func takeIDs(l *ledger, token string, rows ...eventRow) []string {
	owned := l.claimable(t0, tMargin)
	return idsOf(l.take(rows, owned, req(token), t0))
}

// decide never gives back a partition with an event in flight: it drains
// it (no claim takes from it from then on) and gives it back at the
// heartbeat after the flight ended. This is the handoff; the race the
// model's STALE_INFLIGHT switch puts back is a give-back decided on what
// was in flight before the lock.
func TestLedgerHandoff(t *testing.T) {
	l := owning(map[int]int64{0: 1, 1: 1}, 2)
	if got := takeIDs(l, "c1", row(1, 1, "a")); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("took %v", got)
	}
	// A relay joined: the share is 1, one partition must go. Partition 0
	// is idle, so it goes first, at once.
	if give := first(l.decide(map[int]int64{0: 1, 1: 1}, 1, nil)); !slices.Equal(give, []int{0}) {
		t.Fatalf("gave back %v, want [0]", give)
	}
	// Two relays joined: share 0 of partition 1 too; it is in flight, so
	// it drains and is not given back yet.
	if give := first(l.decide(map[int]int64{1: 1}, 0, nil)); len(give) != 0 {
		t.Fatalf("gave back %v with partition 1 in flight", give)
	}
	// Draining: a claim read before the decision takes nothing of it.
	owned := map[int]int64{1: 1}
	if got := l.take([]eventRow{row(2, 1, "b")}, owned, req("c2"), t0); len(got) != 0 {
		t.Fatalf("took %v from a draining partition", idsOf(got))
	}
	if _, ok := l.claimable(t0, tMargin)[1]; ok {
		t.Fatal("a draining partition is claimable")
	}
	l.finish("c1", []string{"e1"}, endDelivered)
	if give := first(l.decide(map[int]int64{1: 1}, 0, nil)); !slices.Equal(give, []int{1}) {
		t.Fatalf("gave back %v once the flight ended, want [1]", give)
	}
}

// A partition the table holds under a token the ledger does not know (a
// heartbeat took it again and its reply was lost) is not given back by
// the heartbeat that finds it: the ledger adopts it first.
func TestLedgerKeepsAPartitionOfAnUnknownToken(t *testing.T) {
	l := owning(map[int]int64{0: 1, 1: 1}, 2)
	if give := first(l.decide(map[int]int64{0: 2, 1: 1}, 0, nil)); !slices.Equal(give, []int{1}) {
		t.Fatalf("gave back %v, want [1]: partition 0's token is new to the ledger", give)
	}
}

// The share growing again (a relay left) makes a draining partition
// claimable again: it never left the Store.
func TestLedgerUndrain(t *testing.T) {
	l := owning(map[int]int64{0: 1, 1: 1}, 2)
	takeIDs(l, "c1", row(1, 0, "a"), row(2, 1, "b"))
	if give := first(l.decide(map[int]int64{0: 1, 1: 1}, 1, nil)); len(give) != 0 {
		t.Fatalf("gave back %v with both in flight", give)
	}
	if got := l.claimable(t0, tMargin); len(got) != 1 {
		t.Fatalf("claimable %v while one partition drains", got)
	}
	first(l.decide(map[int]int64{0: 1, 1: 1}, 2, nil))
	if got := l.claimable(t0, tMargin); len(got) != 2 {
		t.Fatalf("claimable %v after the share grew back", got)
	}
}

// take keeps a row only while its partition is claimable under the
// token the read was made for: a partition lost and taken again (a new
// token) between the read and the take is not claimed from with the old
// one (the model's NO_RECHECK switch).
func TestLedgerTakeRechecksToken(t *testing.T) {
	l := owning(map[int]int64{0: 1}, 1)
	owned := l.claimable(t0, tMargin)
	l.adopt(map[int]int64{0: 2}, nil, nil, 4, 1, t0, tTTL)
	if got := l.take([]eventRow{row(1, 0, "a")}, owned, req("c"), t0); len(got) != 0 {
		t.Fatalf("took %v under a stale token", idsOf(got))
	}
}

// A partition is claimed from only while its lease holds for the margin
// more, by the local clock from before the heartbeat was sent.
func TestLedgerLeaseMargin(t *testing.T) {
	l := owning(map[int]int64{0: 1}, 1)
	if got := l.claimable(t0.Add(tTTL-tMargin), tMargin); len(got) != 1 {
		t.Fatalf("claimable %v with the margin left", got)
	}
	if got := l.claimable(t0.Add(tTTL-tMargin+time.Millisecond), tMargin); len(got) != 0 {
		t.Fatalf("claimable %v with less than the margin left", got)
	}
	if got := l.owned(t0.Add(tTTL)); len(got) != 0 {
		t.Fatalf("owned %v after the lease ended", got)
	}
}

// Leave drains every partition at once, gives back the idle ones and
// waits for the others; nothing is claimed after it.
func TestLedgerLeave(t *testing.T) {
	l := owning(map[int]int64{0: 1, 1: 1, 2: 1}, 3)
	takeIDs(l, "c1", row(1, 2, "a"))
	give, _, waiting := l.leave(nil)
	if !slices.Equal(give, []int{0, 1}) || !waiting {
		t.Fatalf("leave: give %v, waiting %v", give, waiting)
	}
	l.given(give)
	if got := takeIDs(l, "c2", row(2, 2, "b")); len(got) != 0 {
		t.Fatalf("took %v after Leave", got)
	}
	l.finish("c1", []string{"e1"}, endDelivered)
	if give, _, waiting = l.leave(nil); !slices.Equal(give, []int{2}) || waiting {
		t.Fatalf("leave after the flight: give %v, waiting %v", give, waiting)
	}
	l.join()
	if l.relaying() {
		t.Fatal("relaying after join, before a heartbeat")
	}
}

// Order within one relay: an aggregate with an event in flight, held
// (backing off), dead, or with an event leased by a claim by IDs is not
// claimed from; a not-due row holds its aggregate; others go on.
func TestLedgerTakeOrder(t *testing.T) {
	l := owning(map[int]int64{0: 1}, 1)
	if got := takeIDs(l, "c1", row(1, 0, "a")); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("took %v", got)
	}
	leased := row(3, 0, "c")
	leased.Leased = sql.NullInt64{Int64: 1, Valid: true}
	notDue := row(5, 0, "d")
	notDue.Attempts, notDue.NextAttemptAt = 1, dbTime{t0.Add(time.Minute)}
	got := takeIDs(l, "c2", row(2, 0, "a"), leased, row(4, 0, "c"), notDue, row(6, 0, "d"), row(7, 0, "e"))
	if !slices.Equal(got, []string{"e7"}) {
		t.Fatalf("took %v, want only e7", got)
	}
	if until, held := l.holds["d"]; !held || !until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("d held %v until %v", held, until)
	}
	// A failure that backs off holds its aggregate; a dead one too.
	l.failed("c1", []storage.Failure{{ID: "e1", Delay: time.Second}}, t0)
	l.finish("c1", []string{"e1"}, endDelivered)
	if got := takeIDs(l, "c3", row(2, 0, "a")); len(got) != 0 {
		t.Fatalf("took %v while a backs off", got)
	}
	aggs, _ := l.skipList(true, false, t0)
	if !slices.Contains(aggs, "a") || !slices.Contains(aggs, "d") || !slices.Contains(aggs, "e") {
		t.Fatalf("skip list %v, want a (held), d (held) and e (busy)", aggs)
	}
}

// A flight whose lease passed ends: its partition is idle again, and a
// heartbeat may give it back.
func TestLedgerExpire(t *testing.T) {
	l := owning(map[int]int64{0: 1}, 1)
	owned := l.claimable(t0, tMargin)
	r := req("c1")
	r.lease = time.Second
	if got := l.take([]eventRow{row(1, 0, "a")}, owned, r, t0); len(got) != 1 {
		t.Fatal("took nothing")
	}
	l.expire(t0.Add(500 * time.Millisecond))
	if give := first(l.decide(map[int]int64{0: 1}, 0, nil)); len(give) != 0 {
		t.Fatal("gave back a partition in flight")
	}
	l.expire(t0.Add(2 * time.Second))
	if give := first(l.decide(map[int]int64{0: 1}, 0, nil)); !slices.Equal(give, []int{0}) {
		t.Fatalf("gave back %v after the flight expired", give)
	}
}

// adopt reports partitions gained (to wake the relay), keeps draining
// ones draining, and forgets those no longer owned.
func TestLedgerAdopt(t *testing.T) {
	l := owning(map[int]int64{0: 1}, 2)
	if !l.adopt(map[int]int64{0: 1, 1: 4}, nil, nil, 4, 2, t0, tTTL) {
		t.Fatal("a taken partition is not reported")
	}
	if l.adopt(map[int]int64{0: 1, 1: 4}, nil, nil, 4, 2, t0, tTTL) {
		t.Fatal("nothing changed, but a gain is reported")
	}
	takeIDs(l, "c", row(1, 1, "a"))
	first(l.decide(map[int]int64{0: 1, 1: 4}, 0, nil))
	l.adopt(map[int]int64{1: 4}, nil, nil, 4, 0, t0, tTTL) // 0 given back
	if !maps.Equal(l.draining, map[int]bool{1: true}) || len(l.parts) != 1 {
		t.Fatalf("draining %v, parts %v", l.draining, l.parts)
	}
	if !l.adopt(map[int]int64{1: 5}, nil, nil, 4, 1, t0, tTTL) {
		t.Fatal("a partition taken again under a new token is not a gain")
	}
}

// first returns the first of two results.
func first[A, B any](a A, _ B) A { return a }
