package sqlstore

import (
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// A row whose headers are not a JSON object of strings (written by hand or
// by another producer) is buried by the claim that meets it, with the
// reason, instead of failing that claim and every later one. The other
// events are claimed; a later event of the buried one's aggregate waits
// behind it as behind any buried event.
func TestClaimBuriesUndecodableHeaders(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		mk := func(agg string) *outbox.Event {
			e := b.newEvents(1)[0]
			e.AggregateID = agg
			return e
		}
		good1 := mk("a")
		bad1 := mk("b")  // headers: not JSON
		after := mk("b") // waits behind bad1
		bad2 := mk("")   // headers: a JSON object of numbers
		bad3 := mk("c")  // headers: a JSON array
		good2 := mk("")  // unordered
		good3 := mk("d") // good headers
		good3.Headers = map[string]string{"k": "v"}
		all := []*outbox.Event{good1, bad1, after, bad2, bad3, good2, good3}
		b.save(t, all...)
		for id, h := range map[string]string{bad1.ID: "not json", bad2.ID: `{"n": 1}`, bad3.ID: `["x"]`} {
			q := newQuery(b.store.sx)
			q.sql("UPDATE ", b.store.t.Quoted, " SET headers = ", q.arg(h), " WHERE id = ", q.arg(id))
			if _, err := b.db.ExecContext(ctx, q.String(), q.args...); err != nil {
				t.Fatal(err)
			}
		}

		c, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute})
		if err != nil {
			t.Fatalf("claim with malformed headers in the table: %v", err)
		}
		equalIDs(t, "claimed", ids(c.Events), ids([]*outbox.Event{good1, good2, good3}))
		if c.Events[2].Headers["k"] != "v" {
			t.Fatalf("headers of a good event: %v", c.Events[2].Headers)
		}

		for _, bad := range []*outbox.Event{bad1, bad2, bad3} {
			q := newQuery(b.store.sx)
			q.sql("SELECT attempts, last_error, claim_token, ", b.store.sx.timeCol("dead_at"), " FROM ", b.store.t.Quoted, " WHERE id = ", q.arg(bad.ID))
			var attempts int
			var lastErr, token sql.NullString
			var dead dbTime
			if err := b.db.QueryRowContext(ctx, q.String(), q.args...).Scan(&attempts, &lastErr, &token, &dead); err != nil {
				t.Fatal(err)
			}
			if dead.IsZero() || attempts != 1 || token.Valid || !strings.Contains(lastErr.String, "headers") {
				t.Fatalf("event %s with malformed headers: attempts %d, last error %q, token %v, dead at %v; want buried with the reason",
					bad.ID, attempts, lastErr.String, token, dead.Time)
			}
		}

		// The buried event holds back the rest of its aggregate, which is
		// not leased: it goes with SkipDead.
		if again := b.claim(t, 10); len(again.Events) != 0 {
			t.Fatalf("second claim got %v, want nothing", ids(again.Events))
		}
		passed, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute, SkipDead: true})
		if err != nil {
			t.Fatal(err)
		}
		equalIDs(t, "with SkipDead", ids(passed.Events), ids([]*outbox.Event{after}))

		st, err := b.store.Stats(ctx, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead != 3 {
			t.Fatalf("stats %+v, want 3 dead", st)
		}
	})
}

// With SkipDead the events after a buried one in the same claim are
// returned.
func TestClaimBuriesUndecodableHeadersSkipDead(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		events := b.newEvents(3)
		for _, e := range events {
			e.AggregateID = "a"
		}
		b.save(t, events...)
		q := newQuery(b.store.sx)
		q.sql("UPDATE ", b.store.t.Quoted, " SET headers = ", q.arg("{"), " WHERE id = ", q.arg(events[0].ID))
		if _, err := b.db.ExecContext(ctx, q.String(), q.args...); err != nil {
			t.Fatal(err)
		}
		c, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 10, Lease: time.Minute, SkipDead: true})
		if err != nil {
			t.Fatal(err)
		}
		equalIDs(t, "claimed", ids(c.Events), ids(events[1:]))
	})
}
