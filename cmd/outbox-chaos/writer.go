//go:build unix

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/eventsync/outbox"
)

// aggregatesPerWriter is how many aggregates each writer owns. A writer
// owns its aggregates alone and writes them one transaction at a time, so
// the save order of an aggregate is its commit order (see sqlstore.Claim
// on concurrent writers of one aggregate).
const aggregatesPerWriter = 25

// recorder keeps what the writers did with each event.
type recorder struct {
	mu         sync.Mutex
	committed  map[string]written
	rolledBack map[string]written
	uncertain  map[string]written // the commit failed: it may or may not have happened
}

func newRecorder() *recorder {
	return &recorder{committed: map[string]written{}, rolledBack: map[string]written{}, uncertain: map[string]written{}}
}

func (rec *recorder) add(into map[string]written, events []*outbox.Event, ws []written) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, e := range events {
		into[e.ID] = ws[i]
	}
}

// pacer spreads the committed events over the run.
type pacer struct {
	mu     sync.Mutex
	total  int
	done   int
	start  time.Time
	period time.Duration
}

func newPacer(total int, period time.Duration) *pacer {
	return &pacer{total: total, start: time.Now(), period: period}
}

// wait blocks until n more events may be written, and reports false once
// the total is reached.
func (p *pacer) wait(ctx context.Context, n int) bool {
	for {
		p.mu.Lock()
		if p.done >= p.total {
			p.mu.Unlock()
			return false
		}
		allowed := int(float64(p.total) * float64(time.Since(p.start)) / float64(p.period))
		if p.done < allowed || p.period <= 0 {
			p.done += n
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// giveBack returns n events' worth of allowance after a rollback, so that
// the run still commits its total.
func (p *pacer) giveBack(n int) {
	p.mu.Lock()
	p.done -= n
	p.mu.Unlock()
}

// writer writes business transactions: a row in the business table and
// one to four events of one of its aggregates (sometimes one without an
// aggregate too), committing nine in ten and rolling back the tenth on
// purpose. A third of the commits publish at once, as a service would.
func (r *run) writer(ctx context.Context, n int, rec *recorder, pace *pacer) error {
	rng := rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(n)+1))
	seqs := make([]int, aggregatesPerWriter)
	insert := r.db.Rebind("INSERT INTO " + r.orders + " (id, aggregate_id, quantity) VALUES (?, ?, ?)")
	for {
		k := rng.IntN(aggregatesPerWriter)
		agg := fmt.Sprintf("w%d-a%d", n, k)
		count := 1 + rng.IntN(4)
		var events []*outbox.Event
		var ws []written
		for range count {
			seqs[k]++
			events = append(events, &outbox.Event{
				Topic: topics[k%2], Type: "chaos.written", AggregateID: agg,
				Payload: fmt.Appendf(nil, `{"aggregate":%q,"seq":%d}`, agg, seqs[k]),
			})
			ws = append(ws, written{aggregate: agg, seq: seqs[k]})
		}
		if rng.IntN(5) == 0 {
			events = append(events, &outbox.Event{Topic: topics[2], Type: "chaos.noted", Payload: []byte(`{}`)})
			ws = append(ws, written{})
		}
		if !pace.wait(ctx, len(events)) {
			return ctx.Err()
		}
		rollback := rng.IntN(10) == 0
		immediate := rng.IntN(3) == 0

		tx, err := r.db.BeginTxx(ctx, nil)
		if err != nil {
			pace.giveBack(len(events))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("begin: %w", err)
		}
		if _, err := tx.ExecContext(ctx, insert, outbox.NewID(), agg, count); err != nil {
			_ = tx.Rollback()
			pace.giveBack(len(events))
			return fmt.Errorf("business write: %w", err)
		}
		if err := r.ob.Save(ctx, tx, events...); err != nil {
			_ = tx.Rollback()
			pace.giveBack(len(events))
			return fmt.Errorf("save: %w", err)
		}
		if rollback {
			if err := tx.Rollback(); err != nil {
				return fmt.Errorf("rollback: %w", err)
			}
			rec.add(rec.rolledBack, events, ws)
			pace.giveBack(len(events))
			continue
		}
		if err := tx.Commit(); err != nil {
			rec.add(rec.uncertain, events, ws)
			continue
		}
		rec.add(rec.committed, events, ws)
		if immediate {
			_, _ = r.ob.Publish(ctx, events...) // a failure leaves them to the relays
		}
	}
}
