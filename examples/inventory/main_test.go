package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/leaktest"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // the test binary, re-executed as the service (TestBinaryStopsOnSIGTERM)
	}
	routeRedisLogs(slog.New(slog.DiscardHandler)) // the outbox logs the failures that matter
	leaktest.Main(m)
}

// testOutbox are relay settings that make retries quick in tests.
func testOutbox() []outbox.Option {
	return []outbox.Option{
		outbox.WithInterval(50 * time.Millisecond),
		outbox.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		outbox.WithTimeout(2 * time.Second),
	}
}

// testLogger logs through t at Warn and above (set LOG_LEVEL=debug or info
// to see more).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if l, err := parseLevel(os.Getenv(envLogLevel)); err == nil && os.Getenv(envLogLevel) != "" {
		level = l
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// newTestApp wires the service on a SQLite file in t.TempDir() and an
// in-process Redis, without starting the relay. Everything is closed
// when the test ends.
func newTestApp(t *testing.T) *app {
	t.Helper()
	cfg := config{
		DB:        sqliteConfig(filepath.Join(t.TempDir(), "inventory.db")),
		Publisher: publisherRedis,
		Topic:     defaultTopic,
		Outbox:    testOutbox(),
	}
	a, err := newApp(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	t.Cleanup(func() {
		if err := a.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return a
}

// startRelay runs a's relay until the test ends.
func startRelay(t *testing.T, a *app) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
}
