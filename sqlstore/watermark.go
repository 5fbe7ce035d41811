package sqlstore

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Watermarks: delivery recorded per partition, not per event
// (WithWatermarks). These are the ledger's rules for it, pure code,
// written in Postgres's terms; the statements are in watermarksql.go, and
// watermark_sqlite.go says how SQLite, whose events commit in seq order,
// fits them (a row's seq as its transaction ID, no late reads).
//
// Each event row keeps the ID of the transaction that saved it (xid). A
// partition's owner records a mark: every event of the partition with an
// xid, a seq at most mark.seq and a transaction that mark.snap sees as
// committed is delivered. An event whose xid is NULL (saved before the
// migration, failed, held behind another, released after a read covered
// it) is delivered per row, by synced_at, as without watermarks.
//
// In memory, per owned partition, the Store keeps its front: every event
// the front covers has been read by a claim. A bulk read (in one
// statement, under one snapshot S) reads the partition's events after
// the front (range), and those the front's snapshot did not see as
// committed (late: a transaction that took a lower seq and committed
// after a later one was read), and moves the front to (last seq read, S).
// Each such move is a segment: it may be recorded once every event it
// covers is resolved, that is delivered (the broker acknowledged it) or
// parked (made per-row, its xid set to NULL). The heartbeat records, in
// its transaction, the last segment of each partition whose predecessors
// and itself are resolved. A crash loses what was not recorded: its
// events are published again (duplicates, never a loss).
//
// An event delivered before any read covered it (a claim by IDs right
// after commit) is ahead: kept in memory, left out of reads, and
// forgotten once a recorded mark covers it. A partition given back (a
// handoff) writes its ahead events' synced_at first.

// snapshot is a Postgres txid_snapshot: transactions below xmin are
// committed or rolled back, those at xmax or above had not started, and
// those in xip were in progress.
type snapshot struct {
	xmin, xmax int64
	xip        []int64 // sorted
}

// parseSnapshot reads a txid_snapshot's text form, "xmin:xmax:xip,...".
func parseSnapshot(s string) (snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snapshot{}, fmt.Errorf("sqlstore: snapshot %q is not xmin:xmax:xip", s)
	}
	var sn snapshot
	var err error
	if sn.xmin, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("sqlstore: snapshot %q: %w", s, err)
	}
	if sn.xmax, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("sqlstore: snapshot %q: %w", s, err)
	}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return snapshot{}, fmt.Errorf("sqlstore: snapshot %q: %w", s, err)
			}
			sn.xip = append(sn.xip, v)
		}
		slices.Sort(sn.xip)
	}
	return sn, nil
}

// sees reports whether a transaction that committed is visible in sn:
// it ended before sn was taken.
func (sn snapshot) sees(xid int64) bool {
	if xid >= sn.xmax {
		return false
	}
	if xid < sn.xmin {
		return true
	}
	_, in := slices.BinarySearch(sn.xip, xid)
	return !in
}

// mark is a delivery record: the events of a partition with an xid, a
// seq at most seq and a transaction snap sees. The zero mark covers
// nothing.
type mark struct {
	seq  int64
	snap string // txid_snapshot text; "" for none
	sn   snapshot
}

// newMark returns the mark (seq, snap).
func newMark(seq int64, snap string) (mark, error) {
	if snap == "" {
		return mark{seq: seq}, nil
	}
	sn, err := parseSnapshot(snap)
	if err != nil {
		return mark{}, err
	}
	return mark{seq: seq, snap: snap, sn: sn}, nil
}

// covers reports whether m covers the event (seq, xid).
func (m mark) covers(seq, xid int64) bool {
	return m.snap != "" && seq <= m.seq && m.sn.sees(xid)
}

// partMark is what the ledger keeps of one owned partition's delivery.
type partMark struct {
	rec   mark // recorded in the partitions table
	front mark // read up to: every event it covers was read by a claim
	segs  []*segment
	ahead map[string]aheadEvent
}

// aheadEvent is an event delivered before a read covered it.
type aheadEvent struct{ seq, xid int64 }

// segment is a move of a partition's front by one read: to is the new
// front; open are the events it covers that are neither delivered nor
// parked yet; park the seqs to make per-row before it is recorded.
type segment struct {
	p    int
	to   mark
	open map[string]bool
	park []int64
}

func (g *segment) resolved() bool { return len(g.open) == 0 }

// markRead is what a watermark read tells take of one partition: the
// front the read started from, and the seq its front moves to, unless
// stay (see pickMarks).
type markRead struct {
	front mark
	to    int64
	stay  bool
	// cutoff, when not 0, is the highest seq of the read's seq-ordered
	// part, which was full: rows of higher seq may exist unread.
	cutoff int64
}

// record is what a heartbeat writes for one partition: the mark of its
// last resolved segment (n segments from the first), and the seqs to park
// first.
type record struct {
	to   mark
	n    int
	park []int64
}

// recordable returns, by partition, what a heartbeat may record now.
func (l *ledger) recordable() map[int]record {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]record{}
	for p, pm := range l.marks {
		var r record
		for i, g := range pm.segs {
			if !g.resolved() {
				break
			}
			r.to, r.n = g.to, i+1
			r.park = append(r.park, g.park...)
		}
		if r.n > 0 {
			out[p] = r
		}
	}
	return out
}

// recorded forgets the segments a committed heartbeat recorded (recs,
// taken by recordable before), and the ahead events the new marks cover.
func (l *ledger) recorded(recs map[int]record, tokens map[int]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, r := range recs {
		pm, ok := l.marks[p]
		if !ok || l.parts[p].token != tokens[p] || len(pm.segs) < r.n || pm.segs[r.n-1].to.seq != r.to.seq || pm.segs[r.n-1].to.snap != r.to.snap {
			continue
		}
		pm.segs = pm.segs[r.n:]
		pm.rec = r.to
		for id, a := range pm.ahead {
			if r.to.covers(a.seq, a.xid) {
				delete(pm.ahead, id)
			}
		}
	}
}

// handBack returns, for partitions about to be given back, whether each
// is settled: everything read of it is recorded by recs (nothing
// unresolved, no segment beyond), and the IDs of its ahead events that
// the recorded mark does not cover, to be written per row first. l.mu
// held.
func (l *ledger) settledLocked(p int, recs map[int]record) (ok bool, ahead []string) {
	pm, has := l.marks[p]
	if !has {
		return true, nil
	}
	if len(pm.segs) != recs[p].n {
		return false, nil
	}
	cover := pm.rec
	if recs[p].n > 0 {
		cover = recs[p].to
	}
	for _, id := range slices.Sorted(maps.Keys(pm.ahead)) {
		if a := pm.ahead[id]; !cover.covers(a.seq, a.xid) {
			ahead = append(ahead, id)
		}
	}
	return true, ahead
}

// adoptMarks keeps the delivery state of the partitions still owned
// under the same token, and starts that of the others from the marks the
// table holds (recs). l.mu held.
func (l *ledger) adoptMarksLocked(mine map[int]int64, recs map[int]mark) {
	if l.marks == nil {
		return
	}
	for p, pm := range l.marks {
		if tok, ok := mine[p]; !ok || l.parts[p].token != tok {
			for _, g := range pm.segs {
				for id := range g.open {
					delete(l.segOf, id)
				}
			}
			for seq, r := range l.parkPending {
				if r.p == p {
					l.unparkLocked(seq, false)
				}
			}
			delete(l.marks, p)
		}
	}
	for p := range mine {
		if _, ok := l.marks[p]; !ok {
			m := recs[p]
			l.marks[p] = &partMark{rec: m, front: m, ahead: map[string]aheadEvent{}}
		}
	}
}

// fronts returns the fronts of the partitions of owned, for a read.
func (l *ledger) fronts(owned map[int]int64) map[int]mark {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int]mark, len(owned))
	for p := range owned {
		if pm, ok := l.marks[p]; ok {
			out[p] = pm.front
		}
	}
	return out
}

// passing counts the events a read of the owned partitions may return
// that take passes over: those in flight and those delivered ahead.
func (l *ledger) passing(owned map[int]int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, f := range l.flights {
		n += len(f.part)
	}
	for p := range owned {
		if pm, ok := l.marks[p]; ok {
			n += len(pm.ahead)
		}
	}
	return n
}

// aheadSeqs returns the seqs of the ahead events of owned partitions,
// which reads leave out, at most max.
func (l *ledger) aheadSeqs(owned map[int]int64, limit int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	for p := range owned {
		if pm, ok := l.marks[p]; ok {
			for _, a := range pm.ahead {
				if len(out) == limit {
					return out
				}
				out = append(out, a.seq)
			}
		}
	}
	return out
}

// resolveLocked ends the open event id of its segment; with park set the
// event is to be made per-row before the segment is recorded. It
// reports whether id was in a segment. l.mu held.
func (l *ledger) resolveLocked(id string, seq int64, agg string, park bool) bool {
	g, ok := l.segOf[id]
	if !ok {
		return false
	}
	delete(l.segOf, id)
	delete(g.open, id)
	if park {
		l.parkLocked(g, seq, agg)
	}
	return true
}

// parkLocked adds an event its segment leaves undelivered to the
// segment's park list, which the heartbeat writes before it records the
// segment, and to toPark, which the claim or release at hand writes at
// once, so that it can be claimed again (per row) without waiting for a
// heartbeat. l.mu held.
//
// Until the park commits, and for reads that began before it did, the
// event's aggregate is held (parkHeldLocked): a read does not see the
// event (the front covers it, its xid is still set), and must not take a
// later event of its aggregate first.
func (l *ledger) parkLocked(g *segment, seq int64, agg string) {
	g.park = append(g.park, seq)
	if l.toPark == nil {
		l.toPark = map[int][]int64{}
	}
	l.toPark[g.p] = append(l.toPark[g.p], seq)
	if _, ok := l.parkPending[seq]; ok || agg == "" {
		return
	}
	l.parkPending[seq] = parkRow{p: g.p, agg: agg}
	l.parking[agg]++
}

// parkRow is an event to park, with its partition and aggregate.
type parkRow struct {
	p   int
	agg string
}

// parked records that a park of seqs committed: their aggregates are
// held on only for the reads that began before.
func (l *ledger) parked(seqs []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, seq := range seqs {
		l.unparkLocked(seq, true)
	}
}

// unparkLocked forgets a pending park of seq; committed, its aggregate
// stays held for the reads running now. l.mu held.
func (l *ledger) unparkLocked(seq int64, committed bool) {
	r, ok := l.parkPending[seq]
	if !ok {
		return
	}
	delete(l.parkPending, seq)
	if l.parking[r.agg]--; l.parking[r.agg] <= 0 {
		delete(l.parking, r.agg)
	}
	if committed {
		l.finishes++
		l.parkedAt[r.agg] = l.finishes
	}
}

// parkHeldLocked reports whether agg is held by a park: pending, or
// committed after a read that began at start. l.mu held.
func (l *ledger) parkHeldLocked(agg string, start uint64) bool {
	if agg == "" {
		return false
	}
	return l.parking[agg] > 0 || l.parkedAt[agg] > start
}

// takePark returns, and forgets, the events to make per-row at once, by
// partition, as records a park statement takes, with the tokens to fence
// it by.
func (l *ledger) takePark() (map[int]record, map[int]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.toPark) == 0 {
		return nil, nil
	}
	out := make(map[int]record, len(l.toPark))
	for p, seqs := range l.toPark {
		if _, owned := l.parts[p]; owned {
			out[p] = record{park: seqs}
		}
	}
	l.toPark = nil
	return out, l.tokensLocked()
}

// deliveredLocked records the broker's ack of an event with an xid: it
// resolves the event's segment, or, when no read covered it yet, keeps it
// ahead. l.mu held.
func (l *ledger) deliveredLocked(p int, id string, seq, xid int64) {
	if l.resolveLocked(id, seq, "", false) {
		return
	}
	pm, ok := l.marks[p]
	if !ok || pm.front.covers(seq, xid) {
		return
	}
	pm.ahead[id] = aheadEvent{seq: seq, xid: xid}
}
