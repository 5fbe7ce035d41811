package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// fakeStats is a StatsReader whose figures the test sets.
type fakeStats struct {
	mu    sync.Mutex
	stats outbox.Stats
}

func (s *fakeStats) Stats(context.Context, time.Duration) (outbox.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats, nil
}

func (s *fakeStats) set(st outbox.Stats) { s.mu.Lock(); s.stats = st; s.mu.Unlock() }

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) all() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]slog.Record(nil), l.records...)
}

func TestAlertsFireAndClear(t *testing.T) {
	t.Parallel()
	s := &fakeStats{}
	rec := &alerts{}
	logs := &logRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchAlerts(ctx, s, alertRules{Pending: 100, OldestAge: time.Minute, Every: time.Millisecond}, slog.New(logs), rec.add)
	}()
	waitUntil := func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out; alerts %+v", rec.list())
			}
			time.Sleep(time.Millisecond)
		}
	}

	s.set(outbox.Stats{Pending: 101, OldestPendingAge: 2 * time.Minute})
	waitUntil(func() bool { return len(rec.list()) == 1 })
	s.set(outbox.Stats{Pending: 5})
	waitUntil(func() bool { return len(rec.list()) == 2 })
	time.Sleep(20 * time.Millisecond) // no repeats while nothing changes
	cancel()
	<-done
	got := rec.list()
	if len(got) != 2 || !got[0].Firing || got[1].Firing {
		t.Fatalf("alerts %+v", got)
	}
	if !strings.Contains(got[0].Reason, "101 events pending") || !strings.Contains(got[0].Reason, "oldest pending event is 2m0s old") {
		t.Errorf("reason %q", got[0].Reason)
	}
	// A slog warning when the alert fires and again when it clears.
	var records []slog.Record
	for _, r := range logs.all() {
		if strings.HasPrefix(r.Message, "outbox: alert") {
			records = append(records, r)
		}
	}
	if len(records) != 2 {
		t.Fatalf("%d alert log records, want 2", len(records))
	}
	if r := records[0]; r.Level != slog.LevelWarn || !strings.Contains(r.Message, "101 events pending") {
		t.Errorf("alert logged at %v: %q; want a warning with the reason", r.Level, r.Message)
	}
	if r := records[1]; r.Level != slog.LevelWarn || r.Message != "outbox: alert cleared" {
		t.Errorf("clearance logged at %v: %q; want a warning", r.Level, r.Message)
	}
}
