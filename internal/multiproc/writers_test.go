package multiproc

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/eventsync/outbox"
)

// written is one write a relay process was asked for.
type written struct {
	agg     string
	seq     int // its place among its aggregate's writes, in commit order
	outcome outcome
}

// ledger is every write asked for, by event ID.
type ledger struct {
	mu     sync.Mutex
	byID   map[string]written
	lastAt time.Time // when the last write was answered
}

func newLedger() *ledger { return &ledger{byID: map[string]written{}} }

func (l *ledger) add(id string, w written) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byID[id] = w
	l.lastAt = time.Now()
}

// counts returns how many writes had each outcome.
func (l *ledger) counts() (ok, bad, unsure int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.byID {
		switch w.outcome {
		case committed:
			ok++
		case failed:
			bad++
		default:
			unsure++
		}
	}
	return ok, bad, unsure
}

// writers writes aggs shared aggregates through the fleet: one goroutine
// per aggregate sends its writes one after the other, each to a random
// relay process, the next only once the previous one's answer is in (so
// an aggregate's save order is its commit order, across processes), with
// pause between two. stop ends them and returns when the last answer
// came; they also end with the test.
func (f *fixture) writers(fl *fleet, aggs int, pause time.Duration) (stop func() time.Time) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for a := range aggs {
		agg := fmt.Sprintf("agg-%02d", a)
		rng := rand.New(rand.NewPCG(rand.Uint64(), uint64(a)))
		wg.Go(func() {
			for seq := 1; ; seq++ {
				select {
				case <-done:
					return
				default:
				}
				r := fl.acquire(rng)
				if r == nil { // every relay is closing or gone: a moment
					seq--
					time.Sleep(10 * time.Millisecond)
					continue
				}
				id := outbox.NewID()
				o := r.write(id, agg, seq)
				r.release()
				f.events.add(id, written{agg: agg, seq: seq, outcome: o})
				time.Sleep(pause/2 + rand.N(pause))
			}
		})
	}
	var once sync.Once
	stopAll := func() { once.Do(func() { close(done); wg.Wait() }) }
	f.t.Cleanup(stopAll) // a test that fails half-way leaves no writer behind
	return func() time.Time {
		stopAll()
		f.events.mu.Lock()
		defer f.events.mu.Unlock()
		return f.events.lastAt
	}
}
