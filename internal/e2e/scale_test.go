package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// Guarantees 4, 5 and 6 at scale: several relays over one table, with the
// broker up, failing at random, cut away at random, and one poison event.

// scaleSize is how many events on how many aggregates the scale tests
// save; smaller under -short.
func scaleSize(store *sqlstore.Store) (events, aggregates int) {
	switch {
	case testing.Short():
		return 2_000, 50
	case store.Dialect() == sqlstore.SQLite:
		// One writer at a time, and a pure-Go SQLite ten times slower
		// under the race detector: the same faults on fewer events keep
		// the suite's run time in bounds.
		return 8_000, 100
	}
	return 20_000, 200
}

// scaleEvents returns n events over aggs aggregates, saved round-robin;
// each payload is the event's position within its aggregate.
func scaleEvents(topic string, n, aggs int) []*outbox.Event {
	out := make([]*outbox.Event, n)
	for i := range out {
		out[i] = &outbox.Event{
			Topic: topic, Type: "stock.updated", AggregateID: "agg-" + strconv.Itoa(i%aggs),
			Payload: []byte(strconv.Itoa(i / aggs)),
		}
	}
	return out
}

// relayOptions keep the relays fast in tests.
func relayOptions(extra ...outbox.Option) []outbox.Option {
	return append([]outbox.Option{
		outbox.WithBatchSize(200),
		outbox.WithInterval(20 * time.Millisecond),
		outbox.WithTimeout(3 * time.Second),
		outbox.WithLease(30 * time.Second),
		outbox.WithBackoff(time.Millisecond, 20*time.Millisecond),
		outbox.WithBreaker(3, 5*time.Millisecond, 50*time.Millisecond),
		outbox.WithMaxAttempts(1000),
	}, extra...)
}

// startRelays runs n relays over store and pub until the test ends.
func startRelays(t *testing.T, n int, store outbox.Store, pub outbox.Publisher, opts ...outbox.Option) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		w, err := outbox.New(store, pub, relayOptions(opts...)...)
		mustNoErr(t, err, "outbox.New")
		wg.Go(func() {
			if err := w.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// saveAll saves events in transactions of 100 through Transact, which
// also publishes each batch at once (claims by ID racing the relays).
func saveAll(t *testing.T, db *sqlx.DB, ob *outbox.Outbox, events []*outbox.Event) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(events); i += 100 {
		batch := events[i:min(i+100, len(events))]
		mustNoErr(t, transactErr(ob.Transact(ctx, db, func(tx *outbox.Tx) error { return tx.Save(ctx, batch...) })), "transact")
	}
}

// recorder is a broker that checks per-aggregate order as events arrive:
// an aggregate's next new event must be the one after the last it got.
// Events listed in mayRepeat may arrive again (a lost acknowledgement).
type recorder struct {
	mu        sync.Mutex
	next      map[string]int  // aggregate -> position expected next
	seen      map[string]int  // event ID -> arrivals
	mayRepeat map[string]bool // IDs whose acknowledgement was lost
	problems  []string
	distinct  int
	arrived   map[string]bool // IDs
}

func newRecorder() *recorder {
	return &recorder{next: map[string]int{}, seen: map[string]int{}, mayRepeat: map[string]bool{}, arrived: map[string]bool{}}
}

func (r *recorder) Publish(_ context.Context, events []*outbox.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		r.arrive(e.ID, e.AggregateID, string(e.Payload))
	}
	return nil
}

// arrive records one arrival; the caller holds r.mu.
func (r *recorder) arrive(id, agg, payload string) {
	n, err := strconv.Atoi(payload)
	if err != nil {
		r.problems = append(r.problems, fmt.Sprintf("event %s has payload %q", id, payload))
		return
	}
	r.seen[id]++
	if r.seen[id] > 1 {
		if !r.mayRepeat[id] {
			r.problems = append(r.problems, fmt.Sprintf("event %s (%s #%d) arrived %d times without a fault", id, agg, n, r.seen[id]))
		}
		return
	}
	r.distinct++
	r.arrived[id] = true
	if want := r.next[agg]; n != want {
		r.problems = append(r.problems, fmt.Sprintf("aggregate %s: #%d arrived when #%d was expected", agg, n, want))
	}
	r.next[agg] = n + 1
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.distinct
}

func (r *recorder) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.arrived[id]
}

func (r *recorder) check(t *testing.T, total int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.problems) > 0 {
		t.Fatalf("%d problems; first: %s", len(r.problems), r.problems[0])
	}
	if r.distinct != total {
		t.Fatalf("%d distinct events arrived, want %d", r.distinct, total)
	}
}

// counts returns how many events of the store's table are pending, synced
// and dead.
func counts(t *testing.T, db *sqlx.DB, store *sqlstore.Store) (pending, synced, dead int) {
	t.Helper()
	q := "SELECT COUNT(CASE WHEN synced_at IS NULL AND dead_at IS NULL THEN 1 END), " +
		"COUNT(CASE WHEN synced_at IS NOT NULL THEN 1 END), " +
		"COUNT(CASE WHEN synced_at IS NULL AND dead_at IS NOT NULL THEN 1 END) FROM " + store.Table()
	mustNoErr(t, db.QueryRowContext(context.Background(), q).Scan(&pending, &synced, &dead), "count")
	return pending, synced, dead
}

// waitDelivered waits until want distinct events arrived and nothing is
// pending, failing the test after limit.
func waitDelivered(t *testing.T, db *sqlx.DB, store *sqlstore.Store, count func() int, want int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := count()
		if got >= want {
			if pending, _, _ := counts(t, db, store); pending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			pending, synced, dead := counts(t, db, store)
			t.Fatalf("after %v: %d of %d events arrived; %d pending, %d synced, %d dead", limit, got, want, pending, synced, dead)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Four relays and the immediate path over 20,000 events on 200
// aggregates with the broker up: every event arrives exactly once, each
// aggregate's in save order.
func TestScaleFourRelays(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		n, aggs := scaleSize(store)
		start := time.Now()
		rec := newRecorder()
		startRelays(t, 4, store, rec)
		ob := newOutbox(t, store, rec, relayOptions()...)
		saveAll(t, db, ob, scaleEvents("scale", n, aggs))
		waitDelivered(t, db, store, rec.count, n, 3*time.Minute)
		rec.check(t, n)
		t.Logf("%d events on %d aggregates through 4 relays in %v", n, aggs, time.Since(start).Round(time.Millisecond))
	})
}

// faulty is a broker that fails at random: whole batches (unreachable),
// single events (rejected; later events of their aggregate in the batch
// are held back), and acknowledgements lost after delivery (duplicates).
type faulty struct {
	rec *recorder
	mu  sync.Mutex
	rng *rand.Rand
}

func (f *faulty) roll(p float64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

func (f *faulty) Publish(ctx context.Context, events []*outbox.Event) error {
	if f.roll(0.1) {
		return errors.New("dial tcp: connection refused")
	}
	failed := map[string]error{}
	bad := map[string]bool{}
	var send []*outbox.Event
	for _, e := range events {
		switch {
		case bad[e.AggregateID]:
			failed[e.ID] = outbox.ErrHeldBack
		case f.roll(0.02):
			failed[e.ID] = errors.New("rejected")
			if e.AggregateID != "" {
				bad[e.AggregateID] = true
			}
		default:
			send = append(send, e)
		}
	}
	lost := f.roll(0.05)
	if lost {
		f.rec.mu.Lock()
		for _, e := range send {
			f.rec.mayRepeat[e.ID] = true
		}
		f.rec.mu.Unlock()
	}
	if err := f.rec.Publish(ctx, send); err != nil {
		return err
	}
	if lost {
		return errors.New("i/o timeout waiting for the acknowledgement")
	}
	if len(failed) > 0 {
		return &outbox.PublishError{Failed: failed}
	}
	return nil
}

// The same with a broker failing at random: nothing is lost, order holds,
// and an event arrives twice only after its acknowledgement was lost.
func TestScaleFaultyBroker(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		n, aggs := scaleSize(store)
		start := time.Now()
		rec := newRecorder()
		pub := &faulty{rec: rec, rng: rand.New(rand.NewPCG(1, 2))}
		startRelays(t, 4, store, pub)
		ob := newOutbox(t, store, pub, relayOptions()...)
		saveAll(t, db, ob, scaleEvents("scale", n, aggs))
		waitDelivered(t, db, store, rec.count, n, 3*time.Minute)
		rec.check(t, n)
		if pending, synced, dead := counts(t, db, store); pending != 0 || dead != 0 || synced != n {
			t.Fatalf("%d pending, %d synced, %d dead; want all %d synced", pending, synced, dead, n)
		}
		t.Logf("%d events on %d aggregates through 4 relays and a faulty broker in %v", n, aggs, time.Since(start).Round(time.Millisecond))
	})
}

// uncertain wraps a publisher and notes the events of every batch that
// failed as a whole: Redis may have added them, so they may repeat.
type uncertain struct {
	outbox.Publisher
	mu    sync.Mutex
	maybe map[string]bool
}

func (u *uncertain) Publish(ctx context.Context, events []*outbox.Event) error {
	err := u.Publisher.Publish(ctx, events)
	if err != nil {
		u.mu.Lock()
		var pe *outbox.PublishError
		for _, e := range events {
			if !errors.As(err, &pe) || pe.Failed[e.ID] != nil {
				u.maybe[e.ID] = true
			}
		}
		u.mu.Unlock()
	}
	return err
}

// The same with real Redis cut away and given back at random.
func TestScaleRedisCutAtRandom(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		n, aggs := scaleSize(store)
		start := time.Now()
		b := newBroker(t)
		rp, err := redisstream.New(b.client)
		mustNoErr(t, err, "redisstream.New")
		pub := &uncertain{Publisher: rp, maybe: map[string]bool{}}
		stream := b.prefix + "scale"
		startRelays(t, 4, store, pub)
		ob := newOutbox(t, store, pub, relayOptions()...)

		stopCuts := make(chan struct{})
		var cuts sync.WaitGroup
		cuts.Go(func() {
			rng := rand.New(rand.NewPCG(3, 4))
			for {
				select {
				case <-stopCuts:
					b.proxy.Restore()
					return
				case <-time.After(time.Duration(20+rng.IntN(100)) * time.Millisecond):
				}
				b.proxy.Cut()
				time.Sleep(time.Duration(10+rng.IntN(60)) * time.Millisecond)
				b.proxy.Restore()
			}
		})
		saveAll(t, db, ob, scaleEvents(stream, n, aggs))
		time.Sleep(500 * time.Millisecond) // keep cutting while the relays work
		close(stopCuts)
		cuts.Wait()

		count := func() int {
			l, err := b.direct.XLen(context.Background(), stream).Result()
			mustNoErr(t, err, "XLEN")
			return int(l)
		}
		waitDelivered(t, db, store, count, n, 3*time.Minute)

		msgs, err := b.direct.XRange(context.Background(), stream, "-", "+").Result()
		mustNoErr(t, err, "XRANGE")
		rec := newRecorder()
		pub.mu.Lock()
		rec.mayRepeat = pub.maybe
		pub.mu.Unlock()
		for _, m := range msgs {
			e, err := redisstream.Decode(m.Values)
			mustNoErr(t, err, "decode %s", m.ID)
			rec.arrive(e.ID, e.AggregateID, string(e.Payload))
		}
		rec.check(t, n)
		t.Logf("%d events on %d aggregates through 4 relays and a Redis cut at random in %v (%d entries, %d duplicates)",
			n, aggs, time.Since(start).Round(time.Millisecond), len(msgs), len(msgs)-n)
	})
}

// poisonous fails the poison event: at most failures times before open is
// closed (later tries are held back, no attempt counted), then always;
// later events of its aggregate in a batch are held back. Once cured it
// passes everything to rec.
type poisonous struct {
	rec      *recorder
	poison   string
	failures int
	open     chan struct{}

	mu     sync.Mutex
	failed int
	cured  bool
}

func (p *poisonous) Publish(ctx context.Context, events []*outbox.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := map[string]error{}
	var send []*outbox.Event
	held := ""
	for _, e := range events {
		switch {
		case held != "" && e.AggregateID == held:
			failed[e.ID] = outbox.ErrHeldBack
		case e.ID == p.poison && !p.cured:
			held = e.AggregateID
			select {
			case <-p.open:
			default:
				if p.failed >= p.failures {
					failed[e.ID] = outbox.ErrHeldBack
					continue
				}
			}
			p.failed++
			failed[e.ID] = errors.New("schema violation")
		default:
			send = append(send, e)
		}
	}
	_ = p.rec.Publish(ctx, send)
	if len(failed) > 0 {
		return &outbox.PublishError{Failed: failed}
	}
	return nil
}

// A poison event is buried after MaxAttempts while every other aggregate
// flows past it; its own aggregate stays held until it is re-queued, then
// it and its successors are delivered in order.
func TestScalePoisonEvent(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		const maxAttempts = 4
		ctx := context.Background()
		n, aggs := scaleSize(store)
		n, aggs = n/10, aggs/4
		held := scaleEvents("scale", 5, 1)
		for _, e := range held {
			e.AggregateID = "poisoned"
		}
		rec := newRecorder()
		open := make(chan struct{})
		pub := &poisonous{rec: rec, failures: maxAttempts - 1, open: open}
		ob := newOutbox(t, store, pub, relayOptions(outbox.WithMaxAttempts(maxAttempts))...)
		saveCommitted(t, db, ob, held...) // saved first: it heads the table
		pub.mu.Lock()
		pub.poison = held[0].ID
		pub.mu.Unlock()
		startRelays(t, 4, store, pub, outbox.WithMaxAttempts(maxAttempts))
		saveAll(t, db, ob, scaleEvents("scale", n, aggs))

		waitFor(t, "the other aggregates, and the poison event to fail", func() bool {
			return rec.count() == n && status(t, store, held[0].ID).Delivery.Attempts > 0
		})
		// They never waited for it: it is still failing, not yet buried
		// (it cannot be before open is closed).
		if d := status(t, store, held[0].ID).Delivery; d.Status() != outbox.StatusPending || d.LastError != "schema violation" {
			t.Fatalf("poison event when the others were delivered: %+v", d)
		}
		close(open)
		waitFor(t, "the poison event to be buried", func() bool {
			return status(t, store, held[0].ID).Delivery.Status() == outbox.StatusDead
		})
		// Its aggregate stays held: several relay passes deliver none of it.
		time.Sleep(200 * time.Millisecond)
		for _, e := range held {
			if rec.has(e.ID) {
				t.Fatalf("event %s of the held aggregate was delivered past the buried one", e.ID)
			}
		}
		if d := status(t, store, held[1].ID).Delivery; d.Status() != outbox.StatusPending || d.Attempts != 0 {
			t.Fatalf("held event: %+v", d)
		}

		pub.mu.Lock()
		pub.cured = true
		pub.mu.Unlock()
		k, err := store.Requeue(ctx, sqlstore.RequeueFilter{IDs: []string{held[0].ID}})
		mustNoErr(t, err, "requeue")
		if k != 1 {
			t.Fatalf("re-queued %d events, want 1", k)
		}
		waitFor(t, "the held aggregate", func() bool { return rec.count() == n+len(held) })
		rec.check(t, n+len(held)) // the re-queued event, then its successors, in order
		// The broker has it; the mark follows the acknowledgement.
		waitFor(t, "the re-queued event to be marked", func() bool {
			return status(t, store, held[0].ID).Delivery.Status() == outbox.StatusSynced
		})
		if d := status(t, store, held[0].ID).Delivery; d.LastError != sqlstore.RequeuedErrorPrefix+"schema violation" {
			t.Fatalf("re-queued event lost its history: %+v", d)
		}
	})
}
