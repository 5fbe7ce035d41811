package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// The tables of partition ownership (migration 006 on Postgres, 005 on
// MySQL and SQLite), named after the outbox table.
const (
	partitionsSuffix = "_partitions"
	relaysSuffix     = "_relays"
)

// Partition ownership: how a Store claims without leasing rows.
//
// Every event belongs to a partition, fixed by the database when the row
// is inserted (a hash of its aggregate ID). A Store that relays (a bulk
// Claim) joins the relays table and owns partitions through the
// partitions table: one row each, with its owner, a fencing token raised
// each time it changes hands and a lease on the database's clock. It
// takes free or expired partitions up to its fair share (the partition
// count over the live relays, rounded up) and gives back what it holds
// beyond it, so relays that join or leave rebalance at their next
// renewal. A claim then reads the due events of the owned partitions in
// save order and writes nothing: no other Store reads those partitions.
// Within the Store, claims that run at once are kept apart in memory (an
// aggregate with an event in flight is not claimed again), and their
// writes (mark, fail) change only rows whose partition is still owned
// under the token of the claim, checked in the same statement under a
// share lock of the partition's row, so a relay that lost a partition
// (paused past its lease) changes nothing.
//
// Order per aggregate follows from the single reader: a claim reads in
// (priority, save) order and takes an aggregate's events from its first
// undelivered one on; an aggregate whose first event backs off or is
// dead is held (in memory, rebuilt from the table when a partition is
// taken and at each renewal).
//
// Timing: a partition's lease lasts partitionTTL(lease) on the database's
// clock; a claim renews the Store's leases first when less than the
// claim's lease remains of them by the Store's own (monotonic, never
// the wall) clock, measured from before the renewal was sent. So every
// event a claim returns stays in a partition this Store owns for at
// least the claim's lease, as a row lease would.
type owner struct {
	s    *Store
	name string
	// clock is the monotonic clock of local lease ends and flights; tests
	// move it. Never the wall clock: leases must outlast a clock step.
	clock func() time.Time

	// renewMu serializes renewals; mu guards the rest.
	renewMu sync.Mutex
	mu      sync.Mutex
	parts   map[int]partLease // owned partitions
	count   int               // partitions in the table
	renewed bool              // a renewal has run
	lastTTL time.Duration     // of the last renewal
	share   int               // the fair share at the last renewal
	// eagerUntil: until then a Store short of its share reports
	// Rebalancing (see rebalancing).
	eagerUntil time.Time
	renewedAt  time.Time // local start of the last renewal
	left       bool      // Leave was called: no more partitions taken

	flights map[string]*flight // claim token -> what it holds
	busy    map[string]int     // aggregate -> events of it in flight
	// holds are aggregates whose first undelivered event backs off,
	// until it is due; dead are those whose first is dead (by partition),
	// held until it is re-queued.
	holds map[string]time.Time
	dead  map[int]map[string]bool
	// deadStale: events may have been re-queued; the next claim reads
	// dead again first.
	deadStale bool

	// cur is where the next bulk read may start (see readBulk), and
	// lastBulk the token of the last bulk claim.
	cur      readCursor
	curGen   uint64 // raised each time the cursor is made dirty
	lastBulk string

	// finishes counts the events whose claim ended (marked, failed,
	// released); finished holds when each ended, for as long as a read
	// that began before that is running (reads), so that a read never
	// takes an event that a claim running at the same time has already
	// finished.
	finishes uint64
	finished map[string]uint64
	reads    map[uint64]int
}

// readCursor lets a bulk read start past the events the Store has already
// taken: an index range from seq on, instead of a walk from the start of
// the pending events past the index entries of every event marked since
// the last vacuum. seq is 0 when there is none. Every pending event of
// the owned partitions at or below seq is in flight, marked, or held back
// in memory (an aggregate held, dead or busy, leaving out its later
// events too); whatever could release one of those (a failure, a
// release, an expired claim, a hold ending, a re-queue, a partition
// taken) marks the cursor dirty, and a full read starts a new one. So
// does time: a full read at least every cursorAge, for events that commit
// after a later seq was read (see Claim on commit order).
type readCursor struct {
	seq     int64
	prio    int       // every pending event had this priority
	ordered bool      // the claims it was made for
	at      time.Time // local time of the full read it started from
	dirty   bool
}

// cursorAge is how long a read cursor lasts before a full read.
const cursorAge = time.Second

// partLease is one owned partition: its token and, by the local
// monotonic clock, a time before which the lease surely holds.
type partLease struct {
	token int64
	until time.Time
}

// flight is what one owner claim holds.
type flight struct {
	tokens   map[int]int64  // partition -> token at the claim
	agg      map[string]int // event ID -> 1 + index into aggs (0: not in flight)
	aggs     []string
	part     map[string]int   // event ID -> partition
	seq      map[string]int64 // event ID -> seq, by which writes find the rows
	deadline time.Time        // local: the claim's lease
}

// partitionTTL is how long a renewal leases partitions for, given the
// lease of the claims: a quarter more, so that a Store renews at most
// every quarter of the lease while it claims, and a dead Store's
// partitions move after 1.25 leases.
func partitionTTL(lease time.Duration) time.Duration { return lease + lease/4 }

// maxSkip bounds the held aggregates a read passes to the database to
// leave out; beyond it they are left out in memory only.
const maxSkip = 2000

func newOwner(s *Store, name string) *owner {
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
	return &owner{
		s: s, name: name, clock: time.Now,
		parts:    map[int]partLease{},
		flights:  map[string]*flight{},
		busy:     map[string]int{},
		holds:    map[string]time.Time{},
		dead:     map[int]map[string]bool{},
		finished: map[string]uint64{},
		reads:    map[uint64]int{},
	}
}

// ErrNoPartitions is wrapped by Claim when the table has no partition
// table (the schema predates partition ownership): run Migrate, or use
// WithRowLeases.
var ErrNoPartitions = errors.New("sqlstore: the partitions table is missing or empty; run Migrate, or use WithRowLeases")

// claim is Store.Claim in owner mode. A bulk claim (no IDs) renews the
// Store's partitions when due and reads the events of those it owns. A
// claim by IDs takes those of the events in partitions the Store owns in
// memory, as a bulk claim does, and leases rows only for events whose
// partition no live relay owns (a process that publishes after commit but
// runs no relay): that lease reads the partition's row under a share
// lock, so a relay that takes the partition waits for it, and an owner
// passes over leased rows and holds their aggregates.
func (o *owner) claim(ctx context.Context, req storage.ClaimRequest, cr claimRun) (*outbox.Claim, error) {
	claim := &outbox.Claim{Token: cr.token}
	o.expire(o.clock())
	// A claim by IDs renews only a Store that relays already: a process
	// that publishes after commit but runs no relay takes no partitions.
	if req.IDs == nil || o.relaying() {
		if err := o.ensure(ctx, req.Lease, req.IDs == nil); err != nil {
			return nil, err
		}
	}
	if err := o.reloadDead(ctx); err != nil {
		return nil, err
	}
	owned := o.usable(req.Lease)
	start := o.beginRead()
	defer o.endRead(start)
	var rows, leased []eventRow
	var err error
	switch {
	case req.IDs != nil:
		var others []string
		rows, others, err = o.readIDs(ctx, cr, owned, req.Limit, dedupe(req.IDs))
		if err != nil {
			return nil, err
		}
		rows = o.take(rows, cr, start, owned, req.Lease)
		if len(others) > 0 && len(rows) < req.Limit {
			rcr := cr
			rcr.unowned = true
			if leased, err = o.s.d.claim(ctx, o.s, rcr, req.Limit-len(rows), others); err != nil {
				o.finish(cr.token, idsOf(rows))
				return nil, err
			}
		}
	case len(owned) > 0:
		var fromCursor bool
		var gen uint64
		if rows, fromCursor, gen, err = o.readBulk(ctx, cr, owned, req.Limit); err != nil {
			return nil, err
		}
		seqs, prios := make([]int64, len(rows)), make([]int, len(rows))
		for i, r := range rows {
			seqs[i], prios[i] = r.Seq, r.Priority
		}
		rows = o.take(rows, cr, start, owned, req.Lease)
		taken := make(map[int64]bool, len(rows))
		for _, r := range rows {
			taken[r.Seq] = true
		}
		o.advance(seqs, prios, taken, fromCursor, cr.ordered, gen)
		if len(rows) > 0 {
			o.mu.Lock()
			o.lastBulk = cr.token
			o.mu.Unlock()
		}
	}
	if len(leased) > 0 {
		if len(rows) > 0 {
			// One claim, two ways of holding its events: the leased rows
			// go back, to be claimed again under a token of their own.
			o.s.releaseRows(ctx, cr.token, leased)
		} else {
			rows = leased
		}
	}
	slices.SortFunc(rows, func(a, b eventRow) int { return cmpInt64(a.Seq, b.Seq) })
	events, err := o.s.decodeClaimed(ctx, cr, rows)
	if err != nil {
		return nil, err
	}
	claim.Events = events
	return claim, nil
}

// relaying reports whether the Store takes part in partition ownership:
// a bulk claim renewed its partitions and it has not left since.
func (o *owner) relaying() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.renewed && !o.left
}

// reloadDead reads the dead aggregates of the owned partitions again
// after a re-queue by this Store.
func (o *owner) reloadDead(ctx context.Context) error {
	o.mu.Lock()
	stale := o.deadStale
	parts := make(map[int]int64, len(o.parts))
	for p, l := range o.parts {
		parts[p] = l.token
	}
	o.mu.Unlock()
	if !stale {
		return nil
	}
	dead, err := o.deadAggregates(ctx, parts)
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.dead, o.deadStale = dead, false
	o.mu.Unlock()
	return nil
}

func idsOf(rows []eventRow) []string {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}

// usable returns the owned partitions whose lease holds for at least
// lease more, with their tokens.
func (o *owner) usable(lease time.Duration) map[int]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock()
	out := make(map[int]int64, len(o.parts))
	for p, l := range o.parts {
		if l.until.Sub(now) >= lease {
			out[p] = l.token
		}
	}
	return out
}

// ensure renews the Store's partitions when less than lease remains of
// any of them, and otherwise at most every renewEvery(lease) while it
// claims: often enough that relays that join or leave are seen within a
// fraction of a second under load, rarely enough to cost nothing (a
// renewal is one short transaction; an idle relay claims only at its
// interval).
//
// A claim by IDs (bulk false) renews only when a lease is running short,
// never on the cadence: the publication right after a commit does not
// wait for a renewal that the relay's next pass makes anyway.
func (o *owner) ensure(ctx context.Context, lease time.Duration, bulk bool) error {
	o.mu.Lock()
	if bulk {
		o.left = false
	}
	now := o.clock()
	due := !o.renewed || o.lastTTL != partitionTTL(lease) || (bulk && now.Sub(o.renewedAt) >= renewEvery(lease))
	for _, l := range o.parts {
		if l.until.Sub(now) < lease {
			due = true
		}
	}
	o.mu.Unlock()
	if !due {
		return nil
	}
	return o.renew(ctx, partitionTTL(lease))
}

// renewEvery is how often a claiming Store renews at most: a quarter of
// the lease, and at most every 250 ms.
func renewEvery(lease time.Duration) time.Duration { return min(lease/4, 250*time.Millisecond) }

// beginRead registers a read that starts now and returns its start.
func (o *owner) beginRead() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reads[o.finishes]++
	return o.finishes
}

// endRead unregisters a read and forgets finished events that no running
// read began before.
func (o *owner) endRead(start uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.reads[start]--; o.reads[start] == 0 {
		delete(o.reads, start)
	}
	oldest := o.finishes
	for r := range o.reads {
		oldest = min(oldest, r)
	}
	for id, at := range o.finished {
		if at <= oldest {
			delete(o.finished, id)
		}
	}
}

// take keeps, of the rows a read returned (in priority, then save order),
// those the claim may have, and registers them as in flight: rows of
// partitions still owned under the same token, not finished by another
// claim since the read began, and of an aggregate with nothing in flight
// or held, from its first undelivered event on. A row that is not due
// holds its aggregate until it is. An event never attempted is due
// whatever its next_attempt_at says: that is the saving Store's clock,
// and an owner whose clock is behind the saver's must not hold its
// partitions' new events back by the difference (see read).
func (o *owner) take(rows []eventRow, cr claimRun, start uint64, owned map[int]int64, lease time.Duration) []eventRow {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock()
	blocked := map[string]bool{}
	f := &flight{tokens: map[int]int64{}, agg: map[string]int{}, part: map[string]int{}, seq: map[string]int64{}, deadline: now.Add(lease)}
	kept := rows[:0]
	for _, r := range rows {
		p := int(r.Partition.Int64)
		agg := r.AggregateID
		tok, ok := owned[p]
		if l, still := o.parts[p]; !ok || !still || l.token != tok {
			continue
		}
		if at, done := o.finished[r.ID]; done && at > start {
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if _, dup := f.part[r.ID]; dup {
			continue
		}
		if o.inFlightLocked(r.ID) {
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if !cr.ordered {
			agg = ""
		}
		if agg != "" {
			if blocked[agg] || o.busy[agg] > 0 || (!cr.passDead && o.dead[p][agg]) {
				blocked[agg] = true
				continue
			}
			if until, held := o.holds[agg]; held {
				if until.After(cr.now) {
					blocked[agg] = true
					continue
				}
				delete(o.holds, agg)
			}
		}
		if r.Leased.Int64 == 1 {
			if agg != "" {
				blocked[agg] = true
			}
			continue
		}
		if r.Attempts > 0 && r.NextAttemptAt.After(cr.now) {
			if agg != "" {
				o.holds[agg] = r.NextAttemptAt.Time
				blocked[agg] = true
			}
			continue
		}
		f.tokens[p] = tok
		f.part[r.ID] = p
		f.seq[r.ID] = r.Seq
		f.aggs = append(f.aggs, r.AggregateID)
		f.agg[r.ID] = len(f.aggs)
		kept = append(kept, r)
	}
	if len(kept) == 0 {
		return kept
	}
	// Busy is counted after the loop: an aggregate's run of events in
	// this claim does not block itself.
	for _, agg := range f.aggs {
		if agg != "" {
			o.busy[agg]++
		}
	}
	o.flights[cr.token] = f
	return kept
}

// inFlightLocked reports whether an event is held by a claim; o.mu held.
func (o *owner) inFlightLocked(id string) bool {
	for _, f := range o.flights {
		if f.agg[id] > 0 {
			return true
		}
	}
	return false
}

// tokensOf returns the partition tokens under which token's flight
// claimed those of ids it holds, those ids and their seqs; ok is false if
// token is not a flight of this owner.
func (o *owner) tokensOf(token string, ids []string) (tokens map[int]int64, held []string, seqs []int64, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.flights[token]
	if !ok {
		return nil, nil, nil, false
	}
	tokens = map[int]int64{}
	for _, id := range ids {
		if f.agg[id] > 0 {
			tokens[f.part[id]] = f.tokens[f.part[id]]
			held = append(held, id)
			seqs = append(seqs, f.seq[id])
		}
	}
	return tokens, held, seqs, true
}

// finish ends the claim of the events of token's flight among ids.
func (o *owner) finish(token string, ids []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.flights[token]
	if !ok {
		return
	}
	if token != o.lastBulk || len(o.reads) > 0 {
		// The events of this claim held back the later events of their
		// aggregates from a read that began while it was in flight (one
		// running now, or the last bulk read when this claim is another
		// one), and those may be below the cursor.
		o.dirtyLocked()
	}
	for _, id := range ids {
		if f.agg[id] > 0 {
			o.doneLocked(f, id)
		}
	}
	if len(f.part) == 0 {
		delete(o.flights, token)
		return
	}
	// A partition the flight holds nothing of any more is not in flight:
	// a renewal or Leave may give it back.
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

// doneLocked removes one event from its flight; o.mu held.
func (o *owner) doneLocked(f *flight, id string) {
	i := f.agg[id]
	if agg := f.aggs[i-1]; agg != "" {
		if o.busy[agg]--; o.busy[agg] <= 0 {
			delete(o.busy, agg)
		}
	}
	delete(f.agg, id)
	delete(f.part, id)
	delete(f.seq, id)
	o.finishes++
	if len(o.reads) > 0 {
		o.finished[id] = o.finishes
	}
}

// expire ends the flights whose lease has passed: their events may be
// claimed again, as rows whose lease ended.
func (o *owner) expire(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for tok, f := range o.flights {
		if now.After(f.deadline) {
			for id := range f.part {
				o.doneLocked(f, id)
			}
			delete(o.flights, tok)
			o.dirtyLocked()
		}
	}
}

// fail records, in memory, what Fail wrote for an owner claim: a
// failure that backs off holds its aggregate until it is due, a dead
// one until it is re-queued (or passed, for a claim with SkipDead).
func (o *owner) fail(token string, failures []storage.Failure, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dirtyLocked()
	f, ok := o.flights[token]
	if !ok {
		return
	}
	for _, fl := range failures {
		i := f.agg[fl.ID]
		if i == 0 {
			continue
		}
		agg := f.aggs[i-1]
		if agg == "" {
			continue
		}
		if fl.Dead {
			p := f.part[fl.ID]
			if o.dead[p] == nil {
				o.dead[p] = map[string]bool{}
			}
			o.dead[p][agg] = true
		} else {
			o.holds[agg] = now.Add(max(fl.Delay, 0))
		}
	}
}

// skipList is what a read leaves out: the aggregates held, dead (unless
// passDead) or with an event in flight, and the seqs of the events in
// flight without an aggregate; unordered, only the events in flight. At
// most maxSkip of them in all.
func (o *owner) skipList(cr claimRun) (aggs []string, seqs []int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, f := range o.flights {
		for id, i := range f.agg {
			if !cr.ordered || f.aggs[i-1] == "" {
				seqs = append(seqs, f.seq[id])
			}
		}
	}
	if cr.ordered {
		for agg, until := range o.holds {
			if until.After(cr.now) {
				aggs = append(aggs, agg)
			} else {
				// Its events are due again, and may be below the cursor.
				delete(o.holds, agg)
				o.dirtyLocked()
			}
		}
		for agg := range o.busy {
			aggs = append(aggs, agg)
		}
		if !cr.passDead {
			for _, dead := range o.dead {
				for agg := range dead {
					aggs = append(aggs, agg)
				}
			}
		}
	}
	// Beyond maxSkip, the rest is left out in memory only (take): the
	// read may then bring back rows it cannot use.
	slices.Sort(aggs)
	aggs = slices.Compact(aggs)
	seqs = seqs[:min(len(seqs), maxSkip)]
	aggs = aggs[:min(len(aggs), maxSkip-len(seqs))]
	return aggs, seqs
}

// read selects up to limit undelivered, not dead events of the owned
// partitions in claim order (priority, then save order), writing
// nothing. Ordered, an event is left out when an earlier undelivered
// event of its aggregate has a lower priority (it would come later in
// this order): it waits for that one. Events never attempted are due
// (see take): their next_attempt_at is the time of the save on the
// saving Store's clock, not a delay. With every event at one priority,
// the common case, that check is the comparison with the lowest pending
// priority and no index is probed. Events without an aggregate that are
// not due or are leased are left out; those with one are read, so that
// they hold their aggregate (see take).
func (o *owner) read(ctx context.Context, cr claimRun, owned map[int]int64, limit int, skipAggs []string, skipSeqs []int64, cur *readCursor) ([]eventRow, error) {
	s := o.s
	now := s.sx.Time(cr.now)
	q := newQuery(s.sx)
	q.sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no, ", leasedCol(q, now), " AS leased FROM ", s.t.Quoted,
		" c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND ", partIn("c.partition_no", owned))
	if cr.ordered {
		q.sql(" AND (c.aggregate_id <> '' OR ((c.attempts = 0 OR c.next_attempt_at <= ", q.arg(now), ") AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")))")
	} else {
		q.sql(" AND (c.attempts = 0 OR c.next_attempt_at <= ", q.arg(now), ") AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")")
	}
	if len(skipAggs) > 0 {
		q.sql(" AND ", q.in("c.aggregate_id", skipAggs, true))
	}
	if len(skipSeqs) > 0 {
		q.sql(" AND NOT (", q.seqIn("c.seq", skipSeqs), ")")
	}
	switch {
	case cur != nil:
		// From the cursor on, at the one priority every pending event
		// had; an event of another priority makes it read nothing (two
		// index probes at the edges of that priority's range), and the
		// caller reads in full.
		p := q.arg(cur.prio)
		q.sql(" AND c.priority = ", p, " AND c.seq > ", q.arg(cur.seq),
			" AND NOT EXISTS (SELECT 1 FROM ", s.t.Quoted, " m WHERE m.synced_at IS NULL AND m.dead_at IS NULL AND m.priority > ", q.arg(cur.prio), ")",
			" AND NOT EXISTS (SELECT 1 FROM ", s.t.Quoted, " m WHERE m.synced_at IS NULL AND m.dead_at IS NULL AND m.priority < ", q.arg(cur.prio), ")")
	case cr.ordered:
		// The lowest pending priority, read from the end of the claim
		// index (priority DESC, seq) as one entry.
		q.sql(" AND (c.aggregate_id = '' OR c.priority = (SELECT m.priority FROM ", s.t.Quoted,
			" m WHERE m.synced_at IS NULL AND m.dead_at IS NULL ORDER BY m.priority, m.seq DESC LIMIT 1) OR NOT EXISTS (SELECT 1 ", s.undelivered("e", "c.aggregate_id", cr.passDead),
			" AND e.seq < c.seq AND e.priority < c.priority))")
	}
	claimOrder(q, limit)
	return claimRows(ctx, s.db, q)
}

// readBulk is the read of a bulk claim: from the read cursor when there
// is a clean one, else (and when that reads nothing) in full. It
// returns the rows, and whether they came from the cursor.
// The generation returned is the cursor's when the read began (see
// advance).
func (o *owner) readBulk(ctx context.Context, cr claimRun, owned map[int]int64, limit int) ([]eventRow, bool, uint64, error) {
	skipAggs, skipSeqs := o.skipList(cr)
	cur, ok, gen := o.cursorFor(cr)
	if ok {
		rows, err := o.read(ctx, cr, owned, limit, skipAggs, skipSeqs, &cur)
		if err != nil || len(rows) > 0 {
			return rows, true, gen, err
		}
	}
	rows, err := o.read(ctx, cr, owned, limit, skipAggs, skipSeqs, nil)
	return rows, false, gen, err
}

// cursorFor returns the read cursor, whether a read may start from it,
// and its generation.
func (o *owner) cursorFor(cr claimRun) (readCursor, bool, uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.cur
	ok := o.s.sx.readCursor && c.seq > 0 && !c.dirty && c.ordered == cr.ordered && o.clock().Sub(c.at) < cursorAge
	return c, ok, o.curGen
}

// advance moves the read cursor after a bulk read of rows (in the order
// read: priority, then seq) of which the claim took those in taken: over
// the events taken from the start of the read, up to the first it did
// not take. A full read starts a new cursor when all its rows have one
// priority (so that priority order is seq order), below its first row.
//
// Nothing moves when the cursor was made dirty since the read began
// (gen): what released events did so after the read's snapshot.
func (o *owner) advance(seqs []int64, prios []int, taken map[int64]bool, fromCursor bool, ordered bool, gen uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.curGen != gen {
		o.cur = readCursor{}
		return
	}
	c := o.cur
	if !fromCursor {
		c = readCursor{ordered: ordered, at: o.clock()}
		if len(seqs) == 0 {
			o.cur = readCursor{}
			return
		}
		for _, p := range prios {
			if p != prios[0] {
				o.cur = readCursor{}
				return
			}
		}
		c.prio, c.seq = prios[0], seqs[0]-1
	} else if c.dirty {
		return // made dirty while reading: a full read comes next
	}
	for _, seq := range seqs {
		if !taken[seq] {
			break
		}
		c.seq = seq
	}
	o.cur = c
}

// dirtyLocked makes the next bulk read a full one; o.mu held.
func (o *owner) dirtyLocked() {
	o.cur.dirty = true
	o.curGen++
}

// leasedCol is 1 for a row leased to a claim by IDs (see owner.claim),
// else 0.
func leasedCol(q *query, now any) string {
	return "CASE WHEN c.locked_until > " + q.arg(now) + " THEN 1 ELSE 0 END"
}

// readIDs selects the events of ids that a claim by IDs may take, with
// the general claim's conditions (see Store.candidates), writing nothing,
// and returns those of owned partitions (for take) and the IDs of the
// others.
func (o *owner) readIDs(ctx context.Context, cr claimRun, owned map[int]int64, limit int, ids []string) ([]eventRow, []string, error) {
	s := o.s
	var rows []eventRow
	var others []string
	for _, chunk := range chunks(ids, (s.sx.maxParams-16)/2) {
		q := newQuery(s.sx).sql("SELECT ", selectColumns(s.sx, "c."), ", c.partition_no")
		s.candidates(q, cr, chunk, "")
		claimOrder(q, limit)
		r, err := claimRows(ctx, s.db, q)
		if err != nil {
			return nil, nil, err
		}
		for _, row := range r {
			if _, ok := owned[int(row.Partition.Int64)]; ok {
				rows = append(rows, row)
			} else {
				others = append(others, row.ID)
			}
		}
	}
	return rows, others, nil
}

// unowned appends, to the conditions of a row-lease claim by IDs, that
// the row's partition has no live owner, read under a share lock (see
// owner.claim).
func (o *owner) unowned(q *query, col string) {
	d := o.s.d.(ownerDialect)
	q.sql(" AND ", col, " IN (SELECT p.partition_no FROM ", o.s.t.Sibling(partitionsSuffix), " p WHERE p.lease_until <= ", d.dbNow(), d.shareLock(), ")")
}

// partIn is the condition "col is one of the partitions", written out:
// partition numbers are small integers the Store read from its own table.
func partIn(col string, parts map[int]int64) string {
	ps := slices.Sorted(maps.Keys(parts))
	ns := make([]int64, len(ps))
	for i, p := range ps {
		ns[i] = int64(p)
	}
	return col + " IN (" + intList(ns) + ")"
}

// fence appends the condition that the row's partition is still owned by
// the Store under the tokens of a claim (tokens: partition -> token),
// read under a share lock of the partitions' rows, so that a renewal or
// a takeover of them waits for the write, or the write sees the new
// owner.
func (o *owner) fence(q *query, col string, tokens map[int]int64) {
	s := o.s
	q.sql(" AND ", col, " IN (SELECT p.partition_no FROM ", s.t.Sibling(partitionsSuffix), " p WHERE p.owner = ", q.arg(o.name), " AND (")
	for i, p := range slices.Sorted(maps.Keys(tokens)) {
		if i > 0 {
			q.sql(" OR ")
		}
		q.sql("(p.partition_no = ", strconv.Itoa(p), " AND p.token = ", q.arg(tokens[p]), ")")
	}
	q.sql(")", s.d.(ownerDialect).shareLock(), ")")
}

// ownerDialect is what partition ownership needs of a dialect.
type ownerDialect interface {
	// shareLock is the locking clause of the fence's read of the
	// partitions ("" where the database has one writer).
	shareLock() string
	// skipLocked is the locking clause of the read of free partitions.
	skipLocked() string
	// dbNow is the database's clock, as the type of the lease columns.
	dbNow() string
	// dbLater writes the database's clock plus d.
	dbLater(q *query, d time.Duration) string
	// upsert writes the statement that records a relay as seen until
	// until (an expression).
	upsert(q *query, table, name, until string)
	// txOptions are those of the renewal's transaction.
	txOptions() *sql.TxOptions
	// deadlock reports whether err is the database's report that it
	// rolled the transaction back to break a deadlock.
	deadlock(err error) bool
}

// deadlockRetries is how many times a fenced write or a renewal runs
// again after the database rolled it back to break a deadlock. Such
// deadlocks are expected on MySQL: a fenced write share-locks the rows
// of its partitions in the order of its events' rows, while a renewal
// locks those it owns in partition order, so a write and a renewal of
// the same Store can each wait for the other. The database rolls one
// back whole, so running it again is safe, and the other has gone on by
// then.
const deadlockRetries = 5

// retryDeadlock runs fn, and again while it fails with a deadlock (see
// deadlockRetries), after a short pause growing with each try.
func (o *owner) retryDeadlock(ctx context.Context, fn func() error) error {
	d := o.s.d.(ownerDialect)
	for try := 1; ; try++ {
		err := fn()
		if err == nil || try > deadlockRetries || !d.deadlock(err) {
			return err
		}
		t := time.NewTimer(time.Duration(try) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// renew runs one renewal, in one short transaction on the database's
// clock: the Store's relay is seen for ttl more; the partitions it owns
// are leased for ttl more; beyond its fair share (the partition count
// over the live relays, rounded up) it gives back those it has nothing in
// flight of, and below it takes free or expired ones (the fencing token
// raised). Then it reads the aggregates held by dead events in its
// partitions.
func (o *owner) renew(ctx context.Context, ttl time.Duration) error {
	o.renewMu.Lock()
	defer o.renewMu.Unlock()
	var r renewal
	err := o.retryDeadlock(ctx, func() error {
		var err error
		r, err = o.renewTx(ctx, ttl)
		return err
	})
	if err != nil {
		return o.tooOld(ctx, err)
	}
	dead, err := o.deadAggregates(ctx, r.mine)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	gained := len(r.mine) > len(o.parts)
	for p, l := range o.parts {
		if tok, ok := r.mine[p]; !ok || tok != l.token {
			o.dirtyLocked() // lost or taken anew
		}
	}
	if len(r.mine) != len(o.parts) {
		o.dirtyLocked() // taken: its events are below the cursor
	}
	o.parts = make(map[int]partLease, len(r.mine))
	for p, tok := range r.mine {
		o.parts[p] = partLease{token: tok, until: r.sent.Add(ttl)}
	}
	o.dead, o.deadStale = dead, false
	if !o.renewed || r.share != o.share || gained {
		// Relays joined or left, or partitions came our way: others may
		// be giving some back.
		o.eagerUntil = r.sent.Add(eagerWindow)
	}
	o.count, o.share, o.renewed, o.lastTTL, o.renewedAt = r.count, r.share, true, ttl, r.sent
	return nil
}

// renewal is what a committed renewal transaction found: the partitions
// owned with their tokens, the partition count, the fair share, and when
// (local clock) the transaction began.
type renewal struct {
	mine         map[int]int64
	count, share int
	sent         time.Time
}

// renewTx runs the transaction of a renewal (see renew); o.renewMu held.
func (o *owner) renewTx(ctx context.Context, ttl time.Duration) (renewal, error) {
	s := o.s
	d := s.d.(ownerDialect)
	parts, relays := s.t.Sibling(partitionsSuffix), s.t.Sibling(relaysSuffix)
	sent := o.clock()
	tx, err := s.db.BeginTxx(ctx, d.txOptions())
	if err != nil {
		return renewal{}, fmt.Errorf("sqlstore: renew partitions: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	exec := func(q *query) error {
		_, err := tx.ExecContext(ctx, q.String(), q.args...)
		return err
	}
	o.mu.Lock()
	left := o.left
	inFlight := map[int]bool{}
	for _, f := range o.flights {
		for p := range f.tokens {
			inFlight[p] = true
		}
	}
	o.mu.Unlock()

	q := newQuery(s.sx)
	d.upsert(q, relays, q.arg(o.name), d.dbLater(q, ttl))
	if err := exec(q); err != nil {
		return renewal{}, o.renewErr("register", err)
	}
	// Relays that died without leaving are forgotten once they have not
	// been seen for a day (until then `outbox status` can tell of them).
	q = newQuery(s.sx)
	q.sql("DELETE FROM ", relays, " WHERE seen_until < ", d.dbLater(q, -24*time.Hour))
	if err := exec(q); err != nil {
		return renewal{}, o.renewErr("forget dead relays", err)
	}
	var live, count int
	if err := tx.QueryRowxContext(ctx, "SELECT COUNT(*) FROM "+relays+" WHERE seen_until > "+d.dbNow()).Scan(&live); err != nil {
		return renewal{}, o.renewErr("count relays", err)
	}
	if err := tx.QueryRowxContext(ctx, "SELECT COUNT(*) FROM "+parts).Scan(&count); err != nil {
		return renewal{}, o.renewErr("count partitions", err)
	}
	if count == 0 {
		return renewal{}, ErrNoPartitions
	}
	q = newQuery(s.sx)
	q.sql("UPDATE ", parts, " SET lease_until = ", d.dbLater(q, ttl), " WHERE owner = ", q.arg(o.name))
	if err := exec(q); err != nil {
		return renewal{}, o.renewErr("renew", err)
	}
	mine, err := o.ownedIn(ctx, tx, parts)
	if err != nil {
		return renewal{}, err
	}
	share := (count + max(live, 1) - 1) / max(live, 1)
	if left {
		share = 0
	}
	if len(mine) > share {
		var give []int
		for _, p := range slices.Backward(slices.Sorted(maps.Keys(mine))) {
			if len(mine)-len(give) <= share {
				break
			}
			if !inFlight[p] {
				give = append(give, p)
			}
		}
		if len(give) > 0 {
			q = newQuery(s.sx)
			q.sql("UPDATE ", parts, " SET owner = NULL, lease_until = ", d.dbNow(), " WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", toSet(give)))
			if err := exec(q); err != nil {
				return renewal{}, o.renewErr("give back", err)
			}
			for _, p := range give {
				delete(mine, p)
			}
		}
	} else if len(mine) < share {
		q = newQuery(s.sx)
		q.sql("SELECT partition_no FROM ", parts, " WHERE lease_until <= ", d.dbNow(), " ORDER BY partition_no LIMIT ", q.arg(share-len(mine)), d.skipLocked())
		var free []int
		if err := tx.SelectContext(ctx, &free, q.String(), q.args...); err != nil {
			return renewal{}, o.renewErr("read free partitions", err)
		}
		if len(free) > 0 {
			q = newQuery(s.sx)
			q.sql("UPDATE ", parts, " SET owner = ", q.arg(o.name), ", token = token + 1, lease_until = ", d.dbLater(q, ttl), " WHERE ", partIn("partition_no", toSet(free)))
			if err := exec(q); err != nil {
				return renewal{}, o.renewErr("take", err)
			}
			if mine, err = o.ownedIn(ctx, tx, parts); err != nil {
				return renewal{}, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return renewal{}, o.renewErr("commit", err)
	}
	return renewal{mine: mine, count: count, share: share, sent: sent}, nil
}

// tooOld returns err, or, when the table's recorded schema predates the
// partitions migration (the package was upgraded, Migrate not run), an
// error wrapping ErrNoPartitions that says so: the statements of a
// renewal fail on such a table, and the driver's message alone does not
// tell why.
func (o *owner) tooOld(ctx context.Context, err error) error {
	if errors.Is(err, ErrNoPartitions) || ctx.Err() != nil {
		return err
	}
	ms, merr := ddl.Migrations(o.s.Dialect())
	if merr != nil {
		return err
	}
	need := 0
	for _, m := range ms {
		if strings.Contains(m.Name, "_partitions") {
			need = m.Version
		}
	}
	v, verr := o.s.Version(ctx)
	if verr != nil || need == 0 || v >= need {
		return err
	}
	return fmt.Errorf("%w: table %s is at schema version %d, partitions come with version %d (%v)", ErrNoPartitions, o.s.Table(), v, need, err)
}

func (o *owner) renewErr(step string, err error) error {
	return fmt.Errorf("sqlstore: renew partitions: %s: %w", step, err)
}

// ownedIn reads the partitions the Store owns, with their tokens.
func (o *owner) ownedIn(ctx context.Context, tx interface {
	QueryxContext(context.Context, string, ...any) (*sqlx.Rows, error)
}, parts string) (map[int]int64, error) {
	q := newQuery(o.s.sx)
	q.sql("SELECT partition_no, token FROM ", parts, " WHERE owner = ", q.arg(o.name))
	rows, err := tx.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, o.renewErr("read owned", err)
	}
	defer rows.Close()
	mine := map[int]int64{}
	for rows.Next() {
		var p int
		var tok int64
		if err := rows.Scan(&p, &tok); err != nil {
			return nil, o.renewErr("read owned", err)
		}
		mine[p] = tok
	}
	if err := rows.Err(); err != nil {
		return nil, o.renewErr("read owned", err)
	}
	return mine, nil
}

// deadAggregates reads, by partition, the aggregates of the partitions
// whose undelivered events include a dead one.
func (o *owner) deadAggregates(ctx context.Context, parts map[int]int64) (map[int]map[string]bool, error) {
	out := map[int]map[string]bool{}
	if len(parts) == 0 {
		return out, nil
	}
	s := o.s
	rows, err := s.db.QueryxContext(ctx, "SELECT DISTINCT partition_no, aggregate_id FROM "+s.t.Quoted+
		" WHERE synced_at IS NULL AND dead_at IS NOT NULL AND aggregate_id <> '' AND "+partIn("partition_no", parts))
	if err != nil {
		return nil, o.renewErr("read dead aggregates", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int
		var agg string
		if err := rows.Scan(&p, &agg); err != nil {
			return nil, o.renewErr("read dead aggregates", err)
		}
		if out[p] == nil {
			out[p] = map[string]bool{}
		}
		out[p][agg] = true
	}
	if err := rows.Err(); err != nil {
		return nil, o.renewErr("read dead aggregates", err)
	}
	return out, nil
}

// leave gives back at once the partitions the Store has nothing in
// flight of and ends its relay's membership, so other relays take them
// without waiting for their leases to end. A later bulk claim joins
// again.
func (o *owner) leave(ctx context.Context) error {
	o.renewMu.Lock()
	defer o.renewMu.Unlock()
	o.mu.Lock()
	o.left, o.renewed = true, false
	give := map[int]int64{}
	for p, l := range o.parts {
		give[p] = l.token
	}
	for _, f := range o.flights {
		for p := range f.tokens {
			delete(give, p)
		}
	}
	for p := range give {
		delete(o.parts, p)
	}
	o.mu.Unlock()
	s := o.s
	d := s.d.(ownerDialect)
	var errs []error
	if len(give) > 0 {
		q := newQuery(s.sx)
		q.sql("UPDATE ", s.t.Sibling(partitionsSuffix), " SET owner = NULL, lease_until = ", d.dbNow(), " WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", give))
		if err := o.retryDeadlock(ctx, func() error {
			_, err := s.db.ExecContext(ctx, q.String(), q.args...)
			return err
		}); err != nil {
			errs = append(errs, fmt.Errorf("sqlstore: give back partitions: %w", err))
		}
	}
	q := newQuery(s.sx)
	q.sql("DELETE FROM ", s.t.Sibling(relaysSuffix), " WHERE owner = ", q.arg(o.name))
	if _, err := s.db.ExecContext(ctx, q.String(), q.args...); err != nil {
		errs = append(errs, fmt.Errorf("sqlstore: leave: %w", err))
	}
	return errors.Join(errs...)
}

// owned returns the partitions the Store owns, sorted.
func (o *owner) owned() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.clock()
	var out []int
	for p, l := range o.parts {
		if l.until.After(now) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func toSet(ps []int) map[int]int64 {
	m := make(map[int]int64, len(ps))
	for _, p := range ps {
		m[p] = 0
	}
	return m
}

// deadChanged makes the next claim read the dead aggregates again.
func (o *owner) deadChanged() {
	o.mu.Lock()
	o.deadStale = true
	o.dirtyLocked()
	o.mu.Unlock()
}

// rebalancing reports whether the Store relays and owns fewer partitions
// than its fair share.
func (o *owner) rebalancing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.renewed && !o.left && len(o.parts) < o.share && o.clock().Before(o.eagerUntil)
}

// eagerWindow is how long after relays joined or left, or after it took
// partitions, a Store short of its fair share keeps its relay claiming
// every rebalance wait. With a partition count that does not divide
// evenly, one relay stays short of the rounded-up share for good, and must
// not poll the table ten times a second for ever.
const eagerWindow = 5 * time.Second

// released makes the next bulk read a full one: events given back may be
// below the cursor.
func (o *owner) released() {
	o.mu.Lock()
	o.dirtyLocked()
	o.mu.Unlock()
}
