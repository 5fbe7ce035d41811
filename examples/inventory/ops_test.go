package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

func get(t *testing.T, h http.Handler, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestMetricsEndpoint: GET /metrics follows what the service publishes.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	if code, got := do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":10}`); code != http.StatusOK {
		t.Fatalf("POST /stock: %d %v", code, got)
	}
	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`outbox_events_published_total{topic="` + defaultTopic + `",type="stock.created"} 1`,
		`outbox_publish_duration_seconds_count{mode="immediate"} 1`,
		"outbox_oldest_pending_age_seconds 0",
		"outbox_events_dead 0",
		"outbox_stats_up 1",
		"outbox_circuit_breaker_open 0",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
}

// TestReadyz: GET /readyz on the service's sqlstore fails once an event
// has waited longer than the threshold, and recovers when it is delivered.
func TestReadyz(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("GET /readyz on a fresh service: %d %s", code, body)
	}
	// An event committed long ago and never published.
	old := &outbox.Event{Topic: defaultTopic, Type: "stock.updated", AggregateID: "s1/p1", Payload: []byte("{}"),
		CreatedAt: time.Now().Add(-2 * readiness.MaxPendingAge)}
	tx, err := a.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ob.Save(t.Context(), tx, old); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "oldest pending event") {
		t.Fatalf("GET /readyz with a stale event: %d %s", code, body)
	}
	if _, err := a.ob.Publish(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("GET /readyz once delivered: %d %s", code, body)
	}
}

// alerts records the alerts watchAlerts raises.
type alerts struct {
	mu  sync.Mutex
	got []alert
}

func (r *alerts) add(a alert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, a)
}

func (r *alerts) list() []alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alert(nil), r.got...)
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAlertsEndToEnd: with the broker down, the backlog in the service's
// sqlstore crosses the pending threshold and watchAlerts fires an alert
// (callback and slog warning); once the broker is back and the backlog
// drained, it clears.
func TestAlertsEndToEnd(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	var mu sync.Mutex
	down := true
	pub := outbox.PublisherFunc(func(context.Context, []*outbox.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("connection refused")
		}
		return nil
	})
	rec := &alerts{}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ob, err := outbox.New(a.store, pub,
		outbox.WithLogger(log),
		outbox.WithInterval(10*time.Millisecond),
		outbox.WithBreaker(-1, time.Millisecond, time.Millisecond),
		outbox.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		tx, err := a.db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		e := &outbox.Event{Topic: defaultTopic, Type: "stock.updated", AggregateID: "s1/p" + string(rune('0'+i)), Payload: []byte("{}")}
		if err := ob.Save(t.Context(), tx, e); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ob.Run(ctx) }()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchAlerts(ctx, a.store, alertRules{Pending: 2, Every: 20 * time.Millisecond}, log, rec.add)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		<-watched
	}()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; alerts %+v; logs:\n%s", what, rec.list(), logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("the alert to fire", func() bool { return len(rec.list()) >= 1 })
	first := rec.list()[0]
	if !first.Firing || first.Stats.Pending != 3 || !strings.Contains(first.Reason, "3 events pending, over 2") {
		t.Fatalf("first alert %+v", first)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"outbox: alert: 3 events pending, over 2\"") {
		t.Errorf("no slog warning for the alert:\n%s", logs)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	wait("the alert to clear", func() bool { return len(rec.list()) >= 2 })
	cleared := rec.list()[1]
	if cleared.Firing || cleared.Stats.Pending != 0 {
		t.Fatalf("second alert %+v, want cleared with nothing pending", cleared)
	}
	if !strings.Contains(logs.String(), "outbox: alert cleared") {
		t.Errorf("no log line for the cleared alert:\n%s", logs)
	}
	if n := len(rec.list()); n != 2 {
		t.Errorf("%d alerts, want exactly 2 (fired, cleared)", n)
	}
}
