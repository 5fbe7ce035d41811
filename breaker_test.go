package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
)

func TestBrokerOutageNeverBuries(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2)}
	s.pending[0].Delivery.Attempts = 50 // far past MaxAttempts
	down := errors.New("dial tcp: connection refused")
	w := newTestOutbox(t, s, PublisherFunc(func(context.Context, []*Event) error { return down }), WithMaxAttempts(3))
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.BrokerErr != down || res.Dead != 0 || res.Failed != 2 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range s.failed {
		if f.Dead || f.Delay != 0 {
			t.Errorf("whole-batch failure recorded as %+v; want due at once, not dead", f)
		}
	}
}

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	t.Parallel()
	b := newBreaker(3, 10*time.Millisecond, 40*time.Millisecond)
	now := time.Now()
	for i := 1; i <= 2; i++ {
		if b.failure(now) || b.isOpen() {
			t.Fatalf("opened after %d failures, threshold 3", i)
		}
	}
	if !b.failure(now) || !b.isOpen() {
		t.Fatal("did not open at the threshold")
	}
	if d := b.untilProbe(now); d != 10*time.Millisecond {
		t.Errorf("first probe in %v, want 10ms", d)
	}
	b.failure(now) // a failed probe doubles the delay up to the cap
	b.failure(now)
	b.failure(now)
	if d := b.untilProbe(now); d != 40*time.Millisecond {
		t.Errorf("probe delay %v, want the 40ms cap", d)
	}
	if st := b.snapshot(); !st.Open || st.Failures != 6 || st.Since.IsZero() {
		t.Errorf("state %+v", st)
	}
	if !b.success() || b.isOpen() || b.snapshot() != (BreakerState{}) {
		t.Error("success did not close the breaker")
	}
	never := newBreaker(-1, time.Millisecond, time.Millisecond)
	for range 100 {
		never.failure(now)
	}
	if never.isOpen() {
		t.Error("a disabled breaker opened")
	}
}

// pingPublisher is down until up is set; it answers Ping accordingly.
type pingPublisher struct {
	up        atomic.Bool
	publishes atomic.Int32
	pings     atomic.Int32
}

func (p *pingPublisher) Publish(ctx context.Context, evs []*Event) error {
	p.publishes.Add(1)
	if !p.up.Load() {
		return errors.New("connection refused")
	}
	return nil
}

func (p *pingPublisher) Ping(context.Context) error {
	p.pings.Add(1)
	if !p.up.Load() {
		return errors.New("connection refused")
	}
	return nil
}

func TestRunStopsSendingWhileOpenAndDrainsAfterProbe(t *testing.T) {
	t.Parallel()
	s := &refillStore{fakeStore: fakeStore{}}
	s.refill = func() []*Event { return events(1) }
	pub := &pingPublisher{}
	w := newTestOutbox(t, s, pub, WithInterval(time.Millisecond), WithBreaker(2, 5*time.Millisecond, 20*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	waitFor(t, func() bool { return w.Breaker().Open })
	sent := pub.publishes.Load()
	time.Sleep(100 * time.Millisecond)
	if extra := pub.publishes.Load() - sent; extra != 0 {
		t.Errorf("%d publishes while the breaker was open; want probes only", extra)
	}
	if pub.pings.Load() < 2 {
		t.Errorf("%d probes in 100ms with 5..20ms delays", pub.pings.Load())
	}
	pub.up.Store(true)
	waitFor(t, func() bool { return !w.Breaker().Open && pub.publishes.Load() > sent })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// refillStore always has one more due event.
type refillStore struct {
	fakeStore
	refill func() []*Event
}

func (s *refillStore) Claim(ctx context.Context, req storage.ClaimRequest) (*Claim, error) {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.pending = s.refill()
	}
	s.mu.Unlock()
	return s.fakeStore.Claim(ctx, req)
}

func TestPublishSkipsWhileBreakerOpen(t *testing.T) {
	t.Parallel()
	s := &fakeStore{}
	o, err := New(s, Noop{})
	if err != nil {
		t.Fatal(err)
	}
	for range DefaultBreakerThreshold {
		o.breaker.failure(time.Now())
	}
	if _, err := o.Publish(context.Background(), &Event{ID: "x"}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("Publish = %v, want ErrBreakerOpen", err)
	}
	if len(s.requests) != 0 {
		t.Error("Publish claimed although the breaker was open")
	}
}

func TestBuryPublishesDeadLetterAndCallsHook(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2)}
	var mu sync.Mutex
	var sent []*Event
	pub := PublisherFunc(func(_ context.Context, evs []*Event) error {
		mu.Lock()
		defer mu.Unlock()
		if evs[0].Topic == "dlq" {
			sent = append(sent, evs...)
			return nil
		}
		return &PublishError{Failed: map[string]error{"e1": Permanent(errors.New("message too large"))}}
	})
	var hooked []string
	w := newTestOutbox(t, s, pub, WithDeadLetterTopic("dlq"), WithHooks(deadHookFunc(func(_ context.Context, e *Event, err error) {
		hooked = append(hooked, fmt.Sprintf("%s: %v", e.ID, err))
	})))
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dead != 1 || res.Synced != 1 {
		t.Fatalf("result %+v", res)
	}
	if len(sent) != 1 || sent[0].ID != "e1" || sent[0].Headers[HeaderDeadTopic] != "t" || sent[0].Headers[HeaderDeadError] != "message too large" {
		t.Fatalf("dead-letter copies %+v", sent)
	}
	if len(hooked) != 1 || hooked[0] != "e1: message too large" {
		t.Errorf("DeadHook calls %v", hooked)
	}
}

// deadHookFunc adapts a function to DeadHook.
type deadHookFunc func(ctx context.Context, e *Event, err error)

func (f deadHookFunc) EventDead(ctx context.Context, e *Event, err error) { f(ctx, e, err) }

func TestDeadLetterFailurePostponesBurial(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(1)}
	pub := PublisherFunc(func(_ context.Context, evs []*Event) error {
		if evs[0].Topic == "dlq" {
			return errors.New("dlq down")
		}
		return &PublishError{Failed: map[string]error{"e0": Permanent(errors.New("bad"))}}
	})
	w := newTestOutbox(t, s, pub, WithDeadLetterTopic("dlq"))
	res, _ := w.SyncPending(context.Background(), 10)
	if res.Dead != 0 || res.Failed != 1 || s.failed[0].Dead {
		t.Fatalf("buried although its dead-letter copy was lost: %+v %+v", res, s.failed)
	}
}

func TestHeldBackEventsAreReleased(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(3)}
	pub := PublisherFunc(func(context.Context, []*Event) error {
		return &PublishError{Failed: map[string]error{"e1": errors.New("rejected"), "e2": ErrHeldBack}}
	})
	w := newTestOutbox(t, s, pub)
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Synced != 1 || res.Failed != 1 || res.Released != 1 || fmt.Sprint(s.released) != "[e2]" {
		t.Fatalf("result %+v released %v", res, s.released)
	}
}

func TestClaimRequestCarriesOrdering(t *testing.T) {
	t.Parallel()
	s := &fakeStore{}
	w := newTestOutbox(t, s, Noop{})
	w.SyncPending(context.Background(), 5)
	w2 := newTestOutbox(t, s, Noop{}, WithPerAggregateOrder(false), WithSkipDead(true))
	w2.SyncPending(context.Background(), 5)
	if r := s.requests[0]; r.Unordered || r.SkipDead {
		t.Errorf("default request %+v, want ordered, dead holds", r)
	}
	if r := s.requests[1]; !r.Unordered || !r.SkipDead {
		t.Errorf("request %+v, want unordered, dead passes", r)
	}
}

func TestRetentionNeedsAPurger(t *testing.T) {
	t.Parallel()
	if _, err := New(&fakeStore{}, Noop{}, WithRetention(time.Hour)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v", err)
	}
	p := &purgingStore{}
	w := newTestOutbox(t, p, Noop{}, WithRetention(time.Hour), WithBatchSize(10))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, func() bool { return p.calls.Load() == 3 }) // 10, 10, then 5 < batch: done
	cancel()
	<-done
	if p.calls.Load() != 3 {
		t.Errorf("%d purge calls", p.calls.Load())
	}
}

type purgingStore struct {
	fakeStore
	calls atomic.Int32
}

func (p *purgingStore) Purge(_ context.Context, age time.Duration, limit int) (int, error) {
	if p.calls.Add(1) < 3 {
		return limit, nil
	}
	return 5, nil
}

type notifyingStore struct {
	fakeStore
	wake chan func()
}

func (n *notifyingStore) Listen(ctx context.Context, wake func()) error {
	n.wake <- wake
	<-ctx.Done()
	return nil
}

func TestRunWakesOnNotifications(t *testing.T) {
	t.Parallel()
	s := &notifyingStore{wake: make(chan func(), 1)}
	w := newTestOutbox(t, s, Noop{}, WithInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	wake := <-s.wake
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.requests) == 1 })
	s.mu.Lock()
	s.pending = events(2)
	s.mu.Unlock()
	wake()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.marked) == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestUnavailablePerEventFailuresAreTheBrokersFault(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(3)}
	s.pending[1].Delivery.Attempts = 50 // far past MaxAttempts
	dropped := Unavailable(errors.New("read: connection reset by peer"))
	pub := PublisherFunc(func(context.Context, []*Event) error {
		return &PublishError{Failed: map[string]error{"e1": dropped, "e2": dropped}}
	})
	w := newTestOutbox(t, s, pub, WithMaxAttempts(3), WithBreaker(1, time.Second, time.Second))
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Synced != 1 || res.Failed != 2 || res.Dead != 0 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range s.failed {
		if f.Dead || f.Delay != 0 {
			t.Errorf("connection failure recorded as %+v; want due at once, not dead", f)
		}
	}
	if w.Breaker().Open {
		t.Error("breaker opened although the broker acknowledged an event")
	}

	// Nothing acknowledged and every failure the broker's: the breaker counts it.
	s.pending = events(2)
	pub2 := PublisherFunc(func(context.Context, []*Event) error {
		return &PublishError{Failed: map[string]error{"e0": dropped, "e1": dropped}}
	})
	w2 := newTestOutbox(t, s, pub2, WithBreaker(1, time.Second, time.Second))
	w2.SyncPending(context.Background(), 10)
	if !w2.Breaker().Open {
		t.Error("breaker stayed closed although the broker failed every event")
	}
	if Unavailable(nil) != nil || IsUnavailable(errors.New("x")) || !IsUnavailable(fmt.Errorf("wrapped: %w", dropped)) {
		t.Error("Unavailable/IsUnavailable")
	}
}

// A relay whose own pass met the broker down retries soon, not a whole
// interval later, so that the breaker opens (or the broker is used again)
// within moments.
func TestRunRetriesSoonAfterABrokerFailure(t *testing.T) {
	t.Parallel()
	s := &refillStore{}
	s.refill = func() []*Event { return events(1) }
	pub := &pingPublisher{}
	w := newTestOutbox(t, s, pub, WithInterval(time.Hour), WithBreaker(3, 5*time.Millisecond, 20*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, func() bool { return w.Breaker().Open }) // three passes, not three hours
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// countingStore counts claims and has nothing to claim.
type countingStore struct {
	fakeStore
	claims atomic.Int64
}

func (s *countingStore) Claim(ctx context.Context, req storage.ClaimRequest) (*Claim, error) {
	s.claims.Add(1)
	return &Claim{Token: "t"}, nil
}

// An open breaker over a publisher without Ping probes with a batch of
// one; when there is nothing to claim, the probe must wait its delay, not
// spin.
func TestProbeWithNothingToClaimWaits(t *testing.T) {
	t.Parallel()
	s := &countingStore{}
	w := newTestOutbox(t, s, Noop{}, WithInterval(time.Hour), WithBreaker(1, 50*time.Millisecond, 50*time.Millisecond))
	w.breaker.failure(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	if n := s.claims.Load(); n > 10 {
		t.Fatalf("%d claims in 300ms with a 50ms probe delay: the relay spins", n)
	}
}

// endlessPurger always has a full batch more to purge.
type endlessPurger struct {
	countingStore
	purges atomic.Int64
}

func (p *endlessPurger) Purge(_ context.Context, _ time.Duration, limit int) (int, error) {
	p.purges.Add(1)
	time.Sleep(time.Millisecond)
	return limit, nil
}

// A large purge backlog must not hold up delivery: each turn purges a
// bounded number of batches, then the relay passes again.
func TestPurgeBacklogDoesNotStarveDelivery(t *testing.T) {
	t.Parallel()
	p := &endlessPurger{}
	w := newTestOutbox(t, p, Noop{}, WithRetention(time.Hour), WithInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, func() bool { return p.claims.Load() >= 5 })
	cancel()
	<-done
	if per := p.purges.Load() / p.claims.Load(); per > maxPurgeBatches {
		t.Errorf("%d purge batches per relay pass, want at most %d", per, maxPurgeBatches)
	}
}

// outagePublisher reports a broker outage as the kafka and natsjs
// publishers do: not as one error for the batch but as a *PublishError in
// which every event failed as Unavailable. While up it acknowledges every
// event. It records the size of each batch it was given.
type outagePublisher struct {
	up      atomic.Bool
	mu      sync.Mutex
	batches []int
}

func (p *outagePublisher) Publish(_ context.Context, evs []*Event) error {
	p.mu.Lock()
	p.batches = append(p.batches, len(evs))
	p.mu.Unlock()
	if p.up.Load() {
		return nil
	}
	failed := make(map[string]error, len(evs))
	for _, e := range evs {
		failed[e.ID] = Unavailable(fmt.Errorf("kafka: send %s: client has run out of available brokers", e.ID))
	}
	return &PublishError{Failed: failed}
}

// sizes returns the sizes of the batches published since the first n.
func (p *outagePublisher) sizes(from int) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.batches[from:]...)
}

// pingingOutagePublisher is an outagePublisher that can be probed with
// Ping, as the natsjs publisher can.
type pingingOutagePublisher struct{ outagePublisher }

func (p *pingingOutagePublisher) Ping(context.Context) error {
	if !p.up.Load() {
		return Unavailable(errors.New("nats: timeout"))
	}
	return nil
}

// requeueStore is a fakeStore in which failed and released events are due
// again at once, ahead of the rest, as the broker's failures are in a real
// store: it keeps a backlog through an outage.
type requeueStore struct {
	fakeStore
	claimed map[string]*Event
}

func (s *requeueStore) Claim(ctx context.Context, req storage.ClaimRequest) (*Claim, error) {
	c, err := s.fakeStore.Claim(ctx, req)
	if err != nil {
		return c, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed == nil {
		s.claimed = map[string]*Event{}
	}
	for _, e := range c.Events {
		s.claimed[e.ID] = e
	}
	return c, nil
}

func (s *requeueStore) Fail(ctx context.Context, token string, fs []storage.Failure) (int, error) {
	n, _ := s.fakeStore.Fail(ctx, token, fs)
	ids := make([]string, 0, len(fs))
	for _, f := range fs {
		if !f.Dead {
			ids = append(ids, f.ID)
		}
	}
	s.requeue(ids)
	return n, nil
}

func (s *requeueStore) Release(ctx context.Context, token string, ids []string) (int, error) {
	n, _ := s.fakeStore.Release(ctx, token, ids)
	s.requeue(ids)
	return n, nil
}

func (s *requeueStore) requeue(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	back := make([]*Event, 0, len(ids)+len(s.pending))
	for _, id := range ids {
		back = append(back, s.claimed[id])
	}
	s.pending = append(back, s.pending...)
}

func (s *requeueStore) markedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.marked)
}

// A batch in which every event failed as Unavailable is the broker's
// failure as a whole: Result.BrokerErr is set and the breaker counts
// it, while each event's failed attempt is recorded as before (due again
// at once, never buried). Events held back behind such a failure do not
// make it the events' fault; one event that failed for its own sake does.
func TestUnavailableBatchIsABrokerFailure(t *testing.T) {
	t.Parallel()
	dropped := Unavailable(errors.New("nats: timeout"))
	s := &fakeStore{pending: events(3)}
	s.pending[0].Delivery.Attempts = 50 // far past MaxAttempts
	pub := PublisherFunc(func(context.Context, []*Event) error {
		return &PublishError{Failed: map[string]error{"e0": dropped, "e1": dropped, "e2": ErrHeldBack}}
	})
	w := newTestOutbox(t, s, pub, WithMaxAttempts(3), WithBreaker(1, time.Hour, time.Hour))
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var pe *PublishError
	if !errors.As(res.BrokerErr, &pe) || len(pe.Failed) != 3 {
		t.Fatalf("BrokerErr = %v, want the *PublishError", res.BrokerErr)
	}
	if res.Failed != 2 || res.Dead != 0 || res.Released != 1 || fmt.Sprint(s.released) != "[e2]" {
		t.Fatalf("result %+v, released %v", res, s.released)
	}
	for _, f := range s.failed {
		if f.Dead || f.Delay != 0 || f.Err != "nats: timeout" {
			t.Errorf("failure recorded as %+v; want due at once, not dead", f)
		}
	}
	if !w.Breaker().Open {
		t.Error("breaker stayed closed although the broker failed every event")
	}

	s2 := &fakeStore{pending: events(2)}
	pub2 := PublisherFunc(func(context.Context, []*Event) error {
		return &PublishError{Failed: map[string]error{"e0": dropped, "e1": errors.New("invalid record")}}
	})
	w2 := newTestOutbox(t, s2, pub2, WithBreaker(1, time.Hour, time.Hour))
	res, err = w2.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.BrokerErr != nil || w2.Breaker().Open {
		t.Errorf("an event that failed for its own sake made the batch a broker failure: %+v", res)
	}
}

// With a publisher that reports an outage event by event, the relay still
// retries soon, opens the breaker, stops sending while it is open, and,
// once a probe finds the broker back, drains the backlog at once rather
// than an interval (here an hour) later. Both probe paths: a Ping (as
// natsjs) and a batch of one event (as kafka, which has no Ping).
func TestRunRecoversFromAnOutageReportedEventByEvent(t *testing.T) {
	t.Parallel()
	for _, ping := range []bool{true, false} {
		t.Run(fmt.Sprintf("ping=%v", ping), func(t *testing.T) {
			t.Parallel()
			var pub Publisher
			var p *outagePublisher
			if ping {
				pp := &pingingOutagePublisher{}
				pub, p = pp, &pp.outagePublisher
			} else {
				p = &outagePublisher{}
				pub = p
			}
			const backlog = 30
			s := &requeueStore{fakeStore: fakeStore{pending: events(backlog)}}
			w := newTestOutbox(t, s, pub, WithInterval(time.Hour), WithBatchSize(10),
				WithBreaker(2, 5*time.Millisecond, 20*time.Millisecond))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()

			waitFor(t, func() bool { return w.Breaker().Open }) // two passes, not two hours
			sent := len(p.sizes(0))
			time.Sleep(60 * time.Millisecond) // several probe delays
			for _, n := range p.sizes(sent) {
				if ping || n != 1 {
					t.Fatalf("batches %v published while the breaker was open; want probes only", p.sizes(sent))
				}
			}

			up := time.Now()
			p.up.Store(true)
			waitFor(t, func() bool { return s.markedCount() == backlog })
			drained := time.Since(up)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The last probe delay is at most 20ms and the backlog is three
			// batches: a second leaves room for a loaded machine and is
			// still far from the interval.
			if drained > time.Second {
				t.Errorf("backlog drained %v after the broker came back; want well under the interval", drained)
			}
			if w.Breaker().Open {
				t.Error("breaker still open after the backlog drained")
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, f := range s.failed {
				if f.Dead || f.Delay != 0 {
					t.Fatalf("outage failure recorded as %+v; want due at once, not dead", f)
				}
			}
			if len(s.failed) == 0 {
				t.Error("no failed attempt recorded during the outage")
			}
		})
	}
}

// Publish that meets an outage reported event by event kicks the relay,
// which retries soon and opens the breaker, instead of sleeping through
// its interval; so does a Publish whose own claim failed.
func TestPublishKicksTheRelayOnOutageAndClaimFailure(t *testing.T) {
	t.Parallel()
	t.Run("outage", func(t *testing.T) {
		t.Parallel()
		s := &requeueStore{}
		p := &outagePublisher{}
		o, err := New(s, p, WithInterval(time.Hour), WithBreaker(3, 5*time.Millisecond, 20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.requests) == 1 }) // the first, empty pass
		s.mu.Lock()
		s.pending = events(1)
		s.mu.Unlock()
		res, err := o.Publish(context.Background(), &Event{ID: "e0"})
		if err == nil || res.BrokerErr == nil {
			t.Fatalf("Publish = %+v, %v; want a broker failure", res, err)
		}
		waitFor(t, func() bool { return o.Breaker().Open })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("claim failure", func(t *testing.T) {
		t.Parallel()
		s := &idClaimFailStore{}
		o, err := New(s, Noop{}, WithInterval(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		waitFor(t, func() bool { return s.relayClaims.Load() == 1 })
		if _, err := o.Publish(context.Background(), &Event{ID: "e0"}); err == nil {
			t.Fatal("Publish succeeded although its claim failed")
		}
		waitFor(t, func() bool { return s.relayClaims.Load() == 2 }) // kicked, not an hour later
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("claim failure while the relay backs off", func(t *testing.T) {
		t.Parallel()
		s := &idClaimFailStore{relayFails: true}
		o, err := New(s, Noop{}, WithInterval(time.Hour), WithBackoff(time.Hour, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		waitFor(t, func() bool { return s.relayClaims.Load() == 1 && o.storeFailing.Load() })
		for range 5 {
			if _, err := o.Publish(context.Background(), &Event{ID: "e0"}); err == nil {
				t.Fatal("Publish succeeded although its claim failed")
			}
		}
		time.Sleep(50 * time.Millisecond)
		if n := s.relayClaims.Load(); n != 1 {
			t.Errorf("the relay claimed %d times; failing Publish calls woke it from its backoff", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// idClaimFailStore fails the claims of Publish (by ID) and has nothing for
// the relay's.
type idClaimFailStore struct {
	fakeStore
	relayClaims atomic.Int32
	relayFails  bool // the relay's claims fail too
}

func (s *idClaimFailStore) Claim(ctx context.Context, req storage.ClaimRequest) (*Claim, error) {
	if req.IDs != nil {
		return nil, errors.New("deadlock detected")
	}
	s.relayClaims.Add(1)
	if s.relayFails {
		return nil, errors.New("connection refused")
	}
	return &Claim{Token: "t"}, nil
}
