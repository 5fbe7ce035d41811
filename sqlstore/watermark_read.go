package sqlstore

import (
	"slices"
	"time"
)

// How a bulk read of a Store with watermarks becomes a claim and moves
// the fronts (see watermark.go).

// pickLocked chooses, of the rows a watermark read returned (each with
// its branch), those the claim may take (see owner.readMarks), in
// (priority, seq) order, and where each partition's front moves (in
// r.marks). At most limit of them count: those take would not give the
// claim anyway (in flight, delivered ahead, finished since the read
// began, of an aggregate busy, held or dead) pass through for their
// fates without counting. A front moves over the prefix of its range
// rows that passed, and, when the range was exhausted and wholly passed,
// over its ahead events too; not at all when some of its late rows did
// not pass or there may have been more than the read's limit. l.mu held.
func (l *ledger) pickLocked(rows []eventRow, r takeReq, limit int) []eventRow {
	seen := map[string]bool{}
	cand := make([]eventRow, 0, len(rows))
	for pass := range 2 {
		for _, row := range rows {
			if (row.Branch.String == "p") == (pass == 1) && !seen[row.ID] {
				seen[row.ID] = true
				cand = append(cand, row)
			}
		}
	}
	slices.SortStableFunc(cand, func(a, b eventRow) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		return cmpInt64(a.Seq, b.Seq)
	})
	if r.ordered {
		// A run claimed together has one priority: leave out an event
		// whose earlier event of its aggregate among the candidates has
		// another.
		first := map[string]eventRow{}
		for _, row := range cand {
			if f, ok := first[row.AggregateID]; row.AggregateID != "" && (!ok || row.Seq < f.Seq) {
				first[row.AggregateID] = row
			}
		}
		out := cand[:0]
		for _, row := range cand {
			if f, ok := first[row.AggregateID]; row.AggregateID == "" || !ok || f.Priority == row.Priority {
				out = append(out, row)
			}
		}
		cand = out
	}
	var sn *snapshot
	if x, err := parseSnapshot(r.snap); err == nil {
		sn = &x
	}
	passed := make(map[string]bool, len(cand))
	out := cand[:0]
	counted := 0
	for _, row := range cand {
		if l.passesLocked(row, r) {
			passed[row.ID] = true
			out = append(out, row)
			continue
		}
		if counted == limit {
			continue
		}
		counted++
		passed[row.ID] = true
		out = append(out, row)
	}
	// Each partition's range and late rows, as indexes into rows: one
	// pass over the read, not one per partition.
	type partRows struct{ rng, late []int }
	byPart := make(map[int]*partRows, len(r.marks))
	for i := range rows {
		b := rows[i].Branch.String
		if b != "r" && b != "l" {
			continue
		}
		p := int(rows[i].Partition.Int64)
		pr := byPart[p]
		if pr == nil {
			pr = &partRows{}
			byPart[p] = pr
		}
		if b == "r" {
			pr.rng = append(pr.rng, i)
		} else {
			pr.late = append(pr.late, i)
		}
	}
	for p, mr := range r.marks {
		pr := byPart[p]
		if pr == nil {
			pr = &partRows{}
		}
		// Late rows above a full read's cutoff may be unread.
		stay := mr.cutoff != 0 && mr.front.seq > mr.cutoff
		for _, i := range pr.late {
			stay = stay || !passed[rows[i].ID]
		}
		if stay {
			mr.stay = true
			r.marks[p] = mr
			continue
		}
		slices.SortFunc(pr.rng, func(a, b int) int { return cmpInt64(rows[a].Seq, rows[b].Seq) })
		to, whole := mr.front.seq, true
		for _, i := range pr.rng {
			if !passed[rows[i].ID] {
				whole = false
				break
			}
			to = rows[i].Seq
		}
		if whole && mr.cutoff == 0 && sn != nil {
			// Over the events delivered ahead that the read would have
			// returned: those its snapshot sees committed. A front's seq
			// is always that of an event its snapshot sees, so that an
			// event at or below it that the snapshot does not see was in
			// progress then (watermarksql.go: the late read).
			if pm, ok := l.marks[p]; ok {
				for _, a := range pm.ahead {
					if sn.sees(a.xid) {
						to = max(to, a.seq)
					}
				}
			}
		}
		mr.to = to
		mr.stay = to == mr.front.seq && len(pr.late) == 0
		r.marks[p] = mr
	}
	return out
}

// passesLocked reports whether take surely leaves row out of the claim
// (see pickLocked). l.mu held.
func (l *ledger) passesLocked(row eventRow, r takeReq) bool {
	if at, done := l.finished[row.ID]; done && at > r.start {
		return true
	}
	if l.inFlightLocked(row.ID) {
		return true
	}
	p := int(row.Partition.Int64)
	if pm, ok := l.marks[p]; ok && row.Xid.Valid {
		if _, ahead := pm.ahead[row.ID]; ahead {
			return true
		}
	}
	agg := row.AggregateID
	if !r.ordered || agg == "" {
		return false
	}
	if r.skipped[agg] || l.parkHeldLocked(agg, r.start) {
		return true
	}
	if l.busy[agg] > 0 || (!r.passDead && l.dead[p][agg]) {
		return true
	}
	until, held := l.holds[agg]
	return held && until.After(r.now)
}

// moveFrontsLocked moves the fronts of the partitions a bulk read of a
// Store with watermarks covered, one segment each, from the rows it read
// (in read order) and the fate take gave each. A partition that is no
// longer claimable, whose late events filled the read, or of which the
// read returned nothing keeps its front. l.mu held.
func (l *ledger) moveFrontsLocked(rows []eventRow, fates []int, owned map[int]int64, r takeReq, mono time.Time) {
	if r.snap == "" {
		return
	}
	snap, err := newMark(0, r.snap)
	if err != nil {
		return // never moved on a snapshot it cannot read
	}
	segs := map[int]*segment{}
	for p, mr := range r.marks {
		pm, ok := l.marks[p]
		if !ok || mr.stay || pm.front.seq != mr.front.seq || pm.front.snap != mr.front.snap {
			continue
		}
		if tok, ok := owned[p]; !ok || !l.claimableLocked(p, tok, mono, r.margin) {
			continue
		}
		to := snap
		to.seq = mr.to
		segs[p] = &segment{p: p, to: to, open: map[string]bool{}}
	}
	for i, row := range rows {
		g := segs[int(row.Partition.Int64)]
		if g == nil || !row.Xid.Valid || row.Seq > g.to.seq {
			continue // beyond the front: read again, or ahead once delivered
		}
		switch fates[i] {
		case fateTaken, fateInFlight:
			if _, ok := l.segOf[row.ID]; !ok {
				g.open[row.ID] = true
				l.segOf[row.ID] = g
			}
		case fatePark:
			l.parkLocked(g, row.Seq, row.AggregateID)
		case fateAhead:
			delete(l.marks[g.p].ahead, row.ID)
		}
	}
	for p, g := range segs {
		pm := l.marks[p]
		pm.front = g.to
		pm.segs = append(pm.segs, g)
	}
}
