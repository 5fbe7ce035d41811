package sqlstore

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// The claim by IDs of a Store with watermarks (publication right after
// commit). Its order check runs against the front of the event's
// partition, not against the recorded mark: the mark is recorded once a
// heartbeat, so an aggregate written more often than that would find its
// previous event, delivered since, still pending in the database, and
// give every event to the relay (MODEL.md, finding 5).
//
// What the front covers was read by a claim of this Store: the ledger
// knows its fate (in flight: the aggregate is busy; to park: held;
// otherwise delivered). Of the aggregate's earlier events the front does
// not cover, the statement reads the few there can be: those after the
// front's seq, those of the transactions the front's snapshot saw in
// progress, and the pending events delivered per row. Each holds the
// event back unless, by the take, it was delivered by ID here (ahead) or
// a read has covered it since, or it could be claimed with the event, as
// in Store.candidates.

// blockersPerBranch bounds the earlier events each part of the statement
// returns for one event. A part that returns that many may have left
// some out: the event is left to the relay.
const blockersPerBranch = 64

// idsCheck is what the take of a claim by IDs (watermarks) checks its
// events' aggregates against: the earlier events the read found that the
// front did not cover, by aggregate, and the claim's IDs.
type idsCheck struct {
	blockers map[string][]eventRow
	overflow map[string]bool
	ids      map[string]bool
}

// readIDsMarked is readIDs for a Store with watermarks: the events of ids
// that a claim may take, those of the partitions with a front (for take,
// with the check of their aggregates) and the others, with the general
// claim's conditions (see Store.candidates).
func (o *owner) readIDsMarked(ctx context.Context, cr claimRun, owned map[int]int64, limit int, ids []string) (mine, others []eventRow, chk *idsCheck, err error) {
	s := o.s
	fronts := o.l.fronts(owned)
	chk = &idsCheck{blockers: map[string][]eventRow{}, overflow: map[string]bool{}, ids: make(map[string]bool, len(ids))}
	for _, id := range ids {
		chk.ids[id] = true
	}
	seen := map[string]bool{}
	for _, chunk := range chunks(ids, (s.sx.maxParams-32)/3) {
		q := o.idsMarkedQuery(cr, fronts, limit, chunk)
		r, err := claimRows(ctx, s.db, q)
		if err != nil {
			return nil, nil, nil, err
		}
		counts := map[string]int{}
		for _, row := range r {
			switch b := row.Branch.String; b {
			case "c":
				if _, ok := fronts[int(row.Partition.Int64)]; ok {
					mine = append(mine, row)
				} else {
					others = append(others, row)
				}
			default:
				key := row.AggregateID + "\x00" + b
				if counts[key]++; counts[key] >= blockersPerBranch {
					chk.overflow[row.AggregateID] = true
				}
				if !seen[row.ID] {
					seen[row.ID] = true
					chk.blockers[row.AggregateID] = append(chk.blockers[row.AggregateID], row)
				}
			}
		}
	}
	return mine, others, chk, nil
}

// idsMarkedQuery is the statement of readIDsMarked: the events of ids
// (branch c), and for each of them in a partition of fronts the earlier
// events of its aggregate that the front may not cover (branches r, l
// and w; the take sorts out those the front covers). The events are read
// once, by ID, into a CTE the branches share. Each branch is shaped so
// that one index serves it whatever the statistics say: the aggregate's
// events after its partition's front by (aggregate_id, seq); the late
// ones by equality on (partition_no, xid), for the transactions any
// front saw in progress; the per-row ones from the partition's index of
// them, fenced (OFFSET 0) from the aggregate, whose index would walk the
// aggregate's history. The fronts travel as one array indexed by
// partition, the IDs as one parameter when there is one: the statement
// is small enough to plan in microseconds, and its generic plan, which a
// driver's statement cache gets after five runs, costs what a custom
// one does, so it is kept (planning the earlier shape cost a millisecond
// per claim).
func (o *owner) idsMarkedQuery(cr claimRun, fronts map[int]mark, limit int, ids []string) *query {
	s := o.s
	if s.Dialect() == SQLite {
		return o.idsMarkedQuerySQLite(cr, fronts, limit, ids)
	}
	t := s.t.Quoted
	now := s.sx.Time(cr.now)
	cr.inMemory, cr.fenceIDs = fronts, true
	q := newQuery(s.sx)
	q.sql("WITH ids AS MATERIALIZED (SELECT * FROM ", t, " WHERE ")
	if len(ids) == 1 {
		q.sql("id = ", q.arg(ids[0]))
	} else {
		q.sql(q.in("id", ids, false))
	}
	q.sql(") (SELECT ", selectColumns(s.sx, "c."), ", c.partition_no, c.xid, ", leasedCol(q, now), " AS leased, 'c' AS branch")
	s.candidates(q, cr, ids, "")
	claimOrder(q, limit)
	q.sql(")")
	if len(fronts) == 0 || !cr.ordered {
		return q
	}
	top := slices.Max(slices.Collect(maps.Keys(fronts)))
	bounds := make([]string, top+1)
	var xips []int64
	for p := range bounds {
		bounds[p] = "NULL"
		if f, ok := fronts[p]; ok {
			bounds[p] = strconv.FormatInt(f.seq, 10)
			xips = append(xips, f.sn.xip...)
		}
	}
	slices.Sort(xips)
	xips = slices.Compact(xips)
	front := "(CAST(" + q.arg("{"+strings.Join(bounds, ",")+"}") + " AS BIGINT[]))[c.partition_no + 1]"
	k := q.arg(blockersPerBranch)
	branch := func(b, from, where string, order string) {
		q.sql(" UNION ALL (SELECT ", selectColumns(s.sx, "e."), ", e.partition_no, e.xid, CASE WHEN e.locked_until > ", q.arg(now),
			" THEN 1 ELSE 0 END AS leased, '", b, "' AS branch FROM ids c CROSS JOIN LATERAL (SELECT e.* FROM ", from, " WHERE ", where,
			" AND e.synced_at IS NULL", order, " LIMIT ", k, ") e WHERE c.aggregate_id <> '' AND ", front, " IS NOT NULL)")
	}
	branch("r", t+" e", "e.aggregate_id = c.aggregate_id AND e.seq > "+front+" AND e.seq < c.seq", " ORDER BY e.aggregate_id, e.seq")
	// Always written, with an empty list too: one statement text, one
	// plan in the driver's cache.
	branch("l", "unnest(CAST("+q.arg("{"+intList(xips)+"}")+" AS BIGINT[])) x(xid) CROSS JOIN LATERAL (SELECT e.* FROM "+t+
		" e WHERE e.partition_no = c.partition_no AND e.xid = x.xid OFFSET 0) e", "e.aggregate_id = c.aggregate_id AND e.seq < c.seq", "")
	branch("w", "(SELECT e.* FROM "+t+" e WHERE (e.partition_no, e.seq) > (c.partition_no, CAST(0 AS BIGINT)) AND (e.partition_no, e.seq) < (c.partition_no, c.seq)"+
		" AND e.xid IS NULL AND e.synced_at IS NULL AND e.dead_at IS NULL OFFSET 0) e", "e.aggregate_id = c.aggregate_id", "")
	return q
}

// heldBackLocked reports whether an earlier event of row's aggregate that
// the read by IDs found holds row back (see the top of this file). l.mu
// held.
func (l *ledger) heldBackLocked(row eventRow, r takeReq) bool {
	c := r.byIDs
	if c == nil || row.AggregateID == "" {
		return false
	}
	if c.overflow[row.AggregateID] {
		return true
	}
	pm := l.marks[int(row.Partition.Int64)]
	for _, b := range c.blockers[row.AggregateID] {
		if b.Seq >= row.Seq {
			continue
		}
		if pm != nil && b.Xid.Valid {
			if _, ahead := pm.ahead[b.ID]; ahead || pm.front.covers(b.Seq, b.Xid.Int64) {
				continue // delivered here, or read since: the take's other checks see it
			}
		}
		// As Store.candidates: b may go with row only if it is one of
		// the claim's, due, not leased, not dead (unless passed) and of
		// row's priority.
		with := c.ids[b.ID] && !b.NextAttemptAt.After(r.now) && b.Leased.Int64 == 0 && b.Priority == row.Priority
		dead := !b.DeadAt.IsZero()
		if r.passDead {
			if !dead && !with {
				return true
			}
		} else if dead || !with {
			return true
		}
	}
	return false
}
