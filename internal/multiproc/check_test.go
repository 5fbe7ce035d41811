package multiproc

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/eventsync/outbox/redisstream"
)

// result compares the stream with the table.
type result struct {
	Written, Committed, Failed, Uncertain int // writes asked for, by outcome
	InTable, Delivered                    int // rows; stream entries
	Lost                                  int // rows never delivered
	Duplicates                            int // extra copies in the stream
	Unexplained                           int // extra copies of events no dead relay had in flight
	OrderViolations                       int // first copies of an aggregate out of save order
	Phantoms                              int // stream entries of no row
	Missing                               int // writes answered ok and not in the table
	Pending                               int // rows not marked synced
	Examples                              []string
}

func (r result) String() string {
	return fmt.Sprintf("written %d (ok %d, failed %d, uncertain %d); rows %d, stream entries %d; lost %d, duplicates %d (%d unexplained), order violations %d, phantoms %d, acked-but-missing %d, pending %d",
		r.Written, r.Committed, r.Failed, r.Uncertain, r.InTable, r.Delivered, r.Lost, r.Duplicates, r.Unexplained,
		r.OrderViolations, r.Phantoms, r.Missing, r.Pending)
}

func (r *result) example(format string, args ...any) {
	if len(r.Examples) < 10 {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// compare reads the table and the stream and checks one against the
// other: each row delivered, each entry a row, each aggregate's first
// copies in save order; extra copies are explained only by mayRepeat
// (the events dead relays had in flight).
func (f *fixture) compare(mayRepeat map[string]bool) result {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r result
	rows := map[string]bool{} // id -> pending
	q, err := f.db.QueryContext(ctx, "SELECT id, CASE WHEN synced_at IS NULL THEN 1 ELSE 0 END FROM "+f.cfg.Table)
	mustNoErr(t, err, "read the table")
	for q.Next() {
		var id string
		var pending int
		mustNoErr(t, q.Scan(&id, &pending), "scan")
		rows[id] = pending == 1
		if pending == 1 {
			r.Pending++
		}
	}
	mustNoErr(t, q.Err(), "read the table")
	q.Close()
	r.InTable = len(rows)

	f.events.mu.Lock()
	ledger := make(map[string]written, len(f.events.byID))
	for id, w := range f.events.byID {
		ledger[id] = w
	}
	f.events.mu.Unlock()
	r.Written = len(ledger)
	r.Committed, r.Failed, r.Uncertain = f.events.counts()
	for id, w := range ledger {
		if w.outcome == committed && !rows[id] {
			if _, ok := rows[id]; !ok {
				r.Missing++
				r.example("event %s (%s #%d) was answered committed and is not in the table", id, w.agg, w.seq)
			}
		}
	}

	msgs, err := f.redis.XRange(ctx, f.cfg.Stream, "-", "+").Result()
	mustNoErr(t, err, "XRANGE %s", f.cfg.Stream)
	r.Delivered = len(msgs)
	seen := map[string]bool{}
	last := map[string]int{} // aggregate -> seq of its last first copy
	for _, m := range msgs {
		id, _ := m.Values[redisstream.FieldID].(string)
		if _, ok := rows[id]; !ok {
			r.Phantoms++
			r.example("stream entry %s is event %s, which is not in the table", m.ID, id)
			continue
		}
		if seen[id] {
			r.Duplicates++
			if !mayRepeat[id] {
				r.Unexplained++
				r.example("event %s (%s #%d) arrived again at %s, and no dead relay had it in flight", id, ledger[id].agg, ledger[id].seq, m.ID)
			}
			continue
		}
		seen[id] = true
		w, ok := ledger[id]
		if !ok {
			continue
		}
		if prev, ok := last[w.agg]; ok && w.seq < prev {
			r.OrderViolations++
			r.example("%s #%d (event %s) arrived at %s after #%d", w.agg, w.seq, id, m.ID, prev)
			continue
		}
		last[w.agg] = w.seq
	}
	var lost []string
	for id := range rows {
		if !seen[id] {
			lost = append(lost, id)
		}
	}
	r.Lost = len(lost)
	slices.Sort(lost)
	for _, id := range lost {
		r.example("event %s (%s #%d) never arrived", id, ledger[id].agg, ledger[id].seq)
	}
	return r
}

// pending counts the rows not marked synced.
func (f *fixture) pending(ctx context.Context) (int, error) {
	var n int
	err := f.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+f.cfg.Table+" WHERE synced_at IS NULL").Scan(&n)
	return n, err
}

// stuck describes, for a failure message, the first pending events (by
// seq) with what holds them (attempts, next attempt, lease, dead) and the
// lease of their partition on the database's clock.
func (f *fixture) stuck(ctx context.Context) []string {
	rows, err := f.db.QueryContext(ctx, "SELECT e.aggregate_id, e.seq, e.partition_no, e.attempts, COALESCE(e.last_error, ''), "+
		"CASE WHEN e.next_attempt_at > "+f.d.now+" THEN 1 ELSE 0 END, CASE WHEN e.locked_until > "+f.d.now+" THEN 1 ELSE 0 END, "+
		"CASE WHEN e.dead_at IS NULL THEN 0 ELSE 1 END, COALESCE(p.owner, ''), CASE WHEN p.lease_until > "+f.d.now+" THEN 1 ELSE 0 END FROM "+
		f.cfg.Table+" e LEFT JOIN "+f.cfg.Table+"_partitions p ON p.partition_no = e.partition_no WHERE e.synced_at IS NULL ORDER BY e.seq LIMIT 5")
	if err != nil {
		return []string{"read the pending events: " + err.Error()}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var agg, lastErr, owner string
		var seq int64
		var part, attempts, notDue, leased, dead, ownerLive int
		if err := rows.Scan(&agg, &seq, &part, &attempts, &lastErr, &notDue, &leased, &dead, &owner, &ownerLive); err != nil {
			return append(out, "scan: "+err.Error())
		}
		out = append(out, fmt.Sprintf("pending %s seq %d partition %d (owner %q, lease live %v): attempts %d, not due %v, leased %v, dead %v, last error %q",
			agg, seq, part, owner, ownerLive == 1, attempts, notDue == 1, leased == 1, dead == 1, lastErr))
	}
	return out
}

// ownership is the partitions table read at one moment.
type ownership struct {
	total   int
	byOwner map[string]int // live leases by owner
	free    int            // no owner, or a lease that has run out
}

// partitions reads who owns each partition with a lease current on the
// database's clock.
func (f *fixture) partitions(ctx context.Context) (ownership, error) {
	o := ownership{byOwner: map[string]int{}}
	rows, err := f.db.QueryContext(ctx, "SELECT COALESCE(owner, ''), CASE WHEN lease_until > "+f.d.now+
		" THEN 1 ELSE 0 END FROM "+f.cfg.Table+"_partitions")
	if err != nil {
		return o, err
	}
	defer rows.Close()
	for rows.Next() {
		var owner string
		var live int
		if err := rows.Scan(&owner, &live); err != nil {
			return o, err
		}
		o.total++
		if owner == "" || live == 0 {
			o.free++
		} else {
			o.byOwner[owner]++
		}
	}
	return o, rows.Err()
}

// ownedBy reports whether every partition has a live lease held by one of
// names.
func (o ownership) ownedBy(names []string) bool {
	if o.total == 0 || o.free > 0 {
		return false
	}
	for owner := range o.byOwner {
		if !slices.Contains(names, owner) {
			return false
		}
	}
	return true
}
