package outbox

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type ctxKey struct{}

// recordingHook implements every hook interface.
type recordingHook struct {
	mu       sync.Mutex
	saved    int
	started  []PublishStart
	done     []PublishDone
	breakers []BreakerState
	sawCtx   bool
}

func (h *recordingHook) BeforeSave(ctx context.Context, evs []*Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.saved += len(evs)
	for _, e := range evs {
		if e.Headers == nil {
			e.Headers = map[string]string{}
		}
		e.Headers["traceparent"] = "00-trace-span-01"
	}
}

func (h *recordingHook) BeforePublish(ctx context.Context, b PublishStart) context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started = append(h.started, b)
	return context.WithValue(ctx, ctxKey{}, "span")
}

func (h *recordingHook) AfterPublish(ctx context.Context, d PublishDone) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = append(h.done, d)
}

func (h *recordingHook) BreakerChanged(ctx context.Context, s BreakerState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.breakers = append(h.breakers, s)
}

func TestHooksSeeSavePublishAndBreaker(t *testing.T) {
	t.Parallel()
	s := &fakeStore{}
	h := &recordingHook{}
	down := false
	pub := PublisherFunc(func(ctx context.Context, evs []*Event) error {
		if ctx.Value(ctxKey{}) != "span" {
			t.Error("the publisher did not get BeforePublish's context")
		}
		if down {
			return errors.New("connection refused")
		}
		return &PublishError{Failed: map[string]error{evs[1].ID: Permanent(errors.New("too large"))}}
	})
	o, err := New(s, pub, WithHooks(h), WithBreaker(1, time.Second, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	evs := []*Event{{Topic: "t", Type: "x"}, {Topic: "t", Type: "x"}}
	if err := o.Save(context.Background(), &fakeExec{}, evs...); err != nil {
		t.Fatal(err)
	}
	if h.saved != 2 || evs[0].Headers["traceparent"] == "" {
		t.Fatalf("BeforeSave saw %d events; headers %v", h.saved, evs[0].Headers)
	}
	s.pending = evs
	if _, err := o.SyncPending(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	if len(h.done) != 1 || h.done[0].Immediate || len(h.done[0].Failed) != 1 || len(h.done[0].Dead) != 1 || h.done[0].Dead[0] != evs[1].ID {
		t.Fatalf("AfterPublish got %+v", h.done)
	}
	down = true
	s.pending = []*Event{{ID: "z", Topic: "t", Type: "x"}}
	o.SyncPending(context.Background(), 10)
	if len(h.breakers) != 1 || !h.breakers[0].Open {
		t.Fatalf("breaker changes %+v, want it opened", h.breakers)
	}
	if d := h.done[len(h.done)-1]; d.BrokerErr == nil {
		t.Error("AfterPublish was not told the broker failed the batch")
	}
	if _, err := New(s, Noop{}, WithHooks(struct{}{})); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("a hook implementing nothing was accepted: %v", err)
	}
}

// statsStore is a fakeStore with settable Stats.
type statsStore struct {
	fakeStore
	smu   sync.Mutex
	stats Stats
}

func (s *statsStore) Stats(context.Context, time.Duration) (Stats, error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.stats, nil
}

func (s *statsStore) set(st Stats) { s.smu.Lock(); s.stats = st; s.smu.Unlock() }

func TestReadiness(t *testing.T) {
	t.Parallel()
	s := &statsStore{}
	w := newTestOutbox(t, s, Noop{}, WithBreaker(1, time.Hour, time.Hour))
	r := Readiness{MaxPendingAge: time.Minute, MaxBreakerOpen: 10 * time.Millisecond}
	ctx := context.Background()
	if err := w.Ready(ctx, r); err != nil {
		t.Fatalf("ready with nothing pending: %v", err)
	}
	s.set(Stats{OldestPendingAge: 2 * time.Minute})
	if err := w.Ready(ctx, r); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "oldest pending") {
		t.Fatalf("old backlog: %v", err)
	}
	s.set(Stats{})
	w.breaker.failure(time.Now())
	time.Sleep(20 * time.Millisecond)
	if err := w.Ready(ctx, r); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "breaker") {
		t.Fatalf("breaker open too long: %v", err)
	}
	w.breaker.success()
	if err := w.Ready(ctx, r); err != nil {
		t.Fatalf("ready after recovery: %v", err)
	}
}
