package sqlstore

import (
	"cmp"
	"database/sql"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// markScene is the table of a Store with watermarks holding an event of
// every kind an operator sees: delivered by the partitions' marks (12,
// saved together, each 10 ms after its creation), delivered per row
// (after a failure, 2 minutes after its creation), buried, and pending:
// after the marks (one of priority 5, one of another type), failed and
// backing off (per row), of a transaction that committed after its
// partition's mark passed its seq (its ID in the mark's snapshot, in
// progress), and of a transaction whose ID the mark's snapshot never saw
// at a seq below the mark (written by hand: its ID past the snapshot's).
// On SQLite, which has no late commits, late and unseen are rows saved
// before migration 007 (xid NULL, per row), at seqs below every other,
// written by hand once the marks are recorded.
type markScene struct {
	b                        *bundle
	marked                   []*outbox.Event
	perRow, dead, failed     *outbox.Event
	after                    []*outbox.Event
	late, unseen             *outbox.Event
	t0                       time.Time
	pendingOrder, syncedDesc []string // List's orders
}

func newMarkScene(t *testing.T) *markScene {
	t.Helper()
	return newMarkSceneOn(t, Postgres)
}

// newMarkSceneOn is newMarkScene on dialect d.
func newMarkSceneOn(t *testing.T, d Dialect) *markScene {
	t.Helper()
	b := markBundleOn(t, d)
	ctx := t.Context()
	sc := &markScene{b: b, t0: b.clock.Now()}
	sc.late = b.event("L", 0)
	var tx *sql.Tx
	if d == Postgres {
		var err error
		if tx, err = b.db.BeginTx(ctx, nil); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if err := b.store.Insert(ctx, tx, []*outbox.Event{sc.late}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 12 {
		sc.marked = append(sc.marked, b.event([]string{sibling("L"), "M", "N", "O"}[i%4], 0))
	}
	b.save(t, sc.marked...)
	b.clock.Advance(10 * time.Millisecond)
	if got := b.drain(t, 5); len(got) != 12 {
		t.Fatalf("drained %d events, want the 12 saved", len(got))
	}
	fail := func(e *outbox.Event, f storage.Failure) {
		t.Helper()
		b.save(t, e)
		c := b.claim(t, 10)
		equalIDs(t, "claim of "+e.AggregateID, ids(c.Events), []string{e.ID})
		f.ID = e.ID
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{f})
		wantN(t, "Fail", n, err, 1)
	}
	sc.perRow = b.event("F", 0)
	fail(sc.perRow, storage.Failure{Err: "once", Delay: time.Minute})
	b.clock.Advance(2 * time.Minute)
	equalIDs(t, "per-row delivery", b.drain(t, 10), []string{sc.perRow.ID})
	sc.dead = b.event("D", 0)
	fail(sc.dead, storage.Failure{Err: "poison", Dead: true})
	sc.failed = b.event("G", 0)
	fail(sc.failed, storage.Failure{Err: "later", Delay: time.Hour})
	sc.after = []*outbox.Event{b.event("P", 0), b.event("Q", 0), b.event("R", 5)}
	sc.after[0].Type = "reservation.created"
	b.save(t, sc.after...)
	sc.unseen = b.event(sibling("M"), 0)
	if d == SQLite {
		for i, e := range []*outbox.Event{sc.unseen, sc.late} {
			_, err := b.db.ExecContext(ctx, "INSERT INTO "+b.store.t.Quoted+" (seq, id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at, xid)"+
				" VALUES (?, ?, 'stock', 'stock.updated', ?, X'7b7d', ?, ?, NULL)", i-2, e.ID, e.AggregateID, b.store.sx.Time(e.CreatedAt), b.store.sx.Time(e.CreatedAt))
			if err != nil {
				t.Fatal(err)
			}
		}
	} else {
		sc.postgresLate(t, tx)
	}
	sc.pendingOrder = []string{sc.after[2].ID, sc.unseen.ID, sc.late.ID, sc.failed.ID, sc.after[0].ID, sc.after[1].ID}
	sc.syncedDesc = []string{sc.perRow.ID}
	for i := len(sc.marked) - 1; i >= 0; i-- {
		sc.syncedDesc = append(sc.syncedDesc, sc.marked[i].ID)
	}
	return sc
}

// postgresLate commits the late transaction (tx, which saved sc.late
// before every other event) and writes sc.unseen by hand.
func (sc *markScene) postgresLate(t *testing.T, tx *sql.Tx) {
	t.Helper()
	b := sc.b
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	_, err := b.db.ExecContext(t.Context(), "INSERT INTO "+b.store.t.Quoted+" (seq, id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at, xid)"+
		" SELECT 0, $1, 'stock', 'stock.updated', $2, '\\x7b7d'::bytea, $3, $3, txid_snapshot_xmax(w.mark_snap) + 1000000 FROM "+
		b.store.t.Sibling(partitionsSuffix)+" w WHERE w.partition_no = $4 AND w.mark_seq > 0",
		sc.unseen.ID, sc.unseen.AggregateID, b.clock.Now(), partitionOf(Postgres, sc.unseen.AggregateID))
	if err != nil {
		t.Fatal(err)
	}
}

// eachMarkDialect runs f as a subtest on each dialect that records
// delivery by watermarks.
func eachMarkDialect(t *testing.T, f func(t *testing.T, d Dialect)) {
	for _, d := range []Dialect{Postgres, SQLite} {
		t.Run(string(d), func(t *testing.T) { f(t, d) })
	}
}

// markAt returns the time the mark of the partition of agg was recorded.
func (sc *markScene) markAt(t *testing.T, agg string) time.Time {
	t.Helper()
	var at dbTime
	s := sc.b.store
	q := newQuery(s.sx)
	q.sql("SELECT mark_at FROM ", s.t.Sibling(partitionsSuffix), " WHERE partition_no = ", q.arg(partitionOf(s.Dialect(), agg)))
	if err := sc.b.db.QueryRowContext(t.Context(), q.String(), q.args...).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at.Time
}

// Under watermarks Stats counts what the marks delivered as synced, not
// pending: the pending events of every kind, by type, the oldest's age,
// the dead, and the synced within the window with their latencies (the
// 99th percentile within 19 %).
func TestMarkedStats(t *testing.T) {
	eachMarkDialect(t, testMarkedStats)
}

func testMarkedStats(t *testing.T, d Dialect) {
	sc := newMarkSceneOn(t, d)
	st, err := sc.b.store.Stats(t.Context(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 6 || st.Dead != 1 || st.Synced != 13 ||
		!maps.Equal(st.PendingByType, map[string]int64{"stock.updated": 5, "reservation.created": 1}) {
		t.Fatalf("Stats = %+v; want 6 pending (5 stock.updated, 1 reservation.created), 1 dead, 13 synced", st)
	}
	if want := 2*time.Minute + 10*time.Millisecond; st.OldestPendingAge != want {
		t.Errorf("OldestPendingAge = %v, want %v (the late transaction's event)", st.OldestPendingAge, want)
	}
	if want := (12*10*time.Millisecond + 2*time.Minute) / 13; st.AvgSyncLatency < want-time.Millisecond || st.AvgSyncLatency > want+time.Millisecond {
		t.Errorf("AvgSyncLatency = %v, want %v", st.AvgSyncLatency, want)
	}
	// The upper bound allows a millisecond: a mark's time is read from
	// the clock when it is written, a few microseconds after the scene's.
	if st.P99SyncLatency < 2*time.Minute*100/119 || st.P99SyncLatency > 2*time.Minute+time.Millisecond {
		t.Errorf("P99SyncLatency = %v, want 2m within 19 %%", st.P99SyncLatency)
	}
	// The shape of the claims' check (one probe of the partitions row per
	// event of the pending indexes) agrees.
	var n int64
	q := "SELECT COUNT(*) FROM " + sc.b.store.t.Quoted + " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL" + sc.b.store.notMarked("c")
	if err := sc.b.db.QueryRowContext(t.Context(), q).Scan(&n); err != nil || n != st.Pending {
		t.Fatalf("the claims' check counts %d pending (%v), Stats %d", n, err, st.Pending)
	}
	st, err = sc.b.store.Stats(t.Context(), 0)
	if err != nil || st.Synced != 0 || st.Pending != 6 {
		t.Fatalf("Stats without a window = %+v, %v", st, err)
	}
}

// Get, Locate and List under watermarks: an event a mark delivered is
// synced as of the mark's time; List by status returns each kind where it
// belongs, in its order.
func TestMarkedGetAndList(t *testing.T) {
	eachMarkDialect(t, testMarkedGetAndList)
}

func testMarkedGetAndList(t *testing.T, d Dialect) {
	sc := newMarkSceneOn(t, d)
	b, ctx := sc.b, t.Context()
	for _, e := range sc.marked {
		got, err := b.store.Get(ctx, e.ID)
		if err != nil || got.Delivery.Status() != outbox.StatusSynced || !got.Delivery.SyncedAt.Equal(sc.markAt(t, e.AggregateID)) {
			t.Fatalf("Get(%s) = %+v, %v; want synced at its partition's mark, %v", e.ID, got, err, sc.markAt(t, e.AggregateID))
		}
		pe, err := b.store.Locate(ctx, e.ID)
		if err != nil || !pe.Delivery.SyncedAt.Equal(got.Delivery.SyncedAt) || pe.Partition != partitionOf(d, e.AggregateID) {
			t.Fatalf("Locate(%s) = %+v, %v", e.ID, pe, err)
		}
	}
	for _, c := range []struct {
		e    *outbox.Event
		want outbox.Status
	}{{sc.perRow, outbox.StatusSynced}, {sc.dead, outbox.StatusDead}, {sc.failed, outbox.StatusPending},
		{sc.late, outbox.StatusPending}, {sc.unseen, outbox.StatusPending}, {sc.after[0], outbox.StatusPending}} {
		if got, err := b.store.Get(ctx, c.e.ID); err != nil || got.Delivery.Status() != c.want {
			t.Fatalf("Get(%s of %s) = %+v, %v; want %s", c.e.ID, c.e.AggregateID, got, err, c.want)
		}
	}
	list := func(f ListFilter) []*outbox.Event {
		t.Helper()
		got, err := b.store.List(ctx, f)
		if err != nil {
			t.Fatalf("List(%+v): %v", f, err)
		}
		return got
	}
	equalIDs(t, "List pending", ids(list(ListFilter{Status: outbox.StatusPending})), sc.pendingOrder)
	equalIDs(t, "List pending, limit 2", ids(list(ListFilter{Status: outbox.StatusPending, Limit: 2})), sc.pendingOrder[:2])
	equalIDs(t, "List pending of a type", ids(list(ListFilter{Status: outbox.StatusPending, Type: "reservation.created"})), []string{sc.after[0].ID})
	equalIDs(t, "List synced", ids(list(ListFilter{Status: outbox.StatusSynced})), sc.syncedDesc)
	equalIDs(t, "List synced, limit 3", ids(list(ListFilter{Status: outbox.StatusSynced, Limit: 3})), sc.syncedDesc[:3])
	equalIDs(t, "List dead", ids(list(ListFilter{Status: outbox.StatusDead})), []string{sc.dead.ID})
	all := list(ListFilter{})
	count := map[outbox.Status]int{}
	for _, e := range all {
		count[e.Delivery.Status()]++
	}
	if len(all) != 20 || count[outbox.StatusPending] != 6 || count[outbox.StatusSynced] != 13 || count[outbox.StatusDead] != 1 {
		t.Fatalf("List of every status: %d events, by status %v; want 20: 6 pending, 13 synced, 1 dead", len(all), count)
	}
	if _, err := b.store.List(ctx, ListFilter{Status: "lost"}); err == nil {
		t.Error("List with an unknown status: no error")
	}
}

// The console's pages and counts under watermarks: pending and failed in
// claim order, synced by delivery time (a mark's for what it delivered),
// newest first, each page after the last one's cursor.
func TestMarkedPages(t *testing.T) {
	eachMarkDialect(t, testMarkedPages)
}

func testMarkedPages(t *testing.T, d Dialect) {
	sc := newMarkSceneOn(t, d)
	b, ctx := sc.b, t.Context()
	equalIDs(t, "pending pages", readAll(t, b, PageQuery{State: StatePending, Limit: 2}), sc.pendingOrder)
	equalIDs(t, "failed pages", readAll(t, b, PageQuery{State: StateFailed, Limit: 2}), []string{sc.failed.ID})
	equalIDs(t, "dead pages", readAll(t, b, PageQuery{State: StateDead, Limit: 2}), []string{sc.dead.ID})
	type synced struct {
		id  string
		at  time.Time
		seq int64
	}
	var want []synced
	for _, id := range sc.syncedDesc {
		pe, err := b.store.Locate(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, synced{id, pe.Delivery.SyncedAt, pe.Seq})
	}
	slices.SortFunc(want, func(x, y synced) int {
		return cmp.Or(y.at.Compare(x.at), cmp.Compare(y.seq, x.seq))
	})
	var wantIDs []string
	for _, w := range want {
		wantIDs = append(wantIDs, w.id)
	}
	for _, limit := range []int{1, 5, 50} {
		equalIDs(t, "synced pages", readAll(t, b, PageQuery{State: StateSynced, Limit: limit}), wantIDs)
	}
	equalIDs(t, "synced pages of aggregate M", readAll(t, b, PageQuery{State: StateSynced, Limit: 2, AggregateID: "M"}),
		[]string{sc.marked[9].ID, sc.marked[5].ID, sc.marked[1].ID})
	equalIDs(t, "synced pages from a creation time", readAll(t, b, PageQuery{State: StateSynced, Limit: 1, From: sc.t0.Add(5 * time.Millisecond)}),
		[]string{sc.perRow.ID})
	equalIDs(t, "pending pages of a type", readAll(t, b, PageQuery{State: StatePending, Type: "reservation.created"}), []string{sc.after[0].ID})
	for _, c := range []struct {
		pq   PageQuery
		want int64
	}{
		{PageQuery{State: StatePending}, 6}, {PageQuery{State: StateFailed}, 1}, {PageQuery{State: StateDead}, 1},
		{PageQuery{State: StateSynced}, 13}, {PageQuery{State: StateSynced, AggregateID: "F"}, 1},
		{PageQuery{State: StatePending, Type: "reservation.created"}, 1},
		{PageQuery{State: StateSynced, From: sc.t0.Add(5 * time.Millisecond)}, 1},
	} {
		if n, err := b.store.Count(ctx, c.pq); err != nil || n != c.want {
			t.Errorf("Count(%+v) = %d, %v; want %d", c.pq, n, err, c.want)
		}
	}
}

// The console's figures under watermarks: the pending ones as Stats's,
// per partition too, the synced per minute and their latency from the
// deliveries rows and the per-row deliveries.
func TestMarkedConsoleFigures(t *testing.T) {
	eachMarkDialect(t, testMarkedConsoleFigures)
}

func testMarkedConsoleFigures(t *testing.T, d Dialect) {
	sc := newMarkSceneOn(t, d)
	b, ctx := sc.b, t.Context()
	f, err := b.store.Pending(ctx)
	if err != nil || f.Estimated || f.Total != 6 || f.ByType["reservation.created"] != 1 || f.OldestAge != 2*time.Minute+10*time.Millisecond {
		t.Fatalf("Pending = %+v, %v; want 6 exact, the oldest 2m0.01s old", f, err)
	}
	parts, err := b.store.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pending int64
	for _, p := range parts {
		pending += p.Pending
		if d == Postgres && p.Partition == partitionOf(Postgres, "L") && (p.Pending != 1 || p.OldestPendingAge != f.OldestAge) {
			t.Errorf("the late event's partition: %+v, want 1 pending, %v old", p, f.OldestAge)
		}
	}
	if pending != 6 {
		t.Errorf("Partitions count %d pending, want 6", pending)
	}
	per, _, err := b.store.SyncedPerMinute(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, n := range per {
		sum += n
	}
	if sum != 13 {
		t.Errorf("SyncedPerMinute = %v, want 13 in all", per)
	}
	l, err := b.store.SyncLatency(ctx, time.Hour)
	within := func(got, want time.Duration) bool { return got >= want*100/119 && got <= want*119/100 }
	if err != nil || l.Events != 13 || !within(l.P50, 10*time.Millisecond) || !within(l.P99, 2*time.Minute) {
		t.Fatalf("SyncLatency = %+v, %v; want 13 events, p50 10ms and p99 2m within 19 %%", l, err)
	}
	if d == SQLite {
		return // it counts exactly, as Stats
	}
	// Past PendingExactLimit: the oldest of the first pending events of
	// each partition and of the transactions the marks saw in progress,
	// and an estimate shared among the types read.
	oldest, err := b.store.markedOldest(ctx, b.db)
	if err != nil || !oldest.Equal(sc.t0) {
		t.Errorf("markedOldest = %v, %v; want %v (the late transaction's event)", oldest, err, sc.t0)
	}
	est := PendingFigures{Total: 4, ByType: map[string]int64{"a": 3, "b": 1}}
	if err := b.store.markedEstimate(ctx, b.db, &est); err != nil || !est.Estimated || est.Total != est.ByType["a"]+est.ByType["b"] || est.ByType["a"] < est.ByType["b"] {
		t.Errorf("markedEstimate = %+v, %v", est, err)
	}
}

// Under watermarks Stats is one snapshot too: an event acknowledged and
// recorded by a mark (with its deliveries row) while Stats runs is
// counted once, as pending.
func TestMarkedStatsIsOneSnapshot(t *testing.T) {
	eachMarkDialect(t, testMarkedStatsIsOneSnapshot)
}

func testMarkedStatsIsOneSnapshot(t *testing.T, d Dialect) {
	b := markBundleOn(t, d)
	ctx := t.Context()
	b.save(t, b.newEvents(1)...)
	c := b.claim(t, 1)
	if len(c.Events) != 1 {
		t.Fatalf("claimed %d events", len(c.Events))
	}
	statsHooks.Store(b.store, func() {
		b.mark(t, c, c.Events...)
		b.beat(t)
	})
	st, err := b.store.Stats(ctx, time.Hour)
	statsHooks.Delete(b.store)
	if err != nil || st.Pending != 1 || st.Synced != 0 {
		t.Fatalf("Stats = %+v, %v; want the event counted once, as pending", st, err)
	}
	if st, err := b.store.Stats(ctx, time.Hour); err != nil || st.Pending != 0 || st.Synced != 1 {
		t.Fatalf("after: %+v, %v; want it synced", st, err)
	}
}
