//go:build unix

package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/eventsync/outbox/internal/leaktest"
)

func TestMain(m *testing.M) {
	// The short run re-executes this test binary as its relays.
	if os.Getenv(roleEnv) == "relay" {
		os.Exit(relayMain(os.Args[1:]))
	}
	leaktest.Main(m) // sarama's own background goroutines excepted
}

// TestShortRun is the CI chaos run: relays as real processes over a real
// Postgres table, publishing to a real Redis through a proxy, with 20 or
// more faults in about a minute. It needs OUTBOX_TEST_POSTGRES and
// OUTBOX_TEST_REDIS and skips without them. The idempotent subtest runs
// it again, a little shorter, with -idempotent: then not even a duplicate
// may reach the broker.
func TestShortRun(t *testing.T) {
	pg, rd := os.Getenv("OUTBOX_TEST_POSTGRES"), os.Getenv("OUTBOX_TEST_REDIS")
	if pg == "" || rd == "" {
		t.Skip("chaos run skipped: set OUTBOX_TEST_POSTGRES and OUTBOX_TEST_REDIS to run it")
	}
	if testing.Short() {
		t.Skip("chaos run skipped with -short")
	}
	t.Run("redis", func(t *testing.T) {
		cfg := ShortConfig()
		cfg.DSN, cfg.RedisURL, cfg.Seed = pg, rd, time.Now().UnixNano()
		shortRun(t, cfg)
	})
	t.Run("watermarks", func(t *testing.T) {
		cfg := ShortConfig()
		cfg.DSN, cfg.RedisURL, cfg.Seed = pg, rd, time.Now().UnixNano()
		cfg.Watermarks = true
		shortRun(t, cfg)
	})
	t.Run("idempotent", func(t *testing.T) {
		cfg := ShortConfig()
		cfg.DSN, cfg.RedisURL, cfg.Seed = pg, rd, time.Now().UnixNano()
		cfg.Idempotent = true
		// 32 s still holds 20 faults at the longest gap (1.5 s).
		cfg.Events, cfg.Duration = 2400, 32*time.Second
		res := shortRun(t, cfg)
		if res != nil && res.Duplicates != 0 {
			t.Errorf("%d duplicates at the broker with idempotent publication (seed %d)", res.Duplicates, cfg.Seed)
		}
	})
}

// shortRun runs cfg and fails t unless every guarantee held under 20 or
// more faults and every event was committed.
func shortRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("chaos run (seed %d): %v", cfg.Seed, err)
	}
	t.Log(res.JSON())
	if !res.OK() {
		t.Errorf("a guarantee broke under faults (rerun with -seed %d): %s", cfg.Seed, res.JSON())
	}
	if res.Lost != 0 || res.OrderViolations != 0 || res.Phantoms != 0 {
		t.Errorf("lost %d, order violations %d, phantoms %d, want 0 each", res.Lost, res.OrderViolations, res.Phantoms)
	}
	if res.FaultsInjected < 20 {
		t.Errorf("only %d faults injected, want at least 20", res.FaultsInjected)
	}
	if res.Committed < cfg.Events {
		t.Errorf("committed %d events, want %d", res.Committed, cfg.Events)
	}
	return res
}

// TestCheck feeds the checker a broker history with each kind of fault it
// must find.
func TestCheck(t *testing.T) {
	committed := map[string]written{"a1": {"a", 1}, "a2": {"a", 2}, "a3": {"a", 3}, "b1": {"b", 1}, "n": {}}
	rolled := map[string]written{"r": {"a", 4}}
	uncertain := map[string]written{"u": {"b", 2}}
	good := map[string][]delivery{
		"s1": {{id: "a1"}, {id: "a2"}, {id: "a1"}, {id: "a2"}, {id: "a3"}},
		"s2": {{id: "n"}, {id: "b1"}, {id: "u"}, {id: "n"}},
	}
	var r Result
	check(&r, committed, rolled, uncertain, good)
	if !r.OK() || r.Duplicates != 3 || r.DeliveredUnique != 6 || r.Delivered != 9 {
		t.Fatalf("good history: %s", r.JSON())
	}
	bad := map[string][]delivery{
		"s1": {{id: "a2"}, {id: "a1"}, {id: "r"}},
		"s2": {{id: "n"}, {id: "ghost"}},
	}
	r = Result{}
	check(&r, committed, rolled, uncertain, bad)
	if r.Lost != 2 || r.OrderViolations != 1 || r.Phantoms != 2 || r.OK() {
		t.Fatalf("bad history: %s, want 2 lost (a3, b1), 1 order violation (a1 after a2), 2 phantoms (r, ghost)", r.JSON())
	}
}

func TestFlags(t *testing.T) {
	t.Setenv("OUTBOX_TEST_POSTGRES", "postgres://u@h:5432/db")
	t.Setenv("OUTBOX_TEST_REDIS", "redis://h:6379/0")
	cfg, err := parseFlags([]string{"-long", "-seed", "7"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Events != 100_000 || cfg.Seed != 7 || cfg.DSN == "" || cfg.RedisURL == "" {
		t.Fatalf("-long: %+v", cfg)
	}
	if _, err := parseFlags([]string{"-db", "oracle"}); err == nil {
		t.Fatal("-db oracle accepted")
	}
	addr, via, err := proxiedDSN("mysql", "root@tcp(127.0.0.1:3306)/test")
	if err != nil || addr != "127.0.0.1:3306" {
		t.Fatalf("mysql DSN: %q %v", addr, err)
	}
	if got := via("127.0.0.1:1"); got == "" || got == "root@tcp(127.0.0.1:3306)/test" {
		t.Fatalf("proxied mysql DSN: %q", got)
	}
	addr, via, err = proxiedDSN("postgres", "postgres://root@db.example/test?sslmode=disable")
	if err != nil || addr != "db.example:5432" {
		t.Fatalf("postgres DSN: %q %v", addr, err)
	}
	if got := via("127.0.0.1:1"); got != "postgres://root@127.0.0.1:1/test?connect_timeout=2&sslmode=disable" {
		t.Fatalf("proxied postgres DSN: %q", got)
	}
}
