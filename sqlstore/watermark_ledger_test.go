package sqlstore

import (
	"database/sql"
	"slices"
	"testing"
)

// The rules of watermarks, without a database (see ledger_test.go).

// markRow is row with the saving transaction xid, as a branch of a
// watermark read returns it.
func markRow(seq int64, agg string, xid int64, branch string) eventRow {
	r := row(seq, 0, agg)
	if xid != 0 {
		r.Xid = sql.NullInt64{Int64: xid, Valid: true}
	}
	r.Branch = sql.NullString{String: branch, Valid: true}
	return r
}

// marking returns a ledger with watermarks that owns partition 0 from
// the mark m.
func marking(m mark) *ledger {
	l := newLedger()
	l.marks, l.segOf = map[int]*partMark{}, map[string]*segment{}
	l.adopt(map[int]int64{0: 1}, map[int]mark{0: m}, nil, 1, 1, t0, tTTL)
	return l
}

// readMarked takes rows as the claim token of a read from the current
// front with snapshot snap, and returns the IDs taken.
func readMarked(l *ledger, token, snap string, rows ...eventRow) []string {
	start := l.beginRead()
	defer l.endRead(start)
	r := req(token)
	r.start, r.snap = start, snap
	r.marks = map[int]markRead{0: {front: l.fronts(map[int]int64{0: 1})[0]}}
	return ids2(l.takeMarked(rows, map[int]int64{0: 1}, r, t0, 10))
}

func ids2(rows []eventRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}

// The model's finding 4: an event left behind a front (here leased by a
// claim by IDs elsewhere) is parked, and until its park commits, and for
// the reads that began before, it holds its aggregate: a later event of
// the aggregate is not taken ahead of it.
func TestParkHoldsItsAggregate(t *testing.T) {
	l := marking(mark{})
	a1 := markRow(1, "A", 100, "r")
	a1.Leased = sql.NullInt64{Int64: 1, Valid: true}
	if got := readMarked(l, "c1", "90:200:", a1); len(got) != 0 {
		t.Fatalf("took %v, want nothing: A1 is leased elsewhere", got)
	}
	recs, _ := l.takePark()
	if !slices.Equal(recs[0].park, []int64{1}) {
		t.Fatalf("to park %v, want [1]", recs)
	}
	if got := readMarked(l, "c2", "90:200:", markRow(2, "A", 101, "r"), markRow(3, "B", 102, "r")); !slices.Equal(got, []string{"e3"}) {
		t.Fatalf("took %v while A1's park is pending, want only B's e3", got)
	}
	// A read that began before the park committed still holds A.
	start := l.beginRead()
	l.parked([]int64{1, 2})
	r := req("c3")
	r.start, r.snap = start, "90:200:"
	r.marks = map[int]markRead{0: {front: l.fronts(map[int]int64{0: 1})[0]}}
	if got := ids2(l.takeMarked([]eventRow{markRow(4, "A", 103, "r")}, map[int]int64{0: 1}, r, t0, 10)); len(got) != 0 {
		t.Fatalf("a read begun before the park committed took %v", got)
	}
	l.endRead(start)
	l.parked([]int64{4}) // that read left A4 behind its front: parked too
	// Parked, A1 is per-row now; a read after takes it first.
	if got := readMarked(l, "c4", "90:200:", markRow(1, "A", 0, "w"), markRow(2, "A", 0, "w"), markRow(4, "A", 0, "w")); !slices.Equal(got, []string{"e1", "e2", "e4"}) {
		t.Fatalf("took %v after the park, want A's events in order", got)
	}
}

// A claim by IDs never takes an event the front covers: a read took it,
// and its segment says what became of it (the model's finding 1).
func TestClaimByIDsSkipsCoveredEvents(t *testing.T) {
	l := marking(mark{})
	if got := readMarked(l, "c1", "90:200:", markRow(1, "A", 100, "r")); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("took %v", got)
	}
	l.finish("c1", []string{"e1"}, endDelivered)
	r := req("c2")
	r.start = l.beginRead()
	defer l.endRead(r.start)
	if got := l.take([]eventRow{markRow(1, "A", 100, "")}, map[int]int64{0: 1}, r, t0); len(got) != 0 {
		t.Fatalf("a claim by IDs took %v, which a read delivered", ids2(got))
	}
}

// A late event (its transaction was in progress in the front's snapshot)
// keeps the front where it is until a read returns it, and is then
// covered by the new front with the read's snapshot.
func TestLateEventMovesTheSnapshot(t *testing.T) {
	l := marking(mark{})
	readMarked(l, "c1", "100:105:100", markRow(2, "B", 101, "r"))
	front := l.fronts(map[int]int64{0: 1})[0]
	if front.seq != 2 || front.covers(1, 100) {
		t.Fatalf("front %+v: want seq 2, not covering xid 100", front)
	}
	if got := readMarked(l, "c2", "106:106:", markRow(1, "A", 100, "l")); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("took %v, want the late e1", got)
	}
	if front := l.fronts(map[int]int64{0: 1})[0]; !front.covers(1, 100) || front.seq != 2 {
		t.Fatalf("front %+v does not cover the late event", front)
	}
}

// A front moves over the events delivered ahead only when the read's
// snapshot sees them committed: its seq must be that of an event its
// snapshot sees, or an event that took a lower seq after the snapshot
// (not in progress in it, so not found by the late read) would be passed
// over.
func TestFrontMovesOverAheadOnlyWhenItsSnapshotSeesThem(t *testing.T) {
	l := marking(mark{})
	l.mu.Lock()
	l.deliveredLocked(0, "e5", 5, 120) // committed after the snapshot below
	l.deliveredLocked(0, "e3", 3, 95)  // committed before it
	l.mu.Unlock()
	// Snapshot 100:110:: xid 95 committed before it, 120 not yet begun.
	readMarked(l, "c1", "100:110:", markRow(2, "B", 90, "r"))
	front := l.fronts(map[int]int64{0: 1})[0]
	if front.seq != 3 {
		t.Fatalf("front seq %d, want 3: over e3 (seen) and not over e5 (committed after the snapshot)", front.seq)
	}
	// e4 took its seq after the snapshot (xid 115), below e5's: the next
	// read finds it in the range after the front.
	if got := readMarked(l, "c2", "130:130:", markRow(4, "C", 115, "r")); !slices.Equal(got, []string{"e4"}) {
		t.Fatalf("took %v, want e4", got)
	}
}

// A watermark read leaves out the per-row events of the aggregates its
// skip list names (held, busy, dead) but still reads their events after
// the front. An aggregate busy when the read began and free by its take
// must stay held for that take: its per-row event, which the read never
// saw, comes first. (Four claimers on one Store delivered A5 before A1
// when the take let it through.)
func TestSkippedAggregateStaysHeldForTheRead(t *testing.T) {
	l := marking(mark{})
	start := l.beginRead()
	r := req("c1")
	r.start, r.snap = start, "90:200:"
	r.marks = map[int]markRead{0: {front: l.fronts(map[int]int64{0: 1})[0]}}
	r.skipped = map[string]bool{"A": true} // busy when the read began; its flight ended since
	got := ids2(l.takeMarked([]eventRow{markRow(5, "A", 105, "r"), markRow(6, "B", 106, "r")}, map[int]int64{0: 1}, r, t0, 10))
	l.endRead(start)
	if !slices.Equal(got, []string{"e6"}) {
		t.Fatalf("took %v, want only B's e6: A was left out of the read's per-row events", got)
	}
	recs, _ := l.takePark()
	if !slices.Equal(recs[0].park, []int64{5}) {
		t.Fatalf("to park %v, want [5]: A5 was left behind the front", recs)
	}
	l.parked(parkSeqs(recs))
	if got := readMarked(l, "c2", "90:200:", markRow(1, "A", 0, "w"), markRow(5, "A", 0, "w")); !slices.Equal(got, []string{"e1", "e5"}) {
		t.Fatalf("the next read took %v, want A's e1 then e5", got)
	}
}

// widenSnapshot lists the IDs from xmax up to the next one to be
// assigned as in progress: the same visibility, a complete list.
func TestWidenSnapshot(t *testing.T) {
	for _, c := range []struct {
		raw  string
		next int64
		want string
	}{
		{"100:103:101", 106, "100:106:101,103,104,105"},
		{"100:100:", 101, "100:101:100"},
		{"100:103:101", 103, "100:103:101"},
		{"100:103:101", 90, "100:103:101"},
	} {
		got, err := widenSnapshot(c.raw, c.next)
		if err != nil || got != c.want {
			t.Errorf("widenSnapshot(%q, %d) = %q, %v; want %q", c.raw, c.next, got, err, c.want)
		}
		before, _ := parseSnapshot(c.raw)
		after, _ := parseSnapshot(got)
		for x := int64(95); x < 110; x++ {
			if before.sees(x) != after.sees(x) {
				t.Errorf("widenSnapshot(%q, %d): sees(%d) changed", c.raw, c.next, x)
			}
		}
	}
	if _, err := widenSnapshot("100:100:", 100+maxWiden+1); err == nil {
		t.Error("no error for a snapshot far below the next ID")
	}
}
