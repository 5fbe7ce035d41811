package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// slowPublisher acknowledges everything after a delay and records when
// each event was acknowledged.
type slowPublisher struct {
	delay time.Duration
	mu    sync.Mutex
	acked map[string]time.Time
}

func (p *slowPublisher) Publish(ctx context.Context, evs []*outbox.Event) error {
	time.Sleep(p.delay)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evs {
		p.acked[e.ID] = time.Now()
	}
	return nil
}

func (p *slowPublisher) ackedAt(id string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.acked[id]
	return t, ok
}

// Two quick writes of one aggregate: the second cannot be published at
// once because the first is still in flight; it must follow as soon as
// the first is marked, not at the relay's next tick.
func TestHeldEventFollowsItsPredecessorAtOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		pub := &slowPublisher{delay: 100 * time.Millisecond, acked: map[string]time.Time{}}
		ob := newOutbox(t, store, pub, outbox.WithInterval(time.Hour))
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ob.Run(runCtx) }()
		defer func() { stop(); mustNoErr(t, <-done, "Run") }()

		first := &outbox.Event{Topic: "t", Type: "stock.updated", AggregateID: "s1/p1"}
		second := &outbox.Event{Topic: "t", Type: "stock.updated", AggregateID: "s1/p1"}
		var wg sync.WaitGroup
		wg.Go(func() {
			mustNoErr(t, transactErr(ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, first) })), "first")
		})
		time.Sleep(20 * time.Millisecond) // the first is being published
		mustNoErr(t, transactErr(ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, second) })), "second")
		committed := time.Now()
		wg.Wait()

		waitFor(t, "the second event", func() bool { _, ok := pub.ackedAt(second.ID); return ok })
		a1, _ := pub.ackedAt(first.ID)
		a2, _ := pub.ackedAt(second.ID)
		t.Logf("second event acknowledged %v after its commit", a2.Sub(committed))
		if !a1.Before(a2) {
			t.Fatal("the second event was published before the first")
		}
		if lag := a2.Sub(committed); lag > 2*time.Second {
			t.Fatalf("the second event waited %v for the relay (interval 1h)", lag)
		}
	})
}
