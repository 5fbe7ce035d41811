package redisstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/redis/go-redis/v9"
)

func newPublisher(t testing.TB, c redis.UniversalClient, opts ...Option) *Publisher {
	t.Helper()
	p, err := New(c, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

var testTime = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// event returns a valid event for topic, with a fresh ID.
func event(topic, aggregate string) *outbox.Event {
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       topic,
		Type:        "stock.updated",
		AggregateID: aggregate,
		Payload:     []byte(`{"qty":1}`),
		CreatedAt:   testTime,
	}
}

// readStream returns the events of a stream, decoded, in stream order,
// with Topic set to the stream key.
func readStream(t testing.TB, c redis.UniversalClient, key string) []*outbox.Event {
	t.Helper()
	msgs, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	out := make([]*outbox.Event, 0, len(msgs))
	for _, m := range msgs {
		e, err := Decode(m.Values)
		if err != nil {
			t.Fatalf("Decode entry %s of %s: %v", m.ID, key, err)
		}
		e.Topic = key
		out = append(out, e)
	}
	return out
}

func ids(events []*outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func sameEvent(a, b *outbox.Event) bool {
	return a.ID == b.ID && a.Topic == b.Topic && a.Type == b.Type && a.AggregateID == b.AggregateID &&
		bytes.Equal(a.Payload, b.Payload) && maps.Equal(a.Headers, b.Headers) && a.CreatedAt.Equal(b.CreatedAt)
}

func TestPublishRoundTrip(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		stream := h.key("inventory")
		full := &outbox.Event{
			ID:          "evt-1",
			Topic:       stream,
			Type:        "stock.updated",
			AggregateID: "sku-42",
			Payload:     []byte{0x00, 'a', 0xff, 0xfe, 0x00, 0xc3, 0x28, '\r', '\n', 0x00},
			Headers: map[string]string{
				"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"tenant":      "acme",
				"note":        "héllo, ✓",
				"empty":       "",
			},
			CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600)),
		}
		bare := &outbox.Event{ID: "evt-2", Topic: stream, Type: "stock.reset", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
		pub := newPublisher(t, h.client)
		if err := pub.Publish(ctx, []*outbox.Event{full, bare}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		got := readStream(t, h.client, stream)
		if len(got) != 2 {
			t.Fatalf("stream has %d entries, want 2", len(got))
		}
		for i, want := range []*outbox.Event{full, bare} {
			if !sameEvent(got[i], want) {
				t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], want)
			}
			if got[i].CreatedAt.Location() != time.UTC {
				t.Errorf("entry %d: CreatedAt in %v, want UTC", i, got[i].CreatedAt.Location())
			}
		}
		if got[1].Payload != nil || got[1].Headers != nil {
			t.Errorf("bare event: payload %q headers %v, want nil and nil", got[1].Payload, got[1].Headers)
		}
	})
}

// TestWireFormat pins what a consumer in any language reads: the field
// names, their order and the exact value text.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		stream := h.key("wire")
		e := &outbox.Event{
			ID: "0190a6e4-0000-7000-8000-000000000001", Topic: stream, Type: "stock.updated", AggregateID: "sku-42",
			Payload:   []byte("p\x00q"),
			Headers:   map[string]string{"b": "2", "a": "1", "traceparent": "t"},
			CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 120000000, time.UTC),
		}
		if err := newPublisher(t, h.client).Publish(ctx, []*outbox.Event{e}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		raw, err := h.client.Do(ctx, "XRANGE", stream, "-", "+").Slice()
		if err != nil || len(raw) != 1 {
			t.Fatalf("XRANGE: %v, %d entries", err, len(raw))
		}
		entry := raw[0].([]any)
		var got []string
		for _, v := range entry[1].([]any) {
			got = append(got, v.(string))
		}
		want := []string{
			"id", "0190a6e4-0000-7000-8000-000000000001",
			"type", "stock.updated",
			"aggregate_id", "sku-42",
			"created_at", "2025-01-02T03:04:05.120000000Z",
			"payload", "p\x00q",
			"header:a", "1",
			"header:b", "2",
			"header:traceparent", "t",
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("fields:\n got %q\nwant %q", got, want)
		}
	})
}

func TestPublishOrderAcrossStreams(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		const n, streams, aggregates = 1000, 5, 20
		events := make([]*outbox.Event, n)
		want := map[string][]string{}
		for i := range events {
			key := h.key(fmt.Sprintf("s%d", (i*7)%streams))
			events[i] = event(key, fmt.Sprintf("agg-%d", i%aggregates))
			events[i].Headers = map[string]string{"seq": fmt.Sprint(i)}
			want[key] = append(want[key], events[i].ID)
		}
		if err := newPublisher(t, h.client).Publish(context.Background(), events); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		total := 0
		for key, wantIDs := range want {
			got := ids(readStream(t, h.client, key))
			total += len(got)
			if fmt.Sprint(got) != fmt.Sprint(wantIDs) {
				t.Errorf("stream %s: entries not in batch order (%d entries, want %d)", key, len(got), len(wantIDs))
			}
		}
		if total != n {
			t.Errorf("%d entries in all streams, want %d", total, n)
		}
	})
}

func TestPublishPartialFailure(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		good, bad := h.key("good"), h.key("not-a-stream")
		if err := h.client.Set(ctx, bad, "a string", 0).Err(); err != nil {
			t.Fatal(err)
		}
		events := []*outbox.Event{event(good, "a"), event(good, "b"), event(bad, "a"), event(good, "c")}
		err := newPublisher(t, h.client).Publish(ctx, events)

		var pe *outbox.PublishError
		if !errors.As(err, &pe) {
			t.Fatalf("Publish = %v, want a *outbox.PublishError", err)
		}
		if len(pe.Failed) != 1 || pe.Failed[events[2].ID] == nil {
			t.Fatalf("Failed = %v, want only %s", pe.Failed, events[2].ID)
		}
		ferr := pe.Failed[events[2].ID]
		if !strings.HasPrefix(ferr.Error(), "redisstream: ") || !strings.Contains(ferr.Error(), "WRONGTYPE") {
			t.Errorf("failure = %q, want a redisstream: prefix and the WRONGTYPE reply", ferr)
		}
		if !isReply(ferr) {
			t.Errorf("failure %q does not wrap the Redis reply", ferr)
		}
		if outbox.IsPermanent(ferr) {
			t.Errorf("WRONGTYPE marked permanent; an operator can fix the key, so it must be retried")
		}
		got := ids(readStream(t, h.client, good))
		want := []string{events[0].ID, events[1].ID, events[3].ID}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("good stream = %v, want %v", got, want)
		}
		if v, _ := h.client.Get(ctx, bad).Result(); v != "a string" {
			t.Errorf("the string key was changed to %q", v)
		}
	})
}

func TestPublishMaxLen(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		const maxLen = 50
		stream := h.key("trimmed")
		pub := newPublisher(t, h.client, WithMaxLen(maxLen))
		var last *outbox.Event
		for range 10 {
			batch := make([]*outbox.Event, 100)
			for i := range batch {
				batch[i] = event(stream, "a")
			}
			if err := pub.Publish(ctx, batch); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			last = batch[len(batch)-1]
		}
		n, err := h.client.XLen(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		// "~" lets Redis keep up to a macro node (stream-node-max-entries,
		// 100 by default) more than asked, never fewer.
		if n < maxLen || n > maxLen+100 {
			t.Errorf("XLEN = %d after 1000 events, want between %d and %d", n, maxLen, maxLen+100)
		}
		msgs, err := h.client.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil || len(msgs) != 1 || msgs[0].Values[FieldID] != last.ID {
			t.Errorf("newest entry = %v (%v), want the last event published", msgs, err)
		}

		untrimmed := h.key("untrimmed")
		batch := make([]*outbox.Event, 300)
		for i := range batch {
			batch[i] = event(untrimmed, "a")
		}
		if err := newPublisher(t, h.client).Publish(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if n, _ := h.client.XLen(ctx, untrimmed).Result(); n != 300 {
			t.Errorf("without WithMaxLen XLEN = %d, want 300", n)
		}
	})
}

func TestPublishWithStream(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		pub := newPublisher(t, h.client, WithStream(func(e *outbox.Event) string {
			return h.key("by-type:" + e.Type)
		}))
		a, b, c := event("ignored", "1"), event("ignored", "1"), event("ignored", "2")
		b.Type = "stock.reserved"
		if err := pub.Publish(ctx, []*outbox.Event{a, b, c}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if got := ids(readStream(t, h.client, h.key("by-type:stock.updated"))); fmt.Sprint(got) != fmt.Sprint([]string{a.ID, c.ID}) {
			t.Errorf("stock.updated stream = %v, want %v", got, []string{a.ID, c.ID})
		}
		if got := ids(readStream(t, h.client, h.key("by-type:stock.reserved"))); fmt.Sprint(got) != fmt.Sprint([]string{b.ID}) {
			t.Errorf("stock.reserved stream = %v, want %v", got, []string{b.ID})
		}
		if n, _ := h.client.Exists(ctx, "ignored").Result(); n != 0 {
			t.Errorf("the topic was used as a key despite WithStream")
		}
	})
}

func TestPublishEmptyStreamKeyIsPermanent(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ok := event(h.key("ok"), "a")
		lost := event("", "a")
		err := newPublisher(t, h.client).Publish(context.Background(), []*outbox.Event{ok, lost})
		var pe *outbox.PublishError
		if !errors.As(err, &pe) || len(pe.Failed) != 1 || !outbox.IsPermanent(pe.Failed[lost.ID]) {
			t.Fatalf("Publish = %v, want a PublishError with only %s, permanent", err, lost.ID)
		}
		if got := ids(readStream(t, h.client, h.key("ok"))); len(got) != 1 || got[0] != ok.ID {
			t.Errorf("ok stream = %v, want [%s]", got, ok.ID)
		}

		err = newPublisher(t, h.client).Publish(context.Background(), []*outbox.Event{lost})
		if !errors.As(err, &pe) || len(pe.Failed) != 1 || !outbox.IsPermanent(pe.Failed[lost.ID]) {
			t.Fatalf("Publish of the lone event = %v, want a permanent PublishError", err)
		}
	})
}

// wantWholeFailure checks that err fails every event of the batch: it is
// non-nil and not a PublishError, which could acknowledge some of them.
func wantWholeFailure(t *testing.T, err error) {
	t.Helper()
	var pe *outbox.PublishError
	switch {
	case err == nil:
		t.Fatal("Publish = nil, want the whole batch failed")
	case errors.As(err, &pe):
		t.Fatalf("Publish = %v, a PublishError; want the whole batch failed", err)
	case !strings.HasPrefix(err.Error(), "redisstream: "):
		t.Errorf("error %q lacks the redisstream: prefix", err)
	case outbox.IsPermanent(err):
		t.Errorf("error %q marked permanent", err)
	}
}

func TestPublishRedisDown(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		proxy, err := testproxy.Start(h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		client := h.newClient(t, proxy.Addr(), func(o *redis.Options) {
			o.DialTimeout = time.Second
			o.ReadTimeout = time.Second
			o.WriteTimeout = time.Second
		})
		pub := newPublisher(t, client)
		ctx := context.Background()
		stream := h.key("flaky")

		first := []*outbox.Event{event(stream, "a")}
		if err := pub.Publish(ctx, first); err != nil {
			t.Fatalf("Publish before the cut: %v", err)
		}

		if err := pub.Ping(ctx); err != nil {
			t.Fatalf("Ping before the cut: %v", err)
		}
		proxy.Cut()
		if err := pub.Ping(ctx); err == nil {
			t.Fatal("Ping succeeded while Redis was unreachable")
		}
		batch := []*outbox.Event{event(stream, "a"), event(stream, "b"), event(stream, "c")}
		err = pub.Publish(ctx, batch)
		t.Logf("while cut: %v", err)
		wantWholeFailure(t, err)
		if got := ids(readStream(t, h.client, stream)); fmt.Sprint(got) != fmt.Sprint(ids(first)) {
			t.Fatalf("stream = %v while Redis was unreachable, want only %v", got, ids(first))
		}

		proxy.Restore()
		if err := pub.Ping(ctx); err != nil {
			t.Fatalf("Ping after Restore: %v", err)
		}
		if err := pub.Publish(ctx, batch); err != nil {
			t.Fatalf("Publish after Restore: %v", err)
		}
		want := append(ids(first), ids(batch)...)
		if got := ids(readStream(t, h.client, stream)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("stream = %v, want %v", got, want)
		}
	})
}

func TestPublishCancelledContext(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		stream := h.key("cancelled")
		err := newPublisher(t, h.client).Publish(ctx, []*outbox.Event{event(stream, "a"), event(stream, "b")})
		wantWholeFailure(t, err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
		if n, _ := h.client.Exists(context.Background(), stream).Result(); n != 0 {
			t.Errorf("a cancelled Publish wrote to the stream")
		}
	})
}

// TestPublishDeadlineInFlight: the deadline passes while the batch is on
// the wire. Redis may well apply it, but nobody saw the reply, so no event
// may count as acknowledged.
func TestPublishDeadlineInFlight(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		proxy, err := testproxy.Start(h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		client := h.newClient(t, proxy.Addr(), func(o *redis.Options) { o.ContextTimeoutEnabled = true })
		if err := client.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		proxy.SetDelay(300 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		stream := h.key("slow")
		err = newPublisher(t, client).Publish(ctx, []*outbox.Event{event(stream, "a"), event(stream, "b")})
		t.Logf("past the deadline: %v", err)
		wantWholeFailure(t, err)
		var ne net.Error
		if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("error %v is neither the deadline nor a timeout", err)
		}
	})
}

func TestPublishLeavesClientOpen(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		pub := newPublisher(t, h.client)
		_ = pub.Publish(ctx, []*outbox.Event{event(h.key("s"), "a")})
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		_ = pub.Publish(cancelled, []*outbox.Event{event(h.key("s"), "a")})
		_ = pub.Publish(ctx, []*outbox.Event{event("", "a")})
		if err := h.client.Ping(ctx).Err(); err != nil {
			t.Fatalf("client unusable after Publish: %v", err)
		}
		if err := pub.Publish(ctx, []*outbox.Event{event(h.key("s"), "a")}); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	})
}

// pipelineCounter counts the pipelines of XADDs a client sends (not those
// go-redis sends itself to set a new connection up).
type pipelineCounter struct{ n atomic.Int64 }

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "xadd" {
			c.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func TestPublishOneRoundTrip(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		client := h.newClient(t, h.addr, nil)
		var count pipelineCounter
		client.AddHook(&count)
		pub := newPublisher(t, client)
		ctx := context.Background()

		for _, batch := range [][]*outbox.Event{nil, {}} {
			if err := pub.Publish(ctx, batch); err != nil {
				t.Errorf("Publish(%v) = %v, want nil", batch, err)
			}
		}
		if n := count.n.Load(); n != 0 {
			t.Errorf("an empty batch sent %d pipelines", n)
		}

		err := pub.Publish(ctx, []*outbox.Event{event(h.key("s"), "a"), nil})
		if err == nil || !strings.Contains(err.Error(), "nil") {
			t.Errorf("Publish with a nil event = %v, want an error", err)
		}
		if n := count.n.Load(); n != 0 {
			t.Errorf("a batch with a nil event sent %d pipelines", n)
		}

		batch := make([]*outbox.Event, 250)
		for i := range batch {
			batch[i] = event(h.key(fmt.Sprint("s", i%3)), "a")
		}
		if err := pub.Publish(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if n := count.n.Load(); n != 1 {
			t.Errorf("a batch of 250 took %d pipelines, want 1", n)
		}
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	h := miniHarness(t)
	var typedNil *redis.Client
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		opts   []Option
		want   string // in the error; "" for success
	}{
		{"defaults", h.client, nil, ""},
		{"all options", h.client, []Option{WithMaxLen(10), WithStream(StreamByTopic)}, ""},
		{"max len zero", h.client, []Option{WithMaxLen(0)}, ""},
		{"nil option ignored", h.client, []Option{nil}, ""},
		{"nil client", nil, nil, "client is nil"},
		{"typed nil client", typedNil, nil, "client is nil"},
		{"negative max len", h.client, []Option{WithMaxLen(-1)}, "MaxLen is -1"},
		{"nil stream func", h.client, []Option{WithStream(nil)}, "WithStream"},
		{"unknown codec", h.client, []Option{WithCompression("lz4", 0)}, `WithCompression: unknown codec "lz4"`},
		{"negative threshold", h.client, []Option{WithCompression(Gzip, -1)}, "WithCompression: threshold -1 is negative"},
		{"short dedup window", h.client, []Option{WithIdempotence(time.Millisecond)}, "WithIdempotence: window 1ms is shorter than MinDedupWindow (1s)"},
		{"braced dedup prefix", h.client, []Option{WithDedupKeyPrefix("a{b}")}, "WithDedupKeyPrefix"},
		{"later option wins", h.client, []Option{WithStream(nil), WithStream(StreamByTopic), WithMaxLen(-1), WithMaxLen(5)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.client, tc.opts...)
			if tc.want == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, outbox.ErrInvalidConfig) ||
				!strings.HasPrefix(err.Error(), "redisstream: ") {
				t.Fatalf("New = %v, want a redisstream: error wrapping ErrInvalidConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestPublishConcurrent(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		pub := newPublisher(t, h.client, WithMaxLen(1000))
		const workers, batches, size = 8, 5, 50
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				stream := h.key(fmt.Sprint("w", w))
				var err error
				for range batches {
					batch := make([]*outbox.Event, size)
					for i := range batch {
						batch[i] = event(stream, "a")
					}
					if err = pub.Publish(context.Background(), batch); err != nil {
						break
					}
				}
				errs <- err
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Errorf("Publish: %v", err)
			}
		}
		for w := range workers {
			if n, _ := h.client.XLen(context.Background(), h.key(fmt.Sprint("w", w))).Result(); n != batches*size {
				t.Errorf("stream w%d has %d entries, want %d", w, n, batches*size)
			}
		}
	})
}

// A connection dropped mid-batch is not the events' fault: the events that
// were not acknowledged are marked outbox.Unavailable, so the relay neither
// buries them nor backs them off, while a Redis reply stays an ordinary
// failure of its event.
func TestReplyErrorMarksOnlyConnectionFailures(t *testing.T) {
	t.Parallel()
	var wrongType error = replyErr("WRONGTYPE Operation against a key holding the wrong kind of value")
	if err := replyError(wrongType); outbox.IsUnavailable(err) {
		t.Errorf("a Redis reply %v was marked unavailable", err)
	}
	if err := replyError(io.ErrUnexpectedEOF); !outbox.IsUnavailable(err) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a dropped connection %v was not marked unavailable", err)
	}
	for _, reply := range []string{"OOM command not allowed when used memory > 'maxmemory'.", "READONLY You can't write against a read only replica.", "LOADING Redis is loading the dataset in memory", "NOPERM this user has no permissions"} {
		if err := replyError(fmt.Errorf("XADD s: %w", replyErr(reply))); !outbox.IsUnavailable(err) {
			t.Errorf("server-state reply %q not marked unavailable", reply)
		}
	}
}

// replyErr is an error reply as go-redis reports it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}
