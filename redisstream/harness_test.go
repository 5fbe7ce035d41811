package redisstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// envRedis names the variable that points the tests at a real Redis.
const envRedis = "OUTBOX_TEST_REDIS"

// harness is what a behaviour test needs: a client on the backend, the
// backend's address (for a proxy in front of it), and a key prefix that
// belongs to this test alone.
type harness struct {
	client *redis.Client
	addr   string
	base   redis.Options // options of client, to build more clients
	prefix string
}

// key returns a key of this test.
func (h *harness) key(name string) string { return h.prefix + name }

// newClient returns a client on addr with the harness's options changed by
// mod, closed when the test ends.
func (h *harness) newClient(t testing.TB, addr string, mod func(*redis.Options)) *redis.Client {
	t.Helper()
	opt := h.base
	opt.Addr = addr
	if mod != nil {
		mod(&opt)
	}
	c := redis.NewClient(&opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// eachBackend runs f against miniredis and, when OUTBOX_TEST_REDIS is set,
// against that real Redis. Subtests run in parallel.
func eachBackend(t *testing.T, f func(t *testing.T, h *harness)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		f(t, miniHarness(t))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		f(t, realHarness(t))
	})
}

func miniHarness(t testing.TB) *harness {
	t.Helper()
	srv := miniredis.RunT(t)
	// miniredis runs scripts in this process, under the race detector: a
	// large batch of idempotent writes can take longer than go-redis's
	// default 3 s read timeout on a loaded machine.
	h := &harness{addr: srv.Addr(), prefix: randomPrefix(t), base: redis.Options{ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}}
	h.client = h.newClient(t, srv.Addr(), nil)
	return h
}

// realHarness connects to the Redis of OUTBOX_TEST_REDIS. It skips the test
// when the variable is unset and fails it when the server is unreachable.
// The test's keys are deleted when it ends; no other key is touched.
func realHarness(t testing.TB) *harness {
	t.Helper()
	url := os.Getenv(envRedis)
	if url == "" {
		t.Skipf("real Redis tests are off: set %s=redis://127.0.0.1:6379/0 to run them", envRedis)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("%s: %v", envRedis, err)
	}
	h := &harness{addr: opt.Addr, base: *opt, prefix: randomPrefix(t)}
	h.client = h.newClient(t, opt.Addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.client.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s is set but Redis at %s is unreachable: %v", envRedis, opt.Addr, err)
	}
	admin := h.newClient(t, opt.Addr, nil) // registered before, so closed after, the cleanup below
	t.Cleanup(func() { deleteKeys(t, admin, h.prefix) })
	return h
}

// deleteKeys deletes the keys starting with prefix, which only this test
// uses.
func deleteKeys(t testing.TB, c *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scan %s*: %v", prefix, err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("cleanup: del: %v", err)
			return
		}
		keys = keys[n:]
	}
}

func randomPrefix(t testing.TB) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "outbox-test:" + hex.EncodeToString(b[:]) + ":"
}

// envAddrs returns the comma-separated addresses in the variable name,
// which points the tests at servers (what) that script starts, as in
// example. It skips the test when the variable is unset, except under CI
// (CI=true), where a missing setup fails the test rather than passing it
// unseen.
func envAddrs(t testing.TB, name, what, script, example string) []string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is unset: .ci/run starts the %s with %s and sets it", name, what, script)
		}
		t.Skipf("%s tests are off: run %s and set %s=%s to run them", what, script, name, example)
	}
	return strings.Split(v, ",")
}
