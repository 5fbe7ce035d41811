package sqlstore

import (
	"maps"
	"slices"
	"time"
)

// The ledger's bookkeeping of claims: what is in flight, which
// aggregates are held, and which rows a claim may take. The rules of
// membership (what is owned, drained, given back) are in ledger.go.

// flight is what one claim holds.
type flight struct {
	tokens   map[int]int64  // partition -> token at the claim
	agg      map[string]int // event ID -> 1 + index into aggs (0: not in flight)
	aggs     []string
	part     map[string]int   // event ID -> partition
	seq      map[string]int64 // event ID -> seq, by which writes find the rows
	deadline time.Time        // local: the claim's lease
	// leased are the events of the same claim (by IDs) that it leased as
	// rows, in partitions no relay owned: their writes go by the lease.
	leased map[string]bool
	// xid holds the transaction IDs of the events delivered by the
	// partition's mark (watermarks), not per row.
	xid     map[string]int64
	created map[string]time.Time // of the same events: when saved
}

// beginRead registers a read that starts now and returns its start.
func (l *ledger) beginRead() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads[l.finishes]++
	return l.finishes
}

// endRead unregisters a read and forgets finished events that no running
// read began before.
func (l *ledger) endRead(start uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reads[start]--; l.reads[start] == 0 {
		delete(l.reads, start)
	}
	oldest := l.finishes
	for r := range l.reads {
		oldest = min(oldest, r)
	}
	for id, at := range l.finished {
		if at <= oldest {
			delete(l.finished, id)
		}
	}
	for agg, at := range l.parkedAt {
		if at <= oldest {
			delete(l.parkedAt, agg)
		}
	}
}

// takeReq is what take needs of the claim: its token, the claim's view
// of now (for backoff, the statements' clock) and whether it keeps
// order or passes dead events.
type takeReq struct {
	token    string
	now      time.Time // the statements' clock: next attempts compare with it
	ordered  bool
	passDead bool
	start    uint64        // beginRead's
	lease    time.Duration // the claim's lease
	margin   time.Duration // a partition's lease must hold this much more
	// marks, for a bulk read of a Store with watermarks, is what the read
	// started from by partition, and snap the read's snapshot: take moves
	// the fronts (see watermark.go).
	marks map[int]markRead
	snap  string
	// byIDs, for a claim by IDs of a Store with watermarks, is what its
	// read found of the aggregates' earlier events (watermark_ids.go).
	byIDs *idsCheck
	// skipped are the aggregates the read left out (skipList): the take
	// holds them for the whole read, even one whose flight ended since
	// the read began. A watermark read leaves out only their per-row
	// events and still reads their events after the fronts: taking one
	// of those would pass over a per-row event the read never saw.
	skipped map[string]bool
}

// The fates take gives a row with an xid that it does not hand to the
// claim, for the segment of the read (watermarks).
const (
	fateTaken    = iota // handed to the claim: open until it ends
	fateInFlight        // another claim holds it: open until that ends
	fatePark            // held, not due, leased: made per-row
	fateAhead           // delivered before: covered now
	fateIgnore          // not the read's to settle
)

// take keeps, of the rows a read returned (in priority, then save order),
// those the claim may have, and registers them as in flight: rows of
// partitions still claimable under the token the read was made for, not
// finished by another claim since the read began, and of an aggregate
// with nothing in flight or held, from its first undelivered event on. A
// row that is not due holds its aggregate until it is; so does one leased
// by a claim by IDs. An event never attempted is due whatever its
// next_attempt_at says: that is the saving Store's clock, and an owner
// whose clock is behind the saver's must not hold its partitions' new
// events back by the difference. mono is the local monotonic clock.
func (l *ledger) take(rows []eventRow, owned map[int]int64, r takeReq, mono time.Time) []eventRow {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked(rows, owned, r, mono)
}

// takeMarked is take for a watermark read: it first picks the rows the
// claim may take and where the fronts move (pickLocked), at most limit.
func (l *ledger) takeMarked(rows []eventRow, owned map[int]int64, r takeReq, mono time.Time, limit int) []eventRow {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked(l.pickLocked(rows, r, limit), owned, r, mono)
}

// takeLocked is take with l.mu held.
func (l *ledger) takeLocked(rows []eventRow, owned map[int]int64, r takeReq, mono time.Time) []eventRow {
	blocked := map[string]bool{}
	if r.ordered {
		maps.Copy(blocked, r.skipped)
	}
	f := &flight{tokens: map[int]int64{}, agg: map[string]int{}, part: map[string]int{}, seq: map[string]int64{}, xid: map[string]int64{}, deadline: mono.Add(r.lease)}
	fates := make([]int, len(rows))
	orig := slices.Clone(rows)
	kept := rows[:0]
	for i, row := range rows {
		fates[i] = fatePark
		p := int(row.Partition.Int64)
		agg := row.AggregateID
		tok, ok := owned[p]
		if !ok || !l.claimableLocked(p, tok, mono, r.margin) {
			fates[i] = fateIgnore
			continue
		}
		byMark := l.marks != nil && row.Xid.Valid
		if byMark {
			pm := l.marks[p]
			if pm == nil || pm.front.covers(row.Seq, row.Xid.Int64) {
				fates[i] = fateIgnore // a read took it already
				if agg != "" {
					blocked[agg] = true
				}
				continue
			}
			if _, ahead := pm.ahead[row.ID]; ahead {
				fates[i] = fateAhead
				continue
			}
		}
		if at, done := l.finished[row.ID]; done && at > r.start {
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if _, dup := f.part[row.ID]; dup {
			fates[i] = fateIgnore
			continue
		}
		if l.inFlightLocked(row.ID) {
			fates[i] = fateInFlight
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if !r.ordered {
			agg = ""
		}
		if agg != "" {
			if blocked[agg] || l.busy[agg] > 0 || (!r.passDead && l.dead[p][agg]) || l.parkHeldLocked(agg, r.start) || l.heldBackLocked(row, r) {
				blocked[agg] = true
				continue
			}
			if until, held := l.holds[agg]; held {
				if until.After(r.now) {
					blocked[agg] = true
					continue
				}
				delete(l.holds, agg)
			}
		}
		if row.Leased.Int64 == 1 {
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if row.Attempts > 0 && row.NextAttemptAt.After(r.now) {
			if agg != "" {
				l.holds[agg] = row.NextAttemptAt.Time
				blocked[agg] = true
			}
			continue
		}
		f.tokens[p] = tok
		f.part[row.ID] = p
		f.seq[row.ID] = row.Seq
		if byMark {
			f.xid[row.ID] = row.Xid.Int64
			if f.created == nil {
				f.created = map[string]time.Time{}
			}
			f.created[row.ID] = row.CreatedAt.Time
		}
		f.aggs = append(f.aggs, row.AggregateID)
		f.agg[row.ID] = len(f.aggs)
		fates[i] = fateTaken
		kept = append(kept, row)
	}
	if r.marks != nil {
		l.moveFrontsLocked(orig, fates, owned, r, mono)
	}
	if len(kept) == 0 {
		return kept
	}
	// Busy is counted after the loop: an aggregate's run of events in
	// this claim does not block itself.
	for _, agg := range f.aggs {
		if agg != "" {
			l.busy[agg]++
		}
	}
	l.flights[r.token] = f
	return kept
}

// inFlightLocked reports whether an event is held by a claim; l.mu held.
func (l *ledger) inFlightLocked(id string) bool {
	for _, f := range l.flights {
		if f.agg[id] > 0 {
			return true
		}
	}
	return false
}

// busyAggregates returns which of aggs have an event in flight here.
func (l *ledger) busyAggregates(aggs []string) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for _, a := range aggs {
		if a != "" && l.busy[a] > 0 {
			out[a] = true
		}
	}
	return out
}

// holding is what a claim holds of the events a write names: the
// partition tokens under which it claimed those it holds in memory, those
// events and their seqs, and those it leased as rows.
type holding struct {
	tokens map[int]int64
	ids    []string
	seqs   []int64 // of those of ids delivered per row
	leased []string
	// byMark are those of ids delivered by their partition's mark, by
	// partition.
	byMark map[int][]string
}

// heldBy returns what token's claim holds of ids; ok is false if token
// is no claim that took events in memory (a claim by IDs that only
// leased rows, or one that ended).
func (l *ledger) heldBy(token string, ids []string) (h holding, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.flights[token]
	if !ok {
		return h, false
	}
	h.tokens = map[int]int64{}
	for _, id := range ids {
		switch {
		case f.agg[id] > 0:
			h.tokens[f.part[id]] = f.tokens[f.part[id]]
			h.ids = append(h.ids, id)
			if _, byMark := f.xid[id]; byMark {
				if h.byMark == nil {
					h.byMark = map[int][]string{}
				}
				h.byMark[f.part[id]] = append(h.byMark[f.part[id]], id)
			} else {
				h.seqs = append(h.seqs, f.seq[id])
			}
		case f.leased[id]:
			h.leased = append(h.leased, id)
		}
	}
	return h, true
}

// addLeased records the rows a claim by IDs leased beside the events it
// took in memory (if it took none, it is no flight: its writes all go by
// the lease).
func (l *ledger) addLeased(token string, ids []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.flights[token]
	if !ok || len(ids) == 0 {
		return
	}
	if f.leased == nil {
		f.leased = map[string]bool{}
	}
	for _, id := range ids {
		f.leased[id] = true
	}
}

// How a claim of events ended, for the segments of watermarks.
const (
	endDelivered = iota // the broker acknowledged them
	endFailed           // their failure made them per-row
	endReleased         // given back: made per-row if a read covered them
)

// finish ends the claim of the events of token's flight among ids, which
// ended as how says.
func (l *ledger) finish(token string, ids []string, how int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.flights[token]
	if !ok {
		return
	}
	for _, id := range ids {
		if f.agg[id] > 0 {
			if xid, byMark := f.xid[id]; byMark {
				switch how {
				case endDelivered:
					l.deliveredLocked(f.part[id], id, f.seq[id], xid)
					l.deliveredLatencyLocked(f.created[id])
				default:
					l.resolveLocked(id, f.seq[id], f.aggs[f.agg[id]-1], how == endReleased)
				}
			}
			l.doneLocked(f, id)
		}
		delete(f.leased, id)
	}
	if len(f.part) == 0 && len(f.leased) == 0 {
		delete(l.flights, token)
		return
	}
	// A partition the flight holds nothing of any more is not in flight:
	// a heartbeat or Leave may give it back.
	left := make(map[int]bool, len(f.tokens))
	for _, p := range f.part {
		left[p] = true
	}
	for p := range f.tokens {
		if !left[p] {
			delete(f.tokens, p)
		}
	}
}

// doneLocked removes one event from its flight; l.mu held.
func (l *ledger) doneLocked(f *flight, id string) {
	i := f.agg[id]
	if agg := f.aggs[i-1]; agg != "" {
		if l.busy[agg]--; l.busy[agg] <= 0 {
			delete(l.busy, agg)
		}
	}
	delete(f.agg, id)
	delete(f.part, id)
	delete(f.seq, id)
	delete(f.xid, id)
	delete(f.created, id)
	l.finishes++
	if len(l.reads) > 0 {
		l.finished[id] = l.finishes
	}
}

// expire ends the flights whose lease has passed at mono: their events
// may be claimed again, as rows whose lease ended.
func (l *ledger) expire(mono time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for tok, f := range l.flights {
		if mono.After(f.deadline) {
			for id := range f.part {
				l.resolveLocked(id, f.seq[id], f.aggs[f.agg[id]-1], true)
				l.doneLocked(f, id)
			}
			delete(l.flights, tok)
		}
	}
}
