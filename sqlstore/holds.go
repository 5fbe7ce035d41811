package sqlstore

import (
	"slices"
	"time"

	"github.com/eventsync/outbox/storage"
)

// What holds an aggregate back besides a flight: a failure backing off,
// a dead event, and the skip list a read hands to the database; and the
// events whose delivery a lost partition no longer lets the Store record.

// failed records, in memory, what Fail wrote for a claim: a failure that
// backs off holds its aggregate until it is due, a dead one until it is
// re-queued (or passed, for a claim with SkipDead).
func (l *ledger) failed(token string, failures []storage.Failure, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.flights[token]
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
			if l.dead[p] == nil {
				l.dead[p] = map[string]bool{}
			}
			l.dead[p][agg] = true
		} else {
			l.holds[agg] = now.Add(max(fl.Delay, 0))
		}
	}
}

// skipList is what a read leaves out: the aggregates held, dead (unless
// passDead) or with an event in flight, and the seqs of the events in
// flight without an aggregate; unordered, only the events in flight. At
// most maxSkip of them in all.
func (l *ledger) skipList(ordered, passDead bool, now time.Time) (aggs []string, seqs []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.flights {
		for id, i := range f.agg {
			if !ordered || f.aggs[i-1] == "" {
				seqs = append(seqs, f.seq[id])
			}
		}
	}
	if ordered {
		for agg, until := range l.holds {
			if until.After(now) {
				aggs = append(aggs, agg)
			} else {
				delete(l.holds, agg) // its events are due again
			}
		}
		for agg := range l.busy {
			aggs = append(aggs, agg)
		}
		if !passDead {
			for _, dead := range l.dead {
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

// maxSkip bounds the held aggregates a read passes to the database to
// leave out; beyond it they are left out in memory only.
const maxSkip = 2000

// setDead replaces the dead aggregates with those a read found.
func (l *ledger) setDead(dead map[int]map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dead, l.deadStale = dead, false
}

// deadChanged makes the next claim read the dead aggregates again.
func (l *ledger) deadChanged() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadStale = true
}

// staleDead returns the owned partitions with their tokens when the dead
// aggregates must be read again, else nil.
func (l *ledger) staleDead() map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.deadStale {
		return nil
	}
	parts := make(map[int]int64, len(l.parts))
	for p, pl := range l.parts {
		parts[p] = pl.token
	}
	return parts
}

// lapsed returns, of events held by their partitions' marks (by
// partition, as holding.byMark), those whose partition the Store may no
// longer hold under tokens at mono: its lease ran out by the local clock,
// or it changed hands. Their delivery is not the Store's to record.
func (l *ledger) lapsed(byMark map[int][]string, tokens map[int]int64, mono time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, ids := range byMark {
		if pl, ok := l.parts[p]; !ok || pl.token != tokens[p] || !pl.until.After(mono) {
			out = append(out, ids...)
		}
	}
	return out
}
