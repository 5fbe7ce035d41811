package e2e

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// timingPublisher records when the broker first answered a probe and when
// it first acknowledged a batch after that.
type timingPublisher struct {
	inner *redisstream.Publisher

	mu         sync.Mutex
	probeOK    time.Time
	firstAck   time.Time
	probesSeen int
}

func (p *timingPublisher) Publish(ctx context.Context, evs []*outbox.Event) error {
	err := p.inner.Publish(ctx, evs)
	p.mu.Lock()
	if err == nil && !p.probeOK.IsZero() && p.firstAck.IsZero() {
		p.firstAck = time.Now()
	}
	p.mu.Unlock()
	return err
}

func (p *timingPublisher) Ping(ctx context.Context) error {
	err := p.inner.Ping(ctx)
	p.mu.Lock()
	p.probesSeen++
	if err == nil && p.probeOK.IsZero() {
		p.probeOK = time.Now()
	}
	p.mu.Unlock()
	return err
}

// The broker goes down while events are committed; the circuit breaker
// opens and the relay stops sending; when the broker is back the first
// successful probe closes the breaker and the backlog drains at once, not
// at the next tick of the (here, hour-long) interval.
func TestRecoveryAfterOutage(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		b := newBroker(t)
		inner, err := redisstream.New(b.client)
		mustNoErr(t, err, "redisstream.New")
		pub := &timingPublisher{inner: inner}
		ob := newOutbox(t, store, pub,
			outbox.WithInterval(time.Hour), outbox.WithTimeout(5*time.Second), outbox.WithBatchSize(200),
			outbox.WithBreaker(2, 10*time.Millisecond, 50*time.Millisecond))
		stream := b.prefix + "recovery"

		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ob.Run(runCtx) }()
		defer func() { stop(); mustNoErr(t, <-done, "Run") }()

		b.proxy.Cut()
		var saved []*outbox.Event
		for range 10 {
			evs := newEvents(stream, 50)
			mustNoErr(t, ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, evs...) }), "transact while Redis is down")
			saved = append(saved, evs...)
		}
		waitFor(t, "the breaker to open", func() bool { return ob.Worker().Breaker().Open })
		time.Sleep(120 * time.Millisecond) // a few failed probes
		pub.mu.Lock()
		failedProbes := pub.probesSeen
		pub.mu.Unlock()
		if failedProbes == 0 {
			t.Fatal("no probe while the breaker was open")
		}

		restored := time.Now()
		b.proxy.Restore()
		waitFor(t, "the backlog to drain", func() bool {
			st, err := store.Stats(ctx, time.Hour)
			return err == nil && st.Pending == 0
		})
		drained := time.Since(restored)

		pub.mu.Lock()
		probeToAck := pub.firstAck.Sub(pub.probeOK)
		pub.mu.Unlock()
		t.Logf("probe ok %v after restore; first event acknowledged %v after that probe; %d events drained %v after restore",
			pub.probeOK.Sub(restored), probeToAck, len(saved), drained)
		if probeToAck < 0 || probeToAck > time.Second {
			t.Errorf("first event acknowledged %v after the first good probe; want well under a second", probeToAck)
		}
		if got := b.ids(t, stream); !slices.Equal(got, idsOf(saved)) {
			t.Fatalf("stream holds %d events, want the %d committed, in order", len(got), len(saved))
		}
	})
}
