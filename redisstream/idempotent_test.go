package redisstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/redis/go-redis/v9"
)

// A relay that publishes a batch again (a crash between the reply and the
// mark) adds no entry: every event of the second Publish is acknowledged,
// and the stream holds each ID once.
func TestIdempotentRepublishAddsNothing(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		pub := newPublisher(t, h.client, WithIdempotence(time.Minute), WithDedupKeyPrefix(h.key("dedup:")))
		s1, s2 := h.key("orders"), h.key("orders{eu}")
		first := []*outbox.Event{event(s1, "a"), event(s2, "b"), event(s1, "a")}
		if err := pub.Publish(ctx, first); err != nil {
			t.Fatalf("first Publish: %v", err)
		}
		second := append(slices.Clone(first), event(s1, "a"))
		if err := pub.Publish(ctx, second); err != nil {
			t.Fatalf("Publish of duplicates = %v, want nil (a suppressed duplicate is acknowledged)", err)
		}
		if got, want := ids(readStream(t, h.client, s1)), []string{first[0].ID, first[2].ID, second[3].ID}; !slices.Equal(got, want) {
			t.Errorf("stream %s holds %v, want %v", s1, got, want)
		}
		if got, want := ids(readStream(t, h.client, s2)), []string{first[1].ID}; !slices.Equal(got, want) {
			t.Errorf("stream %s holds %v, want %v", s2, got, want)
		}
		// The entries are the wire format, byte for byte as without the option.
		got := readStream(t, h.client, s1)[0]
		if !sameEvent(got, first[0]) {
			t.Errorf("entry decodes to %+v, want %+v", got, first[0])
		}
		// The dedup key holds the entry ID and expires after the window.
		key := DedupKey(h.key("dedup:"), s1, first[0].ID)
		if !strings.Contains(key, "{"+s1+"}") {
			t.Errorf("dedup key %q lacks the stream's hash tag", key)
		}
		entries, _ := h.client.XRange(ctx, s1, "-", "+").Result()
		if v, err := h.client.Get(ctx, key).Result(); err != nil || v != entries[0].ID {
			t.Errorf("dedup key %s = %q, %v; want the entry ID %s", key, v, err, entries[0].ID)
		}
		if ttl, err := h.client.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
			t.Errorf("dedup key TTL %v, %v; want within the minute's window", ttl, err)
		}
	})
}

// With compression and trimming on, the script adds the same entry as
// XADD would.
func TestIdempotentKeepsOtherOptions(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		s := h.key("s")
		pub := newPublisher(t, h.client, WithIdempotence(0), WithDedupKeyPrefix(h.key("d:")),
			WithMaxLen(1000), WithCompression(Gzip, 10))
		e := event(s, "a")
		e.Payload = []byte(strings.Repeat("compress me ", 100))
		e.Headers = map[string]string{"traceparent": "00-1-2-01"}
		for range 2 {
			if err := pub.Publish(ctx, []*outbox.Event{e}); err != nil {
				t.Fatal(err)
			}
		}
		got := readStream(t, h.client, s)
		if len(got) != 1 || !sameEvent(got[0], e) || got[0].Headers["traceparent"] != "00-1-2-01" {
			t.Fatalf("stream holds %+v, want the event once", got)
		}
		msgs, _ := h.client.XRange(ctx, s, "-", "+").Result()
		if msgs[0].Values[FieldContentEncoding] != string(Gzip) {
			t.Errorf("entry fields %v, want a gzip payload", msgs[0].Values)
		}
	})
}

// An event whose script fails (the stream key holds a string) fails
// alone, records no dedup key, and is added by the retry once the key is
// fixed.
func TestIdempotentPartialFailure(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		prefix := h.key("d:")
		pub := newPublisher(t, h.client, WithIdempotence(time.Minute), WithDedupKeyPrefix(prefix))
		good, bad := h.key("good"), h.key("bad")
		if err := h.client.Set(ctx, bad, "not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
		evs := []*outbox.Event{event(good, "a"), event(bad, "b"), event(good, "c")}
		err := pub.Publish(ctx, evs)
		var pe *outbox.PublishError
		if !errors.As(err, &pe) || len(pe.Failed) != 1 || pe.Failed[evs[1].ID] == nil {
			t.Fatalf("Publish = %v, want a PublishError naming %s alone", err, evs[1].ID)
		}
		if outbox.IsPermanent(pe.Failed[evs[1].ID]) || !strings.Contains(pe.Failed[evs[1].ID].Error(), "WRONGTYPE") {
			t.Errorf("failure %v, want a transient WRONGTYPE", pe.Failed[evs[1].ID])
		}
		if n, _ := h.client.Exists(ctx, DedupKey(prefix, bad, evs[1].ID)).Result(); n != 0 {
			t.Fatal("a failed XADD left a dedup key: its retry would be dropped")
		}
		if err := h.client.Del(ctx, bad).Err(); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, evs); err != nil {
			t.Fatalf("retry: %v", err)
		}
		if got := ids(readStream(t, h.client, bad)); !slices.Equal(got, []string{evs[1].ID}) {
			t.Errorf("after the retry %s holds %v", bad, got)
		}
		if got := ids(readStream(t, h.client, good)); !slices.Equal(got, []string{evs[0].ID, evs[2].ID}) {
			t.Errorf("after the retry %s holds %v", good, got)
		}
		empty := event("", "x")
		if err := pub.Publish(ctx, []*outbox.Event{empty}); !errors.As(err, &pe) || !outbox.IsPermanent(pe.Failed[empty.ID]) {
			t.Errorf("empty stream key: %v, want permanent", err)
		}
	})
}

// scriptCounter counts the pipelines of scripts a client sends and the
// EVAL and EVALSHA commands in them.
type scriptCounter struct{ pipelines, evals, evalshas atomic.Int64 }

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		scripts := false
		for _, cmd := range cmds {
			switch cmd.Name() {
			case "eval":
				c.evals.Add(1)
				scripts = true
			case "evalsha":
				c.evalshas.Add(1)
				scripts = true
			}
		}
		if scripts {
			c.pipelines.Add(1)
		}
		return next(ctx, cmds)
	}
}

// A batch is one round trip of EVALs, on a server that never saw the
// script (miniredis starts without it) and after its script cache was
// flushed alike: no EVALSHA, so no NOSCRIPT to recover from, which could
// reorder a stream (see publishIdempotent).
func TestIdempotentOneRoundTripWithoutScriptCache(t *testing.T) {
	t.Parallel()
	h := miniHarness(t)
	var count scriptCounter
	h.client.AddHook(&count)
	pub := newPublisher(t, h.client, WithIdempotence(time.Minute))
	ctx := context.Background()
	for round := range 3 {
		if round == 2 {
			if err := h.client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		batch := make([]*outbox.Event, 100)
		for i := range batch {
			batch[i] = event(h.key(fmt.Sprint("s", i%3)), "a")
		}
		if err := pub.Publish(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if p, e := count.pipelines.Load(), count.evals.Load(); p != int64(round+1) || e != int64(100*(round+1)) {
			t.Errorf("after batch %d: %d pipelines, %d EVALs; want %d and %d", round+1, p, e, round+1, 100*(round+1))
		}
	}
	if n := count.evalshas.Load(); n != 0 {
		t.Errorf("%d EVALSHAs sent, want none", n)
	}
	n := 0
	for i := range 3 {
		n += len(readStream(t, h.client, h.key(fmt.Sprint("s", i))))
	}
	if n != 300 {
		t.Errorf("streams hold %d entries, want 300", n)
	}
}

func TestIdempotentRedisDown(t *testing.T) {
	t.Parallel()
	h := miniHarness(t)
	c := redis.NewClient(&redis.Options{Addr: h.addr, MaxRetries: -1})
	pub := newPublisher(t, c, WithIdempotence(time.Minute))
	c.Close()
	err := pub.Publish(context.Background(), []*outbox.Event{event(h.key("s"), "a")})
	var pe *outbox.PublishError
	if err == nil || errors.As(err, &pe) {
		t.Fatalf("Publish on a closed client = %v, want a whole-batch error", err)
	}
}

func TestIdempotenceOptions(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for name, opt := range map[string]Option{
		"short window":  WithIdempotence(time.Millisecond),
		"empty prefix":  WithDedupKeyPrefix(""),
		"braced prefix": WithDedupKeyPrefix("a{b}:"),
	} {
		if _, err := New(c, opt); !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// The dedup key hashes to the stream's Redis Cluster slot.
func TestDedupKeySlot(t *testing.T) {
	t.Parallel()
	// A key with a '}' but no hash tag ("a{}b") is the documented
	// exception: it cannot be a tag, so its dedup key is in another slot.
	for _, stream := range []string{"orders", "orders{eu}", "{user:1}events", "x{y", "ü-stream"} {
		key := DedupKey("", stream, "0190-id")
		if got, want := keySlot(key), keySlot(stream); got != want {
			t.Errorf("DedupKey(%q) = %q in slot %d, the stream is in slot %d", stream, key, got, want)
		}
	}
	if got := DedupKey("p:", "s", "1"); got != "p:{s}:1" {
		t.Errorf("DedupKey = %q", got)
	}
}

// keySlot is Redis Cluster's HASH_SLOT: CRC16 (XMODEM) of the hash tag, or
// of the whole key, mod 16384.
func keySlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
