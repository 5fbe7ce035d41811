package natsjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/outbox"
)

func TestPublishBatchInOrderWithWireFormat(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t)
	topic := h.subject + ".inventory"
	var evs []*outbox.Event
	for i := range 50 {
		evs = append(evs, event(topic, fmt.Sprintf("sku-%d", i%4), fmt.Sprintf(`{"n":%d}`, i)))
	}
	evs[0].Headers = map[string]string{"traceparent": "00-abc-def-01", "a:b": "c"}
	evs[1].Payload = []byte{0, 1, 2, 0xff}
	evs[2].Payload = nil
	evs[3].AggregateID = ""
	if err := pub.Publish(context.Background(), evs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msgs := h.messages(t)
	if len(msgs) != len(evs) {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), len(evs))
	}
	for i, m := range msgs {
		want := evs[i]
		if m.Header.Get(HeaderMsgID) != want.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i, m.Header.Get(HeaderMsgID), want.ID)
		}
		got, err := Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("Decode message %d: %v", i, err)
		}
		if got.ID != want.ID || got.Type != want.Type || got.AggregateID != want.AggregateID || got.Topic != topic ||
			!got.CreatedAt.Equal(want.CreatedAt) || string(got.Payload) != string(want.Payload) {
			t.Errorf("message %d decodes to %+v, want %+v", i, got, want)
		}
		if len(want.Headers) > 0 && !mapsEqual(got.Headers, want.Headers) {
			t.Errorf("message %d headers %v, want %v", i, got.Headers, want.Headers)
		}
	}
	if got := msgs[0].Header.Get("header.traceparent"); got != "00-abc-def-01" {
		t.Errorf("header.traceparent = %q", got)
	}
	if got := msgs[0].Header.Get(HeaderCreatedAt); got != evs[0].CreatedAt.UTC().Format("2006-01-02T15:04:05.000000000Z") {
		t.Errorf("created_at = %q", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The relay publishes an event again after a crash between the ack and
// the mark: JetStream acknowledges it as a duplicate, stores nothing, and
// Publish reports success.
func TestRepublishIsDroppedByTheDuplicateWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t)
	evs := []*outbox.Event{event(h.subject+".a", "x", "1"), event(h.subject+".a", "x", "2")}
	ctx := context.Background()
	if err := pub.Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
	again := append(slices.Clone(evs), event(h.subject+".a", "x", "3"))
	if err := pub.Publish(ctx, again); err != nil {
		t.Fatalf("Publish of duplicates: %v, want nil (a duplicate is acknowledged)", err)
	}
	if got, want := h.ids(t), []string{evs[0].ID, evs[1].ID, again[2].ID}; !slices.Equal(got, want) {
		t.Fatalf("stream holds %v, want each ID once: %v", got, want)
	}
}

// Per-event failures map exactly to the events: one subject has no
// stream, one event maps to an invalid subject (permanent, holding back
// its aggregate), one has a header NATS cannot carry.
func TestPerEventFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t, WithAckTimeout(2*time.Second))
	ok1 := event(h.subject+".ok", "a", "1")
	nostream := event("outboxtest-nostream-"+randomHex(t), "b", "2")
	bad := event(h.subject+".ok", "c", "3")
	bad.Topic = h.subject + ".bad subject"
	heldBack := event(h.subject+".ok", "c", "4")
	newline := event(h.subject+".ok", "d", "5")
	newline.Headers = map[string]string{"k": "two\nlines"}
	ok2 := event(h.subject+".ok", "e", "6")
	err := pub.Publish(context.Background(), []*outbox.Event{ok1, nostream, bad, heldBack, newline, ok2})
	failed := failedOf(t, err)
	if len(failed) != 4 {
		t.Fatalf("failed %v, want 4 events", failed)
	}
	if e := failed[nostream.ID]; e == nil || outbox.IsPermanent(e) {
		t.Errorf("no stream: %v, want a transient failure", e)
	}
	if e := failed[bad.ID]; !outbox.IsPermanent(e) {
		t.Errorf("invalid subject: %v, want permanent", e)
	}
	if e := failed[heldBack.ID]; !errors.Is(e, outbox.ErrHeldBack) || outbox.IsPermanent(e) {
		t.Errorf("later event of the failed aggregate: %v, want ErrHeldBack", e)
	}
	if e := failed[newline.ID]; !outbox.IsPermanent(e) || !strings.Contains(e.Error(), "line break") {
		t.Errorf("header with a line break: %v, want permanent", e)
	}
	if got := h.ids(t); !slices.Equal(got, []string{ok1.ID, ok2.ID}) {
		t.Errorf("stream holds %v, want the two good events", got)
	}
}

func TestOversizedEventIsPermanent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t)
	big := event(h.subject+".a", "x", strings.Repeat("x", int(h.nc.MaxPayload())))
	err := pub.Publish(context.Background(), []*outbox.Event{big})
	if e := failedOf(t, err)[big.ID]; !outbox.IsPermanent(e) {
		t.Fatalf("oversized event: %v, want permanent", e)
	}
}

func TestEndedContextSendsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := pub.Publish(ctx, []*outbox.Event{event(h.subject+".a", "x", "1")})
	var pe *outbox.PublishError
	if err == nil || errors.As(err, &pe) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with an ended ctx = %v, want a plain error wrapping context.Canceled", err)
	}
	if n := len(h.ids(t)); n != 0 {
		t.Fatalf("stream holds %d messages", n)
	}
	if err := pub.Publish(context.Background(), nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	if err := pub.Publish(context.Background(), []*outbox.Event{nil}); err == nil {
		t.Fatal("a nil event was accepted")
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Minute)
	pub := h.publisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pub.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	nc2, err := connectAgain(h)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	nc2.Close()
	if err := p2.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed connection succeeded")
	}
	err = p2.Publish(ctx, []*outbox.Event{event(h.subject+".a", "x", "1")})
	if len(failedOf(t, err)) != 1 {
		t.Fatalf("Publish on a closed connection = %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		opts []Option
		want string
	}{
		"nil subject":      {[]Option{WithSubject(nil)}, "WithSubject: the subject function is nil"},
		"short ack":        {[]Option{WithAckTimeout(time.Millisecond)}, "WithAckTimeout: 1ms is shorter than MinAckTimeout (10ms)"},
		"negative ack":     {[]Option{WithAckTimeout(-time.Second)}, "WithAckTimeout: -1s is shorter"},
		"negative pending": {[]Option{WithMaxPending(-1)}, "WithMaxPending: -1 is not positive"},
	} {
		_, err := newConfig(tc.opts)
		if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "natsjs: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: newConfig = %v, want a natsjs: error wrapping ErrInvalidConfig with %q", name, err, tc.want)
		}
	}
	c, err := newConfig([]Option{nil, WithAckTimeout(0), WithMaxPending(0)})
	if err != nil || c.ackTimeout != DefaultAckTimeout || c.maxPending != DefaultMaxPending || c.subject == nil {
		t.Errorf("zero values: %+v, %v; want the defaults", c, err)
	}
	if _, err := New(nil); !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "connection is nil") {
		t.Errorf("New(nil) = %v, want ErrInvalidConfig", err)
	}
	h := newHarness(t, time.Minute)
	if _, err := New(h.nc, WithMaxPending(-5)); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("New with WithMaxPending(-5) = %v, want ErrInvalidConfig", err)
	}
}

// A server that cannot be reached in time is not the message's fault.
func TestUnreachableMarksOnlyConnectionFailures(t *testing.T) {
	for _, err := range []error{nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed} {
		if got := unreachable(fmt.Errorf("publish: %w", err)); !outbox.IsUnavailable(got) {
			t.Errorf("unreachable(%v) not marked unavailable", err)
		}
	}
	if got := unreachable(errors.New("nats: maximum payload exceeded")); outbox.IsUnavailable(got) {
		t.Errorf("a refusal of the message was marked unavailable: %v", got)
	}
}
