package redisconsumer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
)

// client returns a Redis client and a stream key of this test: on
// miniredis, and on OUTBOX_TEST_REDIS when it is set (deleting the
// test's keys at the end).
func eachBackend(t *testing.T, f func(t *testing.T, c *redis.Client, prefix string)) {
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { c.Close() })
		f(t, c, "t:")
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		url := os.Getenv("OUTBOX_TEST_REDIS")
		if url == "" {
			t.Skip("set OUTBOX_TEST_REDIS=redis://127.0.0.1:6379/0 to run against a real Redis")
		}
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(opt)
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("OUTBOX_TEST_REDIS is set but Redis cannot be reached: %v", err)
		}
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		prefix := "redisconsumer-test:" + hex.EncodeToString(b) + ":"
		t.Cleanup(func() {
			keys, _ := c.Keys(context.Background(), prefix+"*").Result()
			if len(keys) > 0 {
				c.Del(context.Background(), keys...)
			}
			c.Close()
		})
		f(t, c, prefix)
	})
}

func publish(t *testing.T, c *redis.Client, stream string, n int) []string {
	t.Helper()
	pub, err := redisstream.New(c)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*outbox.Event
	for i := range n {
		evs = append(evs, &outbox.Event{ID: outbox.NewID(), Topic: stream, Type: "t", Payload: []byte(fmt.Sprint(i)), CreatedAt: time.Now()})
	}
	if err := pub.Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// A consumer that read entries and died leaves them pending; a live one
// claims them after MinIdle and, with its own new entries, handles every
// event; a handler failure is retried.
func TestConsumerClaimsFromDeadConsumerAndRetries(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, c *redis.Client, prefix string) {
		ctx := context.Background()
		stream, group := prefix+"inventory", "billing"
		ids := publish(t, c, stream, 6)
		if err := c.XGroupCreateMkStream(ctx, stream, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		// The dead consumer reads 3 entries and never acknowledges them.
		if _, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{stream, ">"}, Count: 3}).Result(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var seen []string
		failOnce := map[string]bool{ids[4]: true}
		cons, err := New(c, stream, group, "live", WithMinIdle(50*time.Millisecond), WithBlock(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- cons.Run(runCtx, func(ctx context.Context, e *outbox.Event) error {
				mu.Lock()
				defer mu.Unlock()
				if failOnce[e.ID] {
					delete(failOnce, e.ID)
					return errors.New("try again")
				}
				if e.Topic != stream {
					t.Errorf("topic %q", e.Topic)
				}
				seen = append(seen, e.ID)
				return nil
			})
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n >= len(ids) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		mu.Lock()
		got := slices.Sorted(slices.Values(seen))
		mu.Unlock()
		if want := slices.Sorted(slices.Values(ids)); !slices.Equal(got, want) {
			t.Fatalf("handled %v, want every event once: %v", got, want)
		}
		pending, err := c.XPending(ctx, stream, group).Result()
		if err != nil || pending.Count != 0 {
			t.Fatalf("pending after the run: %+v, %v", pending, err)
		}
	})
}

func TestMalformedEntryIsAcknowledged(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, c *redis.Client, prefix string) {
		ctx := context.Background()
		stream := prefix + "s"
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"foo", "bar"}}).Err(); err != nil {
			t.Fatal(err)
		}
		cons, _ := New(c, stream, "g", "c", WithBlock(10*time.Millisecond))
		runCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if err := cons.Run(runCtx, func(context.Context, *outbox.Event) error {
			t.Error("handler called for a malformed entry")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if p, _ := c.XPending(ctx, stream, "g").Result(); p == nil || p.Count != 0 {
			t.Fatalf("pending: %+v", p)
		}
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := New(c, "", "g", "c"); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Error(err)
	}
	if _, err := New(c, "s", "g", "c", WithBatchSize(0)); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Error(err)
	}
}
