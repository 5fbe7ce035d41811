package sqlstore

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// owner is partition ownership: how a Store claims without leasing rows.
//
// Every event belongs to a partition, fixed by the database when the row
// is inserted (a hash of its aggregate ID). A relay's Store proves itself
// alive with a heartbeat (membership.go) on the database's clock, every
// DefaultHeartbeat, and owns partitions through the partitions table:
// one row each, with its owner, a fencing token raised each time it
// changes hands and a lease that each heartbeat renews for
// DefaultMemberTTL. The heartbeat also rebalances: beyond its fair share
// (the partition count over the live relays, rounded up) a Store drains
// partitions, claiming nothing more from them, and gives each back once
// nothing of it is in flight; below it, it takes free ones. So a
// partition changes hands only after its owner stopped claiming from it
// and finished what it held (a handoff), or after its owner's lease ran
// out (it died, or paused longer than the lease).
//
// A claim reads the due events of the partitions it may claim from in
// save order and writes nothing: no other Store reads those partitions.
// Within the Store, claims that run at once are kept apart in memory (the
// ledger: an aggregate with an event in flight is not claimed again), and
// their writes (mark, fail) change only rows whose partition is still
// owned under the token of the claim, checked in the same statement
// under a share lock of the partition's row (fence), so a relay that
// lost a partition changes nothing.
//
// Order per aggregate follows from the single reader: a claim reads in
// (priority, save) order and takes an aggregate's events from its first
// undelivered one on; an aggregate whose first event backs off or is
// dead is held (in memory, read again from the table at each heartbeat).
//
// The rules are in ledger.go, pure code; this file and membership.go run
// the statements around them. The model of the protocol, with the same
// names, is relay.pml.
type owner struct {
	s    *Store
	rows rowLeases // claims by IDs in partitions no relay owns
	name string
	// clock is the monotonic clock of local lease ends and flights; tests
	// move it. Never the wall clock: leases must outlast a clock step.
	clock func() time.Time
	// every is the heartbeat's period, ttl how long a heartbeat holds.
	// A partition is claimed from only while its lease holds for every
	// more: a heartbeat is due by then.
	every, ttl time.Duration

	beatMu sync.Mutex // serializes heartbeats and Leave
	l      *ledger
	// guardedAt is when guardMarks last found no marks (local clock);
	// under beatMu.
	guardedAt time.Time

	// lastRead is how many rows the last watermark read returned: a few
	// (a relay keeping up) choose the read that visits the partitions in
	// a loop (marksLateral), a backlog the one that merges them.
	lastRead atomic.Int64
	shape    int // forces a shape of the watermark read (marksLateral); tests only
}

var _ claimer = (*owner)(nil)

func newOwner(s *Store, name string, every, ttl time.Duration, marks bool) *owner {
	if name == "" {
		host, _ := os.Hostname()
		if len(host) > 32 {
			host = host[:32]
		}
		// The random end of a new ID: its start is a timestamp, the same
		// for Stores made within the same minute.
		id := outbox.NewID()
		name = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), id[len(id)-12:])
	}
	l := newLedger()
	if marks {
		l.marks, l.segOf, l.now = map[int]*partMark{}, map[string]*segment{}, func() time.Time { return s.now() }
	}
	return &owner{s: s, rows: rowLeases{s}, name: name, clock: time.Now, every: every, ttl: ttl, l: l}
}

// claim is Store.Claim by partition ownership. A bulk claim joins the
// relays (a heartbeat first, when none ran recently enough that its
// partitions may still be claimed from: a Store whose relay runs has one
// beating in the background, and a claim by IDs of a Store that relays
// beats the same way) and reads the
// events of the partitions it may claim from. A claim by IDs takes, in
// memory as a bulk claim does, those of the events in partitions it may
// claim from; and leases rows for events whose partition no live relay
// owns (a process that publishes after commit but runs no relay, or a
// partition between owners): that lease reads the partition's row under
// a share lock, so a relay that takes the partition waits for it, and an
// owner passes over leased rows and holds their aggregates. Events of
// partitions another relay owns are left to it.
func (o *owner) claim(ctx context.Context, req storage.ClaimRequest, cr claimRun) (*outbox.Claim, error) {
	o.l.expire(o.clock())
	if err := o.parkNow(ctx); err != nil {
		return nil, err
	}
	if req.IDs == nil {
		o.l.join()
	}
	// A claim by IDs beats only for a Store that relays already: a
	// process that publishes after commit but runs no relay takes no
	// partitions.
	if req.IDs == nil || o.l.relaying() {
		if o.l.beatDue(o.clock(), o.beatBefore()) {
			if _, _, err := o.heartbeat(ctx); err != nil {
				return nil, err
			}
		}
	}
	if err := o.reloadDead(ctx); err != nil {
		return nil, err
	}
	owned := o.l.claimable(o.clock(), o.every)
	tr := takeReq{token: cr.token, now: cr.now, ordered: cr.ordered, passDead: cr.passDead, lease: req.Lease, margin: o.every}
	tr.start = o.l.beginRead()
	defer o.l.endRead(tr.start)
	var rows []eventRow
	var elsewhere []string
	switch {
	case req.IDs != nil:
		var mine, others []eventRow
		var err error
		if o.l.marks != nil {
			mine, others, tr.byIDs, err = o.readIDsMarked(ctx, cr, owned, req.Limit, dedupe(req.IDs))
		} else {
			mine, others, err = o.readIDs(ctx, cr, owned, req.Limit, dedupe(req.IDs))
		}
		if err != nil {
			return nil, err
		}
		rows = o.l.take(mine, owned, tr, o.clock())
		leased, tried, err := o.leaseUnowned(ctx, cr, req.Limit-len(rows), others)
		if err != nil {
			o.l.finish(cr.token, idsOf(rows), endReleased)
			return nil, err
		}
		o.l.addLeased(cr.token, idsOf(leased))
		rows = append(rows, leased...)
		elsewhere = without(tried, idsOf(leased))
	case len(owned) > 0 && o.l.marks != nil:
		skipAggs, skipSeqs := o.l.skipList(cr.ordered, cr.passDead, cr.now)
		read, marks, snap, err := o.readMarks(ctx, cr, owned, req.Limit, skipAggs, skipSeqs)
		if err != nil {
			return nil, err
		}
		tr.marks, tr.snap, tr.skipped = marks, snap, setOf(skipAggs)
		rows = o.l.takeMarked(read, owned, tr, o.clock(), req.Limit)
	case len(owned) > 0:
		skipAggs, skipSeqs := o.l.skipList(cr.ordered, cr.passDead, cr.now)
		read, err := o.read(ctx, cr, owned, req.Limit, skipAggs, skipSeqs)
		if err != nil {
			return nil, err
		}
		tr.skipped = setOf(skipAggs)
		rows = o.l.take(read, owned, tr, o.clock())
	}
	if err := o.parkNow(ctx); err != nil {
		o.l.finish(cr.token, idsOf(rows), endReleased)
		return nil, err
	}
	slices.SortFunc(rows, func(a, b eventRow) int { return cmpInt64(a.Seq, b.Seq) })
	events, err := o.s.decodeClaimed(ctx, cr, rows)
	if err != nil {
		return nil, err
	}
	return &outbox.Claim{Token: cr.token, Events: events, Elsewhere: elsewhere}, nil
}

// beatBefore is how long after a heartbeat a claim sends one of its own:
// half a period before its partitions stop being claimable (their lease
// holds for less than every), so that the claim's own statements, which
// run between this check and the take's, never find them lapsed. Checked
// at the boundary itself, a claim on a busy machine read nothing.
func (o *owner) beatBefore() time.Duration { return o.ttl - o.every - o.every/2 }

// leaseUnowned leases, under the claim's token, up to limit of the rows a
// claim by IDs read in partitions this Store may not claim from, where
// no live relay owns the partition. Events of an aggregate with an event
// in flight here are left alone: that one's mark comes first. It returns
// the rows leased and the IDs it tried: those of the tried that it did
// not lease are in partitions another relay owns.
//
// A Store that relays (its heartbeat runs, and it is not leaving) leases
// no row: it leaves all of them to the relays, its own among them, which
// take a partition without an owner within a heartbeat. A row lease
// holds its aggregate until it is marked or runs out, and a relay killed
// between its lease and its mark held the aggregate for the whole lease
// (twice the outbox's timeout: a minute by default). A process that runs
// no relay has no heartbeat to be taken over by, so it leases.
func (o *owner) leaseUnowned(ctx context.Context, cr claimRun, limit int, others []eventRow) (leased []eventRow, tried []string, err error) {
	if limit <= 0 || len(others) == 0 {
		return nil, nil, nil
	}
	if o.l.relaying() {
		return nil, idsOf(others), nil
	}
	aggs := make([]string, len(others))
	for i, r := range others {
		aggs[i] = r.AggregateID
	}
	busy := o.l.busyAggregates(aggs)
	for _, r := range others {
		if !cr.ordered || !busy[r.AggregateID] {
			tried = append(tried, r.ID)
		}
	}
	if len(tried) == 0 {
		return nil, nil, nil
	}
	rcr := cr
	rcr.unowned = o.unowned
	leased, err = o.rows.leaseRows(ctx, rcr, limit, tried)
	return leased, tried, err
}

// without returns ids less those in drop.
func without(ids, drop []string) []string {
	gone := make(map[string]bool, len(drop))
	for _, id := range drop {
		gone[id] = true
	}
	var out []string
	for _, id := range ids {
		if !gone[id] {
			out = append(out, id)
		}
	}
	return out
}

// setOf returns the set of ss.
func setOf(ss []string) map[string]bool {
	out := make(map[string]bool, len(ss))
	for _, x := range ss {
		out[x] = true
	}
	return out
}

func idsOf(rows []eventRow) []string {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

// reloadDead reads the dead aggregates of the owned partitions again
// after a re-queue by this Store.
func (o *owner) reloadDead(ctx context.Context) error {
	parts := o.l.staleDead()
	if parts == nil {
		return nil
	}
	dead, err := o.deadAggregates(ctx, parts)
	if err != nil {
		return err
	}
	o.l.setDead(dead)
	return nil
}

// markSynced marks the events the claim holds in memory by seq, fenced
// by the partition tokens of the claim, and those it leased as rows by
// their lease.
func (o *owner) markSynced(ctx context.Context, token string, ids []string) (int, error) {
	s := o.s
	h, ok := o.l.heldBy(token, ids)
	if !ok {
		return o.rows.markSynced(ctx, token, ids)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("sqlstore: mark synced: %w", err)
	}
	now := s.sx.Time(s.now())
	// Delivered by the partitions' marks: no write, unless the lease of
	// their partition lapsed meanwhile (another relay may have them now).
	lapsed := o.l.lapsed(h.byMark, h.tokens, o.clock())
	o.l.finish(token, lapsed, endReleased)
	total := len(h.ids) - len(h.seqs) - len(lapsed)
	for _, chunk := range chunks(h.seqs, s.sx.maxParams-2-2*len(h.tokens)) {
		q := newQuery(s.sx)
		q.sql("UPDATE ", s.t.Quoted, " SET synced_at = ", q.arg(now), s.perRow(), " WHERE ", q.seqIn("seq", chunk), " AND synced_at IS NULL")
		o.fence(q, "partition_no", h.tokens)
		n, err := o.fencedExec(ctx, q)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlstore: mark synced: %w", err)
		}
	}
	o.l.finish(token, h.ids, endDelivered)
	if len(h.leased) > 0 {
		n, err := o.rows.markSynced(ctx, token, h.leased)
		o.l.finish(token, h.leased, endDelivered)
		return total + n, err
	}
	return total, nil
}

// release ends in memory the claim of the events it holds (nothing was
// written to their rows), and the leases of those it leased.
func (o *owner) release(ctx context.Context, token string, ids []string) (int, error) {
	h, ok := o.l.heldBy(token, ids)
	if !ok {
		return o.rows.release(ctx, token, ids)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("sqlstore: release: %w", err)
	}
	o.l.finish(token, h.ids, endReleased)
	if err := o.parkNow(ctx); err != nil {
		return len(h.ids), fmt.Errorf("sqlstore: release: %w", err)
	}
	if len(h.leased) > 0 {
		n, err := o.rows.release(ctx, token, h.leased)
		o.l.finish(token, h.leased, endReleased)
		return len(h.ids) + n, err
	}
	return len(h.ids), nil
}

// fail records failures of events the claim holds in memory, fenced by
// its partition tokens, and holds their aggregates in the ledger; those
// of the events it leased as rows by their lease.
func (o *owner) fail(ctx context.Context, token string, failures []storage.Failure) (int, error) {
	s := o.s
	h, ok := o.l.heldBy(token, failureIDs(failures))
	if !ok {
		return o.rows.fail(ctx, token, failures)
	}
	mine, leased := failuresOf(failures, h.ids), failuresOf(failures, h.leased)
	now := s.now()
	total := 0
	for _, chunk := range chunks(mine, (s.sx.maxParams-4-2*len(h.tokens))/6) {
		q := s.failSet(chunk, now)
		q.sql(s.perRow())
		q.sql(" WHERE ", q.in("id", failureIDs(chunk), false), " AND synced_at IS NULL")
		o.fence(q, "partition_no", h.tokens)
		n, err := o.fencedExec(ctx, q)
		total += n
		if err != nil {
			return total, fmt.Errorf("sqlstore: fail: %w", err)
		}
	}
	o.l.failed(token, mine, now)
	o.l.finish(token, failureIDs(mine), endFailed)
	o.l.finish(token, h.ids, endReleased) // named but not failed
	if len(leased) > 0 {
		n, err := o.rows.fail(ctx, token, leased)
		o.l.finish(token, h.leased, endFailed)
		return total + n, err
	}
	return total, nil
}

// failuresOf returns the failures of the events in ids.
func failuresOf(failures []storage.Failure, ids []string) []storage.Failure {
	in := make(map[string]bool, len(ids))
	for _, id := range ids {
		in[id] = true
	}
	var out []storage.Failure
	for _, f := range failures {
		if in[f.ID] {
			out = append(out, f)
		}
	}
	return out
}

func (o *owner) rebalancing() bool { return o.l.rebalancing(o.clock()) }
func (o *owner) owned() []int      { return o.l.owned(o.clock()) }
func (o *owner) requeued()         { o.l.deadChanged() }
