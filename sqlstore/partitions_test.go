package sqlstore

import (
	"crypto/md5"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
)

// partitionOf is the partition the database gives an event of aggregate
// agg: the first 32 bits of the MD5 of the aggregate ID modulo 64 on
// Postgres and MySQL, always 0 on SQLite.
func partitionOf(d Dialect, agg string) int {
	if d == SQLite {
		return 0
	}
	sum := md5.Sum([]byte(agg))
	return int(binary.BigEndian.Uint32(sum[:4]) % 64)
}

func partitionCount(d Dialect) int {
	if d == SQLite {
		return 1
	}
	return 64
}

// TestPartitionsFresh: on a fresh table every partition is free, nothing
// is pending and no relay is live.
func TestPartitionsFresh(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ps, err := b.store.Partitions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != partitionCount(b.store.Dialect()) {
			t.Fatalf("%d partitions, want %d", len(ps), partitionCount(b.store.Dialect()))
		}
		for i, p := range ps {
			if p != (PartitionStatus{Partition: i}) {
				t.Errorf("partition %d of a fresh table: %+v", i, p)
			}
		}
		rs, err := b.store.Relays(t.Context())
		if err != nil || len(rs) != 0 {
			t.Fatalf("relays of a fresh table: %+v, %v", rs, err)
		}
	})
}

// TestPartitionsAfterClaim: after a bulk claim the store's relay owns
// every partition (it is the only relay), and Partitions shows its name,
// its leases and, per partition, the pending events that were saved
// there, those synced or dead left out. A partition whose lease ended
// keeps its last owner but is not live. After Leave every partition is
// free again and no relay is live.
func TestPartitionsAfterClaim(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		d := b.store.Dialect()
		events := b.newEvents(20) // aggregates sku-0 .. sku-4
		b.save(t, events...)
		b.clock.Advance(3 * time.Second)

		c := b.claim(t, 100)
		if len(c.Events) != len(events) {
			t.Fatalf("claimed %d events, want %d", len(c.Events), len(events))
		}
		// One synced and one dead: neither is pending. The rest go back.
		synced, dead := c.Events[0], c.Events[1]
		if n, err := b.store.MarkSynced(ctx, c.Token, []string{synced.ID}); err != nil || n != 1 {
			t.Fatalf("mark synced: %d, %v", n, err)
		}
		if n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: dead.ID, Err: "poison", Dead: true}}); err != nil || n != 1 {
			t.Fatalf("fail: %d, %v", n, err)
		}
		var rest []string
		for _, e := range c.Events[2:] {
			rest = append(rest, e.ID)
		}
		if _, err := b.store.Release(ctx, c.Token, rest); err != nil {
			t.Fatal(err)
		}
		want := map[int]int64{}
		for _, e := range events {
			if e.ID != synced.ID && e.ID != dead.ID {
				want[partitionOf(d, e.AggregateID)]++
			}
		}

		ps, err := b.store.Partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != partitionCount(d) {
			t.Fatalf("%d partitions, want %d", len(ps), partitionCount(d))
		}
		name := ownerOf(b.store).name
		var live []int
		var total int64
		for i, p := range ps {
			if p.Partition != i {
				t.Fatalf("partition %d at index %d", p.Partition, i)
			}
			if p.Owner != name || !p.Live || p.Token < 1 {
				t.Errorf("partition %d: %+v, want owned by %s", i, p, name)
			}
			if p.LeaseLeft <= 0 || p.LeaseLeft > DefaultMemberTTL+time.Second {
				t.Errorf("partition %d: lease left %v, want up to %v", i, p.LeaseLeft, DefaultMemberTTL)
			}
			if p.Pending != want[i] {
				t.Errorf("partition %d: %d pending, want %d", i, p.Pending, want[i])
			}
			switch {
			case p.Pending > 0 && p.OldestPendingAge != 3*time.Second:
				t.Errorf("partition %d: oldest pending %v old, want 3s", i, p.OldestPendingAge)
			case p.Pending == 0 && p.OldestPendingAge != 0:
				t.Errorf("partition %d: oldest pending %v old with none pending", i, p.OldestPendingAge)
			}
			if p.Live && p.Owner == name {
				live = append(live, p.Partition)
			}
			total += p.Pending
		}
		if owned := b.store.Owned(); !slices.Equal(owned, live) {
			t.Errorf("Owned() = %v, the table says %v", owned, live)
		}
		st, err := b.store.Stats(ctx, 0)
		if err != nil || st.Pending != total || total != int64(len(events)-2) {
			t.Errorf("pending over the partitions %d, Stats %d (%v), saved %d", total, st.Pending, err, len(events)-2)
		}
		rs, err := b.store.Relays(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 || rs[0].Name != name || rs[0].Partitions != partitionCount(d) || rs[0].SeenLeft <= 0 {
			t.Fatalf("relays: %+v, want %s with %d partitions", rs, name, partitionCount(d))
		}

		// A lease that ended: the partition keeps its last owner, not live.
		ended := "UPDATE " + b.store.t.Sibling(partitionsSuffix) + " SET lease_until = " + b.store.d.dbNow() + " WHERE partition_no = 0"
		if _, err := b.db.ExecContext(ctx, ended); err != nil {
			t.Fatal(err)
		}
		ps, err = b.store.Partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := ps[0]; p.Owner != name || p.Live || p.LeaseLeft != 0 || p.Pending != want[0] {
			t.Errorf("partition 0 after its lease ended: %+v", p)
		}
		if rs, err := b.store.Relays(ctx); err != nil || len(rs) != 1 || rs[0].Partitions != partitionCount(d)-1 {
			t.Errorf("relays after a lease ended: %+v, %v", rs, err)
		}

		if err := b.store.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		ps, err = b.store.Partitions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.Live || p.Owner != "" || p.LeaseLeft != 0 || p.Pending != want[p.Partition] {
				t.Errorf("partition %d after Leave: %+v", p.Partition, p)
			}
		}
		if rs, err := b.store.Relays(ctx); err != nil || len(rs) != 0 {
			t.Errorf("relays after Leave: %+v, %v", rs, err)
		}
	})
}
