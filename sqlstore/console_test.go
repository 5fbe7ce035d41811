package sqlstore

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// consoleTable saves 30 events and puts them in every state by SQL: e0-e9
// pending (e3, e6, e9 failed once; e5 of priority 5), e10-e19 dead (types
// alternating a.dead and b.dead, e10-e14 on topic t1), e20-e29 synced at
// one second apart ending at the clock's time. It returns the events by
// index.
func consoleTable(t *testing.T, b *bundle) []*outbox.Event {
	t.Helper()
	events := b.newEvents(30)
	for i, e := range events {
		e.ID = fmt.Sprintf("e%02d", i)
		e.CreatedAt = b.clock.Now().Add(time.Duration(i-30) * time.Second)
		switch {
		case i == 5:
			e.Priority = 5
		case i >= 10 && i < 20:
			e.Type = []string{"a.dead", "b.dead"}[i%2]
			if i < 15 {
				e.Topic = "t1"
			}
		}
	}
	b.save(t, events...)
	set := func(i int, assign string, v any) {
		q := newQuery(b.store.sx)
		q.sql("UPDATE ", b.store.t.Quoted, " SET ", assign, q.arg(v), " WHERE id = ", q.arg(events[i].ID))
		if _, err := b.store.exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	now := b.clock.Now()
	for _, i := range []int{3, 6, 9} {
		set(i, "last_error = 'boom', attempts = ", 1)
	}
	for i := 10; i < 20; i++ {
		set(i, "last_error = 'poison', attempts = 3, dead_at = ", b.store.sx.Time(now))
	}
	for i := 20; i < 30; i++ {
		set(i, "synced_at = ", b.store.sx.Time(now.Add(time.Duration(i-29)*time.Second)))
	}
	return events
}

// readAll reads every page of pq, limit events a page, and returns the
// IDs in order.
func readAll(t *testing.T, b *bundle, pq PageQuery) []string {
	t.Helper()
	var got []string
	for pages := 0; ; pages++ {
		p, err := b.store.Page(t.Context(), pq)
		if err != nil {
			t.Fatalf("page %+v: %v", pq, err)
		}
		for _, e := range p.Events {
			got = append(got, e.ID)
		}
		if p.Next == "" {
			return got
		}
		if pages > 100 {
			t.Fatal("more than 100 pages")
		}
		pq.After = p.Next
	}
}

func TestConsolePages(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		events := consoleTable(t, b)
		id := func(is ...int) []string {
			var out []string
			for _, i := range is {
				out = append(out, events[i].ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			pq   PageQuery
			want []string
		}{
			{"pending in the relay's order", PageQuery{State: StatePending, Limit: 3}, id(5, 0, 1, 2, 3, 4, 6, 7, 8, 9)},
			{"failed", PageQuery{State: StateFailed, Limit: 2}, id(3, 6, 9)},
			{"dead, newest first", PageQuery{State: StateDead, Limit: 4}, id(19, 18, 17, 16, 15, 14, 13, 12, 11, 10)},
			{"dead of a type", PageQuery{State: StateDead, Type: "a.dead", Limit: 2}, id(18, 16, 14, 12, 10)},
			{"dead of a type and topic", PageQuery{State: StateDead, Type: "a.dead", Topic: "t1"}, id(14, 12, 10)},
			{"synced, latest first", PageQuery{State: StateSynced, Limit: 3}, id(29, 28, 27, 26, 25, 24, 23, 22, 21, 20)},
			{"synced by creation time", PageQuery{State: StateSynced, From: events[22].CreatedAt, To: events[25].CreatedAt}, id(24, 23, 22)},
			{"by aggregate", PageQuery{State: StatePending, AggregateID: "sku-1", Limit: 1}, id(1, 6)},
		} {
			if got := readAll(t, b, tc.pq); !slices.Equal(got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			}
		}
		p, err := b.store.Page(t.Context(), PageQuery{State: StateDead, Limit: 1})
		if err != nil || len(p.Events) != 1 || p.Events[0].Delivery.LastError != "poison" || p.Events[0].Seq == 0 {
			t.Fatalf("first dead page = %+v, %v", p, err)
		}
		if _, err := b.store.Page(t.Context(), PageQuery{State: StateDead, After: "1.2"}); err == nil {
			t.Error("a pending cursor on the dead page was accepted")
		}
		if _, err := b.store.Page(t.Context(), PageQuery{State: "gone"}); err == nil {
			t.Error("an unknown state was accepted")
		}

		e, err := b.store.Locate(t.Context(), "e12")
		if err != nil || e.ID != "e12" || e.Seq != p.Events[0].Seq-7 || e.Delivery.Attempts != 3 {
			t.Fatalf("Locate(e12) = %+v, %v", e, err)
		}
		if _, err := b.store.Locate(t.Context(), "nope"); !strings.Contains(fmt.Sprint(err), "not found") {
			t.Fatalf("Locate(nope) = %v, want not found", err)
		}

		n, err := b.store.Count(t.Context(), PageQuery{State: StateDead, Type: "b.dead"})
		if err != nil || n != 5 {
			t.Fatalf("Count(b.dead) = %d, %v; want 5", n, err)
		}
		if _, err := b.store.RequeueMatching(t.Context(), PageQuery{State: StatePending}); err == nil {
			t.Fatal("RequeueMatching took pending events")
		}
		got, err := b.store.RequeueMatching(t.Context(), PageQuery{State: StateDead, Type: "b.dead", Topic: "t1"})
		wantN(t, "requeue b.dead on t1", got, err, 2)
		if left := readAll(t, b, PageQuery{State: StateDead}); !slices.Equal(left, id(19, 18, 17, 16, 15, 14, 12, 10)) {
			t.Fatalf("dead after the requeue: %v", left)
		}
		if back := readAll(t, b, PageQuery{State: StatePending, AggregateID: events[11].AggregateID}); !slices.Contains(back, "e11") {
			t.Fatalf("e11 is not pending after the requeue: %v", back)
		}
	})
}

func TestConsoleFigures(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		consoleTable(t, b) // ten synced within the last 10 s
		per, start, err := b.store.SyncedPerMinute(t.Context(), 60)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, n := range per {
			sum += n
		}
		if len(per) != 60 || sum != 10 || per[59]+per[58] != 10 {
			t.Fatalf("SyncedPerMinute = %v (start %v), want 10 in the last two minutes", per, start)
		}
		if want := b.clock.Now().Truncate(time.Minute).Add(-59 * time.Minute); !start.Equal(want) {
			t.Errorf("start = %v, want %v", start, want)
		}
		// Event i was created at now-(30-i)s and synced at now-(29-i)s:
		// every latency is 1 s.
		l, err := b.store.SyncLatency(t.Context(), time.Hour)
		if err != nil || l.Events != 10 {
			t.Fatalf("SyncLatency = %+v, %v", l, err)
		}
		near := func(d time.Duration) bool {
			return d > time.Second-time.Millisecond && d < time.Second+time.Millisecond
		}
		if !near(l.P50) || !near(l.P99) {
			t.Errorf("SyncLatency = %+v, want 1s each", l)
		}
		b.clock.Advance(2 * time.Hour)
		per, _, err = b.store.SyncedPerMinute(t.Context(), 60)
		if err != nil || slices.ContainsFunc(per, func(n int64) bool { return n != 0 }) {
			t.Fatalf("SyncedPerMinute two hours later = %v, %v; want zeros", per, err)
		}
		if _, _, err := b.store.SyncedPerMinute(t.Context(), 0); err == nil {
			t.Error("0 minutes accepted")
		}
	})
}

// The console's statements read an index on Postgres. The failed page
// (pending with attempts > 0, which no index holds) is left out: on a
// table this small the planner rightly prefers a sequential scan; the
// console benchmark on 10 million rows logs its plan.
func TestConsolePlans(t *testing.T) {
	b := setup(t, Postgres)
	fillPostgres(t, b, 20_000, 200, 15_000)
	s := b.store
	plans := map[string]*query{}
	for _, pq := range []PageQuery{
		{State: StatePending}, {State: StateDead}, {State: StateSynced},
		{State: StateDead, After: "100"}, {State: StateSynced, After: fmt.Sprint(b.clock.Now().UnixMicro()) + ".100"},
		{State: StatePending, AggregateID: "agg-7", Type: "stock.updated"},
	} {
		c, err := parseCursor(pq.State, pq.After)
		if err != nil {
			t.Fatal(err)
		}
		q := newQuery(s.sx).sql("SELECT ", selectColumns(s.sx, ""), ", partition_no FROM ", s.t.Quoted)
		if pq.State == StatePending || pq.State == StateFailed {
			if err := s.where(q, pq); err != nil {
				t.Fatal(err)
			}
			q.sql(" ORDER BY priority DESC, seq LIMIT 51")
		} else {
			q = s.pageQuery(pq, c, 51)
		}
		plans[fmt.Sprintf("page %+v", pq)] = q
	}
	after := newQuery(s.sx).sql("SELECT seq FROM ", s.t.Quoted)
	_ = s.where(after, PageQuery{State: StatePending})
	after.sql(" AND priority = 0 AND seq > 100 ORDER BY seq LIMIT 51")
	plans["pending after a cursor"] = after
	count := newQuery(s.sx).sql("SELECT COUNT(*) FROM ", s.t.Quoted)
	_ = s.where(count, PageQuery{State: StateDead, Type: "x"})
	plans["count dead"] = count
	plans["synced per minute"] = s.perMinuteQuery(b.clock.Now().Add(-time.Hour))
	plans["latency percentiles"] = s.percentilesQuery(s.sx.Time(b.clock.Now().Add(-time.Hour)))
	locate := newQuery(s.sx)
	locate.sql("SELECT ", selectColumns(s.sx, ""), ", partition_no FROM ", s.t.Quoted, " WHERE id = ", locate.arg("ev-5"))
	plans["locate"] = locate
	for name, q := range plans {
		plan := explain(t, b, "", q)
		if !strings.Contains(plan, "Index") {
			t.Errorf("%s uses no index:\n%s\n%s", name, q.String(), plan)
		}
	}
}

// Pending is exact up to PendingExactLimit pending events, then estimates
// the counts on Postgres (and keeps the oldest age exact).
func TestConsolePending(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		consoleTable(t, b)
		f, err := b.store.Pending(t.Context())
		if err != nil || f.Estimated || f.Total != 10 || f.ByType["stock.updated"] != 10 || f.OldestAge != 30*time.Second {
			t.Fatalf("Pending = %+v, %v; want 10 exact stock.updated, the oldest 30s old", f, err)
		}
	})
	t.Run("estimated", func(t *testing.T) {
		b := setup(t, Postgres)
		fillPostgres(t, b, PendingExactLimit+20_000, 200, 0)
		var exact int64
		if err := b.db.Get(&exact, "SELECT COUNT(*) FROM "+b.store.t.Quoted+" WHERE synced_at IS NULL AND dead_at IS NULL"); err != nil {
			t.Fatal(err)
		}
		f, err := b.store.Pending(t.Context())
		if err != nil || !f.Estimated || len(f.ByType) != 1 || f.Total < exact*8/10 || f.Total > exact*12/10 {
			t.Fatalf("Pending = %+v, %v; want an estimate near %d of stock.updated", f, err, exact)
		}
		if f.OldestAge < 30*time.Second || f.OldestAge > 2*time.Minute {
			t.Errorf("OldestAge = %v, want about a minute (fillPostgres advances the clock by one)", f.OldestAge)
		}
	})
}
