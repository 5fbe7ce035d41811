package sqlstore

import (
	"testing"
	"time"
)

// A relay's membership tells how long ago it joined, which grows, apart
// from how long it stays live without renewing, which its renewals keep
// near the lease: the figure `outbox status` once showed as "seen for".
func TestMemberships(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		if ms, err := b.store.Memberships(ctx); err != nil || len(ms) != 0 {
			t.Fatalf("memberships of a fresh table: %+v, %v", ms, err)
		}
		const ttl = DefaultMemberTTL // how long a heartbeat holds
		events := b.newEvents(1)
		b.save(t, events...)
		c := b.claim(t, 10)
		ms, err := b.store.Memberships(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatalf("memberships after a claim: %+v, %v", ms, err)
		}
		first := ms[0]
		if first.Since > 5*time.Second || first.ExpiresIn <= 0 || first.ExpiresIn > ttl {
			t.Errorf("a relay that just joined: since %v, expires in %v (time to live %v)", first.Since, first.ExpiresIn, ttl)
		}
		rs, err := b.store.Relays(ctx)
		if err != nil || len(rs) != 1 || rs[0].Name != first.Name {
			t.Fatalf("relays %+v, %v; memberships name %s", rs, err, first.Name)
		}
		time.Sleep(1100 * time.Millisecond)
		ms, err = b.store.Memberships(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatalf("memberships a second later: %+v, %v", ms, err)
		}
		if ms[0].Since < first.Since+time.Second {
			t.Errorf("a second later the relay joined %v ago, before %v", ms[0].Since, first.Since)
		}
		b.mark(t, c, events...) // Leave waits for claims in flight
		if err := b.store.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		if ms, err := b.store.Memberships(ctx); err != nil || len(ms) != 0 {
			t.Errorf("memberships after Leave: %+v, %v", ms, err)
		}
	})
}
