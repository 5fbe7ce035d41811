package sqlstore

import (
	"slices"
	"sync"
	"time"
)

// ledger is what a relay of partition ownership knows in memory, and the
// rules it follows, as plain code over plain data: which partitions it
// owns and may claim from, what is in flight, which aggregates are held.
// No I/O happens here: the owner runs the statements and feeds their
// results in (heartbeat's decide and adopt, take after a read), so the
// rules are unit-tested without a database (ledger_test.go), and they
// carry the names of the protocol's model (relay.pml).
//
// One mutex guards all of it. That is what makes a rebalance a handoff:
// decide picks the partitions to give back under the same lock that take
// claims under, so once a partition is chosen no claim takes from it, and
// it is given back only when nothing of it is in flight.
type ledger struct {
	mu sync.Mutex

	parts    map[int]partLease // owned partitions (draining ones too)
	draining map[int]bool      // owned, to be given back: never claimed from
	count    int               // partitions in the table
	share    int               // the fair share at the last heartbeat
	renewed  bool              // a heartbeat has run since the Store joined
	left     bool              // Leave was called: nothing taken or claimed
	// beatAt is the local start of the last heartbeat that committed.
	beatAt time.Time
	// eagerUntil: until then a Store short of its share reports
	// Rebalancing (see rebalancing).
	eagerUntil time.Time

	flights map[string]*flight // claim token -> what it holds
	busy    map[string]int     // aggregate -> events of it in flight
	// holds are aggregates whose first undelivered event backs off, until
	// it is due; dead are those whose first is dead (by partition), held
	// until it is re-queued.
	holds map[string]time.Time
	dead  map[int]map[string]bool
	// deadStale: events may have been re-queued; the next claim reads
	// dead again first.
	deadStale bool

	// finishes counts the events whose claim ended (marked, failed,
	// released); finished holds when each ended, for as long as a read
	// that began before that is running (reads), so that a read never
	// takes an event that a claim running at the same time has already
	// finished.
	finishes uint64
	finished map[string]uint64
	reads    map[uint64]int

	// marks is the delivery state of each owned partition, for a Store
	// with watermarks (nil without); segOf the segment of each event a
	// read covered that is not resolved yet (watermark.go).
	marks map[int]*partMark
	segOf map[string]*segment
	// toPark are the events, by partition, that a claim, release or
	// expiry left undelivered behind a front, for the caller to make
	// per-row at once (see parkLocked).
	toPark map[int][]int64
	// parkPending are the events to park whose park has not committed,
	// parking their aggregates' counts, parkedAt when a park of an
	// aggregate's event committed (as finishes counts), for as long as a
	// read that began before runs (see parkLocked).
	parkPending map[int64]parkRow
	parking     map[string]int
	parkedAt    map[string]uint64
	// deliv sums up what was delivered by marks since the last
	// heartbeat; now is the Store's clock its latencies are measured by.
	deliv deliveries
	now   func() time.Time
}

// partLease is one owned partition: its token and, by the local
// monotonic clock, a time before which the lease surely holds.
type partLease struct {
	token int64
	until time.Time
}

func newLedger() *ledger {
	return &ledger{
		parts:       map[int]partLease{},
		draining:    map[int]bool{},
		flights:     map[string]*flight{},
		busy:        map[string]int{},
		holds:       map[string]time.Time{},
		dead:        map[int]map[string]bool{},
		finished:    map[string]uint64{},
		parkPending: map[int64]parkRow{},
		parking:     map[string]int{},
		parkedAt:    map[string]uint64{},
		reads:       map[uint64]int{},
	}
}

// claimableLocked reports whether a claim may take events of partition p
// under token tok at now: the Store owns it under that token, it is not
// draining, and its lease holds for margin more; l.mu held.
func (l *ledger) claimableLocked(p int, tok int64, now time.Time, margin time.Duration) bool {
	pl, ok := l.parts[p]
	return ok && !l.left && !l.draining[p] && pl.token == tok && pl.until.Sub(now) >= margin
}

// claimable returns the partitions a claim may read now, with their
// tokens (see claimableLocked).
func (l *ledger) claimable(now time.Time, margin time.Duration) map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int]int64, len(l.parts))
	for p, pl := range l.parts {
		if l.claimableLocked(p, pl.token, now, margin) {
			out[p] = pl.token
		}
	}
	return out
}

// inFlightPartsLocked returns the partitions some flight holds events of;
// l.mu held.
func (l *ledger) inFlightPartsLocked() map[int]bool {
	out := map[int]bool{}
	for _, f := range l.flights {
		for p := range f.tokens {
			out[p] = true
		}
	}
	return out
}

// decide is the heartbeat's rebalance, made under the lock take claims
// under. mine is what the Store owns in the table (renewed), share its
// fair share. Beyond the share it drains partitions, those with nothing
// in flight first, from the highest number down: a draining partition is
// never claimed from again. It returns the draining partitions that have
// nothing in flight: the heartbeat gives those back in the same
// transaction. A partition drained at an earlier heartbeat that is within
// the share again (relays left) is claimable again.
//
// With watermarks, a partition is busy too until everything read of it is
// recorded by recs (what this heartbeat records), and ahead lists the
// events of the partitions given back that were delivered ahead of any
// read and that their recorded marks do not cover: the heartbeat writes
// those per row before it gives them back.
func (l *ledger) decide(mine map[int]int64, share int, recs map[int]record) (give []int, ahead []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.left {
		share = 0
	}
	busy := l.busyPartsLocked(recs)
	for p, tok := range mine {
		if pl, ok := l.parts[p]; ok && pl.token != tok {
			// Taken again under a token the ledger did not learn (a
			// heartbeat whose reply was lost): what it holds of the
			// partition is of the old token, and its writes are fenced
			// out. Adopted first (from its recorded mark), given back at
			// a later heartbeat.
			busy[p] = true
		}
	}
	for p := range l.draining {
		if _, ok := mine[p]; !ok {
			delete(l.draining, p)
		}
	}
	excess := len(mine) - share
	if excess <= 0 {
		clear(l.draining)
		return nil, nil
	}
	// Already draining first (keep the decision), then idle ones, then
	// busy ones; higher numbers first within each.
	ps := slices.Sorted(func(yield func(int) bool) {
		for p := range mine {
			if !yield(p) {
				return
			}
		}
	})
	rank := func(p int) int {
		switch {
		case l.draining[p]:
			return 0
		case !busy[p]:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(ps, func(a, b int) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return b - a
	})
	drain := map[int]bool{}
	for _, p := range ps[:excess] {
		drain[p] = true
		if !busy[p] {
			give = append(give, p)
		}
	}
	l.draining = drain
	return give, l.aheadOfLocked(give, recs)
}

// busyPartsLocked returns the partitions that may not be given back now:
// some flight holds events of them, or (watermarks) something read of
// them is not recorded by recs. l.mu held.
func (l *ledger) busyPartsLocked(recs map[int]record) map[int]bool {
	busy := l.inFlightPartsLocked()
	for p := range l.marks {
		if ok, _ := l.settledLocked(p, recs); !ok {
			busy[p] = true
		}
	}
	return busy
}

// aheadOfLocked returns the ahead events of the partitions give that
// their marks (as recs records them) do not cover. l.mu held.
func (l *ledger) aheadOfLocked(give []int, recs map[int]record) []string {
	var ahead []string
	for _, p := range give {
		_, a := l.settledLocked(p, recs)
		ahead = append(ahead, a...)
	}
	return ahead
}

// adopt records a heartbeat that committed: the Store owns mine (with
// the tokens the table holds, given-back ones already left out), leased
// until sent+ttl by the local clock, sent being the local time before
// the heartbeat's transaction began; dead are their aggregates held by a
// dead event (nil: not read; the next claim reads them). count is the table's partition count, share the fair
// share. It reports whether the Store gained a partition.
//
// With watermarks, recs are the marks the table holds for mine: a
// partition newly owned (or owned again under a new token) reads on from
// its mark.
func (l *ledger) adopt(mine map[int]int64, recs map[int]mark, dead map[int]map[string]bool, count, share int, sent time.Time, ttl time.Duration) (gained bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if dead != nil {
		l.dead, l.deadStale = dead, false
	} else {
		l.deadStale = true // not read: the next claim reads them
	}
	l.adoptMarksLocked(mine, recs)
	for p, tok := range mine {
		if old, ok := l.parts[p]; !ok || old.token != tok {
			gained = true
		}
	}
	l.parts = make(map[int]partLease, len(mine))
	for p, tok := range mine {
		l.parts[p] = partLease{token: tok, until: sent.Add(ttl)}
	}
	for p := range l.draining {
		if _, ok := mine[p]; !ok {
			delete(l.draining, p)
		}
	}
	if !l.renewed || share != l.share || gained {
		// Relays joined or left, or partitions came our way: others may
		// be giving some back.
		l.eagerUntil = sent.Add(eagerWindow)
	}
	l.count, l.share, l.renewed, l.beatAt = count, share, true, sent
	return gained
}

// given removes partitions given back outside a heartbeat (Leave).
func (l *ledger) given(ps []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		delete(l.parts, p)
		delete(l.draining, p)
	}
	l.adoptMarksLocked(l.tokensLocked(), nil)
}

// tokensLocked returns the owned partitions with their tokens. l.mu held.
func (l *ledger) tokensLocked() map[int]int64 {
	out := make(map[int]int64, len(l.parts))
	for p, pl := range l.parts {
		out[p] = pl.token
	}
	return out
}

// leave drains every partition and stops claims; it returns the
// partitions to give back now (nothing in flight) and whether some are
// still in flight.
func (l *ledger) leave(recs map[int]record) (give []int, ahead []string, waiting bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.left = true
	busy := l.busyPartsLocked(recs)
	for p := range l.parts {
		l.draining[p] = true
		if busy[p] {
			waiting = true
		} else {
			give = append(give, p)
		}
	}
	slices.Sort(give)
	return give, l.aheadOfLocked(give, recs), waiting
}

// join undoes leave: a bulk claim after Leave takes part again.
func (l *ledger) join() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.left {
		l.left, l.renewed = false, false
		clear(l.draining)
	}
}

// leaving reports whether Leave was called since the Store last joined.
func (l *ledger) leaving() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.left
}

// relaying reports whether the Store takes part in ownership: a
// heartbeat ran and it has not left since.
func (l *ledger) relaying() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed && !l.left
}

// beatDue reports whether a heartbeat is due at now, every interval.
func (l *ledger) beatDue(now time.Time, interval time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.renewed || now.Sub(l.beatAt) >= interval
}

// owned returns the partitions whose lease holds at now, sorted.
func (l *ledger) owned(now time.Time) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for p, pl := range l.parts {
		if pl.until.After(now) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// rebalancing reports whether the Store relays and may claim from fewer
// partitions than its fair share, within eagerWindow of a change.
func (l *ledger) rebalancing(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed && !l.left && len(l.parts)-len(l.draining) < l.share && now.Before(l.eagerUntil)
}

// hurried reports whether the Store is in the middle of a rebalance:
// it drains partitions that still have events in flight, or it is short
// of its fair share within eagerWindow of a change (others are giving
// partitions back). Its heartbeat then comes every twentieth of the
// period (at least MinHeartbeat), so that a handoff takes a fraction of
// a second, not several heartbeats.
func (l *ledger) hurried(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.left || !l.renewed {
		return false
	}
	return len(l.draining) > 0 || (len(l.parts)-len(l.draining) < l.share && now.Before(l.eagerUntil))
}

// eagerWindow is how long after relays joined or left, or after it took
// partitions, a Store short of its fair share keeps its relay claiming
// every rebalance wait. With a partition count that does not divide
// evenly, one relay stays short of the rounded-up share for good, and must
// not poll the table ten times a second for ever.
const eagerWindow = 5 * time.Second
