package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore hands out prepared claims and records what the relay does with
// them. The real stores are tested in sqlstore; this one lets the relay's
// own decisions be checked one by one, including store failures.
type fakeStore struct {
	mu        sync.Mutex
	pending   []*Event
	requests  []storage.ClaimRequest
	claimErr  error
	markErr   error
	markFails int // the next markFails marks fail with a passing error
	marked    []string
	failed    []storage.Failure
	released  []string
	inserts   int // calls of Insert
}

func (s *fakeStore) Insert(context.Context, Executor, []*Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inserts++
	return nil
}

func (s *fakeStore) Claim(_ context.Context, req storage.ClaimRequest) (*Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	if s.claimErr != nil {
		return nil, s.claimErr
	}
	n := min(req.Limit, len(s.pending))
	c := &Claim{Token: "tok", Events: s.pending[:n]}
	s.pending = s.pending[n:]
	return c, nil
}

func (s *fakeStore) MarkSynced(_ context.Context, token string, ids []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.markErr != nil {
		return 0, s.markErr
	}
	if s.markFails > 0 {
		s.markFails--
		return 0, errors.New("connection reset")
	}
	s.marked = append(s.marked, ids...)
	return len(ids), nil
}

func (s *fakeStore) Fail(_ context.Context, token string, f []storage.Failure) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, f...)
	return len(f), nil
}

func (s *fakeStore) Release(_ context.Context, token string, ids []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, ids...)
	return len(ids), nil
}

func events(n int) []*Event {
	out := make([]*Event, n)
	for i := range out {
		out[i] = &Event{ID: fmt.Sprintf("e%d", i), Topic: "t", Type: "x"}
	}
	return out
}

func newTestOutbox(t *testing.T, s Store, p Publisher, opts ...Option) *Outbox {
	t.Helper()
	w, err := New(s, p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestPartialFailureMarksOnlyAcknowledged(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(4)}
	s.pending[3].Delivery.Attempts = 4
	pub := PublisherFunc(func(_ context.Context, evs []*Event) error {
		return &PublishError{Failed: map[string]error{
			"e1": errors.New("broker said no"),
			"e2": Permanent(errors.New("too large")),
			"e3": errors.New("again"),
		}}
	})
	w := newTestOutbox(t, s, pub, WithMaxAttempts(5), WithBackoff(time.Second, time.Minute))
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.marked) != "[e0]" {
		t.Errorf("marked %v, want only e0", s.marked)
	}
	if res.Claimed != 4 || res.Synced != 1 || res.Failed != 1 || res.Dead != 2 || res.Released != 0 || res.Outcomes != nil {
		t.Errorf("result %+v", res)
	}
	want := map[string]bool{"e1": false, "e2": true, "e3": true} // dead?
	for _, f := range s.failed {
		if dead, ok := want[f.ID]; !ok || f.Dead != dead {
			t.Errorf("failure %+v: want dead=%v", f, dead)
		}
		if f.ID == "e1" && (f.Delay < 500*time.Millisecond || f.Delay > time.Second || f.Err != "broker said no") {
			t.Errorf("first retry of e1: %+v", f)
		}
	}
	if len(s.failed) != 3 {
		t.Errorf("recorded %d failures, want 3", len(s.failed))
	}
}

func TestWholeBatchFailure(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(3)}
	down := errors.New("connection refused")
	w := newTestOutbox(t, s, PublisherFunc(func(context.Context, []*Event) error { return down }))
	res, err := w.SyncPending(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.marked) != 0 || res.Failed != 3 || len(s.failed) != 3 {
		t.Fatalf("marked %v, result %+v", s.marked, res)
	}
	if s.requests[0].Limit != DefaultBatchSize || s.requests[0].Lease != 2*DefaultTimeout {
		t.Errorf("claim request %+v", s.requests[0])
	}
}

func TestMarkFailureIsReported(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2), markErr: errors.New("db gone")}
	w := newTestOutbox(t, s, Noop{})
	_, err := w.SyncPending(context.Background(), 10)
	if err == nil || !errors.Is(err, s.markErr) {
		t.Fatalf("err = %v, want the mark failure", err)
	}
	if len(s.failed) != 0 || len(s.released) != 0 {
		t.Error("events the broker acknowledged were recorded as failed or released")
	}
}

func TestClaimFailureIsReported(t *testing.T) {
	t.Parallel()
	s := &fakeStore{claimErr: errors.New("db gone")}
	w := newTestOutbox(t, s, Noop{})
	if _, err := w.SyncPending(context.Background(), 10); !errors.Is(err, s.claimErr) {
		t.Fatalf("err = %v", err)
	}
}

func TestStopReleasesInsteadOfCountingAttempt(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(3)}
	ctx, cancel := context.WithCancel(context.Background())
	pub := PublisherFunc(func(ctx context.Context, evs []*Event) error {
		cancel() // the relay is stopped mid-publish; e0 was already acknowledged
		return &PublishError{Failed: map[string]error{"e1": ctx.Err(), "e2": ctx.Err()}}
	})
	w := newTestOutbox(t, s, pub)
	res, err := w.SyncPending(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.marked) != "[e0]" || fmt.Sprint(s.released) != "[e1 e2]" || len(s.failed) != 0 {
		t.Errorf("marked %v released %v failed %v", s.marked, s.released, s.failed)
	}
	if res.Released != 2 || res.Synced != 1 {
		t.Errorf("result %+v", res)
	}
}

func TestBackoffDoublesWithJitterAndCap(t *testing.T) {
	t.Parallel()
	w := newTestOutbox(t, &fakeStore{}, Noop{}, WithBackoff(time.Second, 10*time.Second))
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		for range 50 {
			d := w.backoff(attempt)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

func TestRunDrainsKicksAndStops(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(25)}
	w := newTestOutbox(t, s, Noop{}, WithBatchSize(10), WithInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.marked) == 25 })
	// Passes ran back to back while they delivered; the empty fourth one
	// ends the burst (a short batch may leave much behind: see Run).
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.requests) == 4 })
	time.Sleep(20 * time.Millisecond)
	s.mu.Lock()
	passes := len(s.requests)
	s.pending = events(1)
	s.mu.Unlock()
	if passes != 4 {
		t.Errorf("%d passes drained 25 events in batches of 10, want 3 and an empty one", passes)
	}
	if err := w.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	w.Kick()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.marked) == 26 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v after its context ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestSaveRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := &fakeStore{}
	o, err := New(s, Noop{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var nilTx *fakeExec
	for _, exec := range []Executor{nil, nilTx} {
		if err := o.Save(ctx, exec, &Event{Topic: "t", Type: "x"}); !errors.Is(err, ErrNilExecutor) {
			t.Errorf("Save(%T nil) = %v", exec, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := o.Save(cctx, &fakeExec{}, &Event{Topic: "t", Type: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Save with a cancelled context = %v", err)
	}
	if s.inserts != 0 {
		t.Errorf("%d inserts after refused Saves", s.inserts)
	}
}

// Save refuses an invalid event with a typed error before anything is
// written: the store's Insert is never called, not even for the valid
// events of the same call, and no SaveHook sees them.
func TestSaveRefusesInvalidEventsAndWritesNothing(t *testing.T) {
	t.Parallel()
	const limit = 16
	for _, tc := range []struct {
		name  string
		bad   *Event
		field string
	}{
		{"missing topic", &Event{Type: "x", Payload: []byte("{}")}, "Topic"},
		{"missing type", &Event{Topic: "t", Payload: []byte("{}")}, "Type"},
		{"payload over the limit", &Event{Topic: "t", Type: "x", Payload: make([]byte, limit+1)}, "Payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeStore{}
			h := &recordingHook{}
			o, err := New(s, Noop{}, WithMaxPayloadBytes(limit), WithHooks(h))
			if err != nil {
				t.Fatal(err)
			}
			good := &Event{Topic: "t", Type: "x", Payload: make([]byte, limit)}
			err = o.Save(context.Background(), &fakeExec{}, good, tc.bad)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Save = %v, want an error wrapping ErrInvalidEvent", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Index != 1 || ve.Field != tc.field {
				t.Fatalf("Save = %#v, want a *ValidationError for event 1, field %s", err, tc.field)
			}
			if s.inserts != 0 || h.saved != 0 {
				t.Errorf("%d inserts and %d events seen by BeforeSave after a refused Save; want none", s.inserts, h.saved)
			}
			if good.ID != "" || !good.CreatedAt.IsZero() {
				t.Errorf("the valid event of a refused Save was given ID %q, CreatedAt %v", good.ID, good.CreatedAt)
			}

			// The same call without the bad event goes through: one insert.
			if err := o.Save(context.Background(), &fakeExec{}, good); err != nil {
				t.Fatalf("Save of a payload at the limit: %v", err)
			}
			if s.inserts != 1 {
				t.Errorf("%d inserts for a valid Save, want 1", s.inserts)
			}
		})
	}
}

type fakeExec struct{}

func (*fakeExec) ExecContext(context.Context, string, ...any) (sql.Result, error) { return nil, nil }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPassingMarkFailureIsRetried(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2), markFails: 2}
	w := newTestOutbox(t, s, Noop{})
	res, err := w.SyncPending(context.Background(), 10)
	if err != nil || res.Synced != 2 || len(s.marked) != 2 {
		t.Fatalf("after two passing mark failures: %+v %v, marked %v", res, err, s.marked)
	}
}
