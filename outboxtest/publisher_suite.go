package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// PublisherSetup is one publisher under test and the ways TestPublisher
// looks at and acts on its broker. PublisherHarness.New returns one per
// subtest.
type PublisherSetup struct {
	// Publisher is the implementation under test. If it is an io.Closer,
	// the suite closes it in one subtest; the harness may close it again
	// at cleanup.
	Publisher outbox.Publisher

	// Topic returns a topic (stream, queue) for the events of this
	// subtest, created if the broker needs that, and not used by any other
	// subtest; name tells the topics of one subtest apart. Required.
	Topic func(name string) string

	// Read returns the events that reached topic, in the broker's order,
	// decoded as a consumer would: once at least n are there, or when ctx
	// ends with what it found and ctx's error. Where the broker orders
	// only per partition, events of one aggregate must come back in their
	// partition's order. Required.
	Read func(ctx context.Context, topic string, n int) ([]*outbox.Event, error)

	// Refuse makes the broker refuse every event sent to topic, one by one
	// (a Redis key of the wrong type, a Kafka topic that does not exist),
	// and returns that topic. Nil skips the partial-failure test.
	Refuse func(name string) string

	// Down takes the broker away from the publisher (a proxy that drops
	// every connection) and Up gives it back. Nil skips the outage test.
	Down, Up func()
}

// PublisherFeatures says which optional parts of the Publisher contract an
// implementation does not claim. The zero value claims everything.
type PublisherFeatures struct {
	// NoHoldBack: an event that fails before it is sent does not hold
	// back the later events of its aggregate in the batch (they should
	// fail with outbox.ErrHeldBack; an outbox.BatchErrors does this for
	// a publisher that asks it before sending each event).
	NoHoldBack bool
	// NoConcurrentPublish: Publish is not safe for concurrent use.
	NoConcurrentPublish bool
}

// PublisherHarness tells TestPublisher how to make the publisher under
// test.
type PublisherHarness struct {
	// New returns a publisher and its broker for the subtest t, and
	// registers with t.Cleanup whatever releases them. Required.
	New func(t *testing.T) PublisherSetup
	// Features lists the parts of the contract the publisher does not
	// claim.
	Features PublisherFeatures
	// Sequential runs the subtests one after another.
	Sequential bool
}

// TestPublisher runs the outbox.Publisher conformance suite: every event
// of a batch reaches the broker with every field intact and each
// aggregate in slice order, several topics in one batch, a large batch, an
// empty batch, an event without a topic (refused as permanent, without
// holding back other aggregates, holding back its own), partial failure
// (only the refused events reported), an ended context, a broker outage
// and its recovery, concurrent publishers, and Close.
func TestPublisher(t *testing.T, h PublisherHarness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("outboxtest: PublisherHarness.New is nil")
	}
	for _, tc := range publisherTests {
		t.Run(tc.name, func(t *testing.T) {
			if !h.Sequential {
				t.Parallel()
			}
			if tc.skip != nil {
				if why := tc.skip(h.Features); why != "" {
					t.Skipf("not claimed by the publisher: %s", why)
				}
			}
			setup := h.New(t)
			if setup.Publisher == nil || setup.Topic == nil || setup.Read == nil {
				t.Fatal("outboxtest: PublisherSetup needs Publisher, Topic and Read")
			}
			tc.run(&pubT{T: t, setup: setup, features: h.Features})
		})
	}
}

type pubT struct {
	*testing.T
	setup    PublisherSetup
	features PublisherFeatures
	n        int
}

var publisherTests = []struct {
	name string
	skip func(PublisherFeatures) string
	run  func(p *pubT)
}{
	{name: "PublishAndReadBack", run: testPublishAndReadBack},
	{name: "SeveralTopics", run: testSeveralTopics},
	{name: "LargeBatch", run: testLargeBatch},
	{name: "EmptyBatch", run: testEmptyBatch},
	{name: "NoTopicIsPermanent", run: testNoTopic},
	{name: "PartialFailure", run: testPartialFailure},
	{name: "ContextEnded", run: testContextEnded},
	{name: "BrokerOutage", run: testBrokerOutage},
	{name: "Concurrent", skip: func(f PublisherFeatures) string {
		if f.NoConcurrentPublish {
			return "concurrent Publish (PublisherFeatures.NoConcurrentPublish)"
		}
		return ""
	}, run: testConcurrentPublish},
	{name: "Close", run: testClose},
}

func (p *pubT) event(topic, agg string) *outbox.Event {
	p.n++
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       topic,
		Type:        "conformance.published",
		AggregateID: agg,
		Payload:     fmt.Appendf(nil, `{"n":%d}`, p.n),
		CreatedAt:   time.Now().UTC().Truncate(time.Microsecond),
	}
}

// read reads at least n events of topic within 30 seconds.
func (p *pubT) read(topic string, n int) []*outbox.Event {
	p.Helper()
	ctx, cancel := context.WithTimeout(p.Context(), 30*time.Second)
	defer cancel()
	got, err := p.setup.Read(ctx, topic, n)
	if err != nil {
		p.Fatalf("read %d events of %s: %v (got %d)", n, topic, err, len(got))
	}
	if len(got) < n {
		p.Fatalf("read %d events of %s, want at least %d", len(got), topic, n)
	}
	return got
}

// failedIDs returns what err says was not acknowledged: nil for nil, the
// keys of a *PublishError, or every event for any other error.
func failedIDs(events []*outbox.Event, err error) map[string]error {
	if err == nil {
		return nil
	}
	var pe *outbox.PublishError
	if errors.As(err, &pe) {
		return pe.Failed
	}
	all := map[string]error{}
	for _, e := range events {
		all[e.ID] = err
	}
	return all
}

// samePerAggregate checks that got holds exactly want (by ID, duplicates
// dropped) with every aggregate's events in want's order, and each event
// intact.
func samePerAggregate(t testing.TB, got, want []*outbox.Event) {
	t.Helper()
	byID := map[string]*outbox.Event{}
	seq := map[string][]string{}
	for _, e := range got {
		if _, dup := byID[e.ID]; dup {
			continue
		}
		byID[e.ID] = e
		seq[e.AggregateID] = append(seq[e.AggregateID], e.ID)
	}
	wantSeq := map[string][]string{}
	for _, e := range want {
		g := byID[e.ID]
		if g == nil {
			t.Fatalf("event %s (aggregate %q) did not reach the broker", e.ID, e.AggregateID)
		}
		sameEvent(t, "event read back", g, e)
		wantSeq[e.AggregateID] = append(wantSeq[e.AggregateID], e.ID)
	}
	if len(byID) != len(want) {
		t.Fatalf("the broker holds %d distinct events, want %d", len(byID), len(want))
	}
	for agg, ids := range wantSeq {
		if agg == "" {
			continue // no aggregate, no order
		}
		if !slices.Equal(seq[agg], ids) {
			t.Fatalf("aggregate %q reached the broker as %v, want %v", agg, seq[agg], ids)
		}
	}
}

// Every field survives the trip, and each aggregate keeps slice order.
func testPublishAndReadBack(p *pubT) {
	topic := p.setup.Topic("main")
	var events []*outbox.Event
	for i := range 30 {
		e := p.event(topic, []string{"a", "b", "c", ""}[i%4])
		switch i % 5 {
		case 0:
			e.Payload = []byte{0, 1, 2, 0xff, 0xfe, '\r', '\n', '"'}
		case 1:
			e.Payload = []byte{}
		case 2:
			e.Headers = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "ünïcode"}
		case 3:
			e.Headers = map[string]string{"empty": ""}
		}
		events = append(events, e)
	}
	if err := p.setup.Publisher.Publish(p.Context(), events); err != nil {
		p.Fatalf("Publish: %v", err)
	}
	samePerAggregate(p.T, p.read(topic, len(events)), events)
}

// One batch may span topics; each gets its own events.
func testSeveralTopics(p *pubT) {
	t1, t2 := p.setup.Topic("one"), p.setup.Topic("two")
	var one, two, all []*outbox.Event
	for i := range 10 {
		e1, e2 := p.event(t1, "x"), p.event(t2, fmt.Sprint("y", i%2))
		one, two = append(one, e1), append(two, e2)
		all = append(all, e1, e2)
	}
	if err := p.setup.Publisher.Publish(p.Context(), all); err != nil {
		p.Fatalf("Publish: %v", err)
	}
	samePerAggregate(p.T, p.read(t1, len(one)), one)
	samePerAggregate(p.T, p.read(t2, len(two)), two)
}

// A batch as large as a relay's default batch ten times over.
func testLargeBatch(p *pubT) {
	topic := p.setup.Topic("large")
	events := make([]*outbox.Event, 1000)
	for i := range events {
		events[i] = p.event(topic, fmt.Sprint("agg-", i%7))
	}
	if err := p.setup.Publisher.Publish(p.Context(), events); err != nil {
		p.Fatalf("Publish: %v", err)
	}
	samePerAggregate(p.T, p.read(topic, len(events)), events)
}

func testEmptyBatch(p *pubT) {
	if err := p.setup.Publisher.Publish(p.Context(), nil); err != nil {
		p.Fatalf("Publish(nil) = %v, want nil", err)
	}
	if err := p.setup.Publisher.Publish(p.Context(), []*outbox.Event{}); err != nil {
		p.Fatalf("Publish(empty) = %v, want nil", err)
	}
}

// An event with no topic cannot be sent by any retry: it fails as
// permanent, holds back the later events of its aggregate, and does not
// stop the other aggregates.
func testNoTopic(p *pubT) {
	topic := p.setup.Topic("main")
	before, bad, after, other := p.event(topic, "a"), p.event("", "b"), p.event(topic, "b"), p.event(topic, "c")
	batch := []*outbox.Event{before, bad, after, other}
	err := p.setup.Publisher.Publish(p.Context(), batch)
	failed := failedIDs(batch, err)
	ferr, ok := failed[bad.ID]
	if !ok {
		p.Fatalf("Publish of an event without a topic: err = %v, which does not name it", err)
	}
	if !outbox.IsPermanent(ferr) {
		p.Errorf("the failure of an event without a topic is %v, not marked outbox.Permanent", ferr)
	}
	var pe *outbox.PublishError
	if !errors.As(err, &pe) {
		p.Logf("a whole-batch error (%v) for one bad event: nothing counts as acknowledged", err)
		return
	}
	if !p.features.NoHoldBack {
		if _, held := failed[after.ID]; !held {
			p.Errorf("event %s was acknowledged although the earlier event %s of its aggregate failed (want outbox.ErrHeldBack)", after.ID, bad.ID)
		} else if !errors.Is(failed[after.ID], outbox.ErrHeldBack) {
			p.Logf("held-back event failed with %v (outbox.ErrHeldBack, as outbox.BatchErrors reports it, lets the relay give it back without an attempt)", failed[after.ID])
		}
	}
	var acked []*outbox.Event
	for _, e := range []*outbox.Event{before, other} {
		if _, f := failed[e.ID]; f {
			p.Errorf("event %s of another aggregate failed because of the event without a topic: %v", e.ID, failed[e.ID])
			continue
		}
		acked = append(acked, e)
	}
	got := p.read(topic, len(acked))
	for _, e := range got {
		if e.ID == bad.ID {
			p.Fatal("the event without a topic reached the broker")
		}
	}
}

// Events the broker refuses one by one are the only ones reported.
func testPartialFailure(p *pubT) {
	if p.setup.Refuse == nil {
		p.Skip("not claimed by the harness: partial failure (PublisherSetup.Refuse is nil)")
	}
	good, refused := p.setup.Topic("good"), p.setup.Refuse("refused")
	ok1, bad, ok2 := p.event(good, "a"), p.event(refused, "b"), p.event(good, "c")
	batch := []*outbox.Event{ok1, bad, ok2}
	err := p.setup.Publisher.Publish(p.Context(), batch)
	var pe *outbox.PublishError
	if !errors.As(err, &pe) {
		p.Fatalf("Publish with one refused event: err = %v, want an *outbox.PublishError", err)
	}
	if len(pe.Failed) != 1 || pe.Failed[bad.ID] == nil {
		p.Fatalf("PublishError names %v, want only %s", slices.Collect(maps.Keys(pe.Failed)), bad.ID)
	}
	samePerAggregate(p.T, p.read(good, 2), []*outbox.Event{ok1, ok2})
}

// A context that has ended fails the publish; nothing is claimed as
// acknowledged.
func testContextEnded(p *pubT) {
	topic := p.setup.Topic("main")
	e := p.event(topic, "a")
	err := p.setup.Publisher.Publish(cancelled(p.Context()), []*outbox.Event{e})
	if err == nil {
		p.Fatal("Publish with an ended context returned nil")
	}
	if _, ok := failedIDs([]*outbox.Event{e}, err)[e.ID]; !ok {
		p.Fatalf("Publish with an ended context returned %v, which does not fail the event", err)
	}
	// The publisher still works afterwards.
	next := p.event(topic, "b")
	if err := p.setup.Publisher.Publish(p.Context(), []*outbox.Event{next}); err != nil {
		p.Fatalf("Publish after a cancelled one: %v", err)
	}
}

// While the broker is away Publish fails (never a false acknowledgement);
// once it is back Publish succeeds again and the events arrive.
func testBrokerOutage(p *pubT) {
	if p.setup.Down == nil || p.setup.Up == nil {
		p.Skip("not claimed by the harness: broker outage (PublisherSetup.Down or Up is nil)")
	}
	topic := p.setup.Topic("main")
	first := p.event(topic, "a")
	if err := p.setup.Publisher.Publish(p.Context(), []*outbox.Event{first}); err != nil {
		p.Fatalf("Publish before the outage: %v", err)
	}
	p.setup.Down()
	restored := false
	defer func() {
		if !restored {
			p.setup.Up()
		}
	}()
	during := []*outbox.Event{p.event(topic, "a"), p.event(topic, "b")}
	ctx, cancel := context.WithTimeout(p.Context(), 10*time.Second)
	err := p.setup.Publisher.Publish(ctx, during)
	cancel()
	if err == nil {
		p.Fatal("Publish while the broker is down returned nil")
	}
	if f := failedIDs(during, err); len(f) != len(during) {
		p.Fatalf("Publish while the broker is down acknowledged some events: %v", err)
	}
	p.setup.Up()
	restored = true
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.Context(), 5*time.Second)
		err := p.setup.Publisher.Publish(ctx, during)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.Fatalf("Publish still fails 30s after the broker came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Retries may have left duplicates (same IDs); order holds after
	// dropping them.
	want := append([]*outbox.Event{first}, during...)
	got := p.read(topic, len(want))
	samePerAggregate(p.T, got, want)
}

// Publish is safe for concurrent use, and each caller's aggregate keeps
// its order.
func testConcurrentPublish(p *pubT) {
	topic := p.setup.Topic("main")
	const workers, batches, size = 8, 20, 5
	var mu sync.Mutex
	var want []*outbox.Event
	var errs []error
	var wg sync.WaitGroup
	for w := range workers {
		batchesOf := make([][]*outbox.Event, batches)
		for b := range batchesOf {
			for range size {
				batchesOf[b] = append(batchesOf[b], p.event(topic, fmt.Sprint("worker-", w)))
			}
			want = append(want, batchesOf[b]...)
		}
		wg.Go(func() {
			for _, batch := range batchesOf {
				if err := p.setup.Publisher.Publish(p.Context(), batch); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		p.Fatalf("concurrent Publish: %v", errors.Join(errs...))
	}
	samePerAggregate(p.T, p.read(topic, len(want)), want)
}

// A publisher that owns resources closes them: Close returns nil, a
// second Close does no harm, and Publish after Close fails.
func testClose(p *pubT) {
	c, ok := p.setup.Publisher.(io.Closer)
	if !ok {
		p.Skipf("%T has no Close: it owns nothing to release", p.setup.Publisher)
	}
	topic := p.setup.Topic("main")
	if err := p.setup.Publisher.Publish(p.Context(), []*outbox.Event{p.event(topic, "a")}); err != nil {
		p.Fatalf("Publish: %v", err)
	}
	if err := c.Close(); err != nil {
		p.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		p.Fatalf("second Close: %v", err)
	}
	if err := p.setup.Publisher.Publish(p.Context(), []*outbox.Event{p.event(topic, "a")}); err == nil {
		p.Fatal("Publish after Close returned nil")
	}
}
