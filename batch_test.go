package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eventsync/outbox"
)

// ev is an event "id" of aggregate agg ("" for none).
func ev(id, agg string) *outbox.Event {
	return &outbox.Event{ID: id, AggregateID: agg, Topic: "t", Type: "x"}
}

// TestBatchErrors runs the loop a publisher runs (ask HeldBack before
// sending an event, Fail the ones the broker refuses) over batches and
// checks what Err reports: the events' own errors, and ErrHeldBack naming
// the first failed event of the aggregate for the ones held back.
func TestBatchErrors(t *testing.T) {
	t.Parallel()
	refused := errors.New("refused")
	tests := []struct {
		name   string
		batch  []*outbox.Event
		refuse []string          // IDs the broker refuses
		want   map[string]string // ID -> "own", or the ID of the event it is held back behind; nil: Err is nil
	}{
		{name: "empty batch", batch: nil},
		{
			name:  "nil when all are acknowledged",
			batch: []*outbox.Event{ev("a1", "a"), ev("a2", "a"), ev("b1", "b"), ev("n1", "")},
		},
		{
			name:   "a failure holds back the later events of its aggregate only",
			batch:  []*outbox.Event{ev("a1", "a"), ev("b1", "b"), ev("a2", "a"), ev("b2", "b"), ev("a3", "a"), ev("c1", "c")},
			refuse: []string{"a2"},
			want:   map[string]string{"a2": "own", "a3": "a2"},
		},
		{
			name:   "the first failure of an aggregate is the one named",
			batch:  []*outbox.Event{ev("a1", "a"), ev("a2", "a"), ev("a3", "a")},
			refuse: []string{"a1", "a2", "a3"},
			want:   map[string]string{"a1": "own", "a2": "a1", "a3": "a1"},
		},
		{
			name:   "an empty aggregate is never held back and holds back nothing",
			batch:  []*outbox.Event{ev("n1", ""), ev("n2", ""), ev("n3", ""), ev("a1", "a")},
			refuse: []string{"n1", "n3"},
			want:   map[string]string{"n1": "own", "n3": "own"},
		},
		{
			name: "several aggregates fail, each holds back its own",
			batch: []*outbox.Event{ev("a1", "a"), ev("b1", "b"), ev("c1", "c"), ev("a2", "a"),
				ev("b2", "b"), ev("c2", "c"), ev("b3", "b"), ev("a3", "a")},
			refuse: []string{"a1", "b2"},
			want:   map[string]string{"a1": "own", "a2": "a1", "a3": "a1", "b2": "own", "b3": "b2"},
		},
		{
			name:   "every event failed: still a PublishError naming each",
			batch:  []*outbox.Event{ev("a1", "a"), ev("b1", "b"), ev("n1", "")},
			refuse: []string{"a1", "b1", "n1"},
			want:   map[string]string{"a1": "own", "b1": "own", "n1": "own"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b outbox.BatchErrors
			var sent []string
			for _, e := range tt.batch {
				if b.HeldBack(e) {
					continue
				}
				sent = append(sent, e.ID)
				for _, id := range tt.refuse {
					if id == e.ID {
						b.Fail(e, fmt.Errorf("broker: %s: %w", e.ID, refused))
					}
				}
			}
			err := b.Err()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Err() = %v, want nil", err)
				}
				if len(sent) != len(tt.batch) {
					t.Fatalf("sent %v of %d events", sent, len(tt.batch))
				}
				return
			}
			var pe *outbox.PublishError
			if !errors.As(err, &pe) {
				t.Fatalf("Err() = %v (%T), want a *outbox.PublishError", err, err)
			}
			if len(pe.Failed) != len(tt.want) {
				t.Errorf("Failed = %v, want exactly %v", pe.Failed, tt.want)
			}
			for id, want := range tt.want {
				got, ok := pe.Failed[id]
				switch {
				case !ok:
					t.Errorf("event %s not reported, want %s", id, want)
				case want == "own":
					if !errors.Is(got, refused) || errors.Is(got, outbox.ErrHeldBack) {
						t.Errorf("event %s: %v, want its own error", id, got)
					}
				default:
					if !errors.Is(got, outbox.ErrHeldBack) || errors.Is(got, refused) || !strings.Contains(got.Error(), want) {
						t.Errorf("event %s: %v, want ErrHeldBack behind %s", id, got, want)
					}
					for _, s := range sent {
						if s == id {
							t.Errorf("held-back event %s was sent", id)
						}
					}
				}
			}
		})
	}
}

// The errors given to Fail reach the relay unchanged, marks included; a
// held-back event is never permanent or unavailable, whatever its
// aggregate's first failure was.
func TestBatchErrorsKeepsMarks(t *testing.T) {
	t.Parallel()
	plain := errors.New("plain")
	var b outbox.BatchErrors
	p1, p2, u1, u2, n1 := ev("p1", "p"), ev("p2", "p"), ev("u1", "u"), ev("u2", "u"), ev("n1", "n")
	b.Fail(p1, outbox.Permanent(plain))
	b.Fail(u1, outbox.Unavailable(plain))
	b.Fail(n1, plain)
	if !b.HeldBack(p2) || !b.HeldBack(u2) {
		t.Fatal("the second events of failed aggregates are not held back")
	}
	var pe *outbox.PublishError
	if !errors.As(b.Err(), &pe) {
		t.Fatalf("Err() = %v, want a *outbox.PublishError", b.Err())
	}
	if got := pe.Failed["p1"]; !outbox.IsPermanent(got) || !errors.Is(got, plain) {
		t.Errorf("p1: %v, want the permanent error", got)
	}
	if got := pe.Failed["u1"]; !outbox.IsUnavailable(got) || outbox.IsPermanent(got) {
		t.Errorf("u1: %v, want the unavailable error", got)
	}
	if got := pe.Failed["n1"]; got != plain {
		t.Errorf("n1: %v, want the plain error itself", got)
	}
	for _, id := range []string{"p2", "u2"} {
		if got := pe.Failed[id]; !errors.Is(got, outbox.ErrHeldBack) || outbox.IsPermanent(got) || outbox.IsUnavailable(got) {
			t.Errorf("%s: %v, want only ErrHeldBack", id, got)
		}
	}
}

// A failure reported once every event was sent (a pipelined round trip)
// holds back nothing: the later events of its aggregate were sent and
// acknowledged.
func TestBatchErrorsFailAfterSending(t *testing.T) {
	t.Parallel()
	var b outbox.BatchErrors
	batch := []*outbox.Event{ev("a1", "a"), ev("a2", "a")}
	for _, e := range batch {
		if b.HeldBack(e) {
			t.Fatalf("%s held back before any failure", e.ID)
		}
	}
	b.Fail(batch[0], errors.New("WRONGTYPE"))
	var pe *outbox.PublishError
	if !errors.As(b.Err(), &pe) || len(pe.Failed) != 1 || pe.Failed["a1"] == nil {
		t.Fatalf("Err() = %v, want a PublishError naming a1 alone", b.Err())
	}
	if b.HeldBack(batch[0]) {
		t.Error("the failed event is held back behind itself")
	}
}

func TestBatchErrorsEdges(t *testing.T) {
	t.Parallel()
	t.Run("a nil error is a failure", func(t *testing.T) {
		t.Parallel()
		var b outbox.BatchErrors
		b.Fail(ev("a1", "a"), nil)
		var pe *outbox.PublishError
		if !errors.As(b.Err(), &pe) || pe.Failed["a1"] == nil {
			t.Fatalf("Err() = %v, want a1 failed with a non-nil error", b.Err())
		}
	})
	t.Run("a second Fail replaces the error", func(t *testing.T) {
		t.Parallel()
		var b outbox.BatchErrors
		e, second := ev("a1", "a"), errors.New("second")
		b.Fail(e, errors.New("first"))
		b.Fail(e, second)
		var pe *outbox.PublishError
		if !errors.As(b.Err(), &pe) || pe.Failed["a1"] != second {
			t.Fatalf("Err() = %v, want a1: second", b.Err())
		}
	})
	t.Run("Err is a copy", func(t *testing.T) {
		t.Parallel()
		var b outbox.BatchErrors
		b.Fail(ev("a1", "a"), errors.New("x"))
		err := b.Err()
		b.Fail(ev("b1", "b"), errors.New("y"))
		var pe *outbox.PublishError
		if !errors.As(err, &pe) || len(pe.Failed) != 1 {
			t.Fatalf("the error returned before a later Fail changed: %v", err)
		}
	})
}

// A publisher that sends one event at a time.
func ExampleBatchErrors() {
	send := func(_ context.Context, e *outbox.Event) error {
		if e.ID == "2" {
			return outbox.Permanent(errors.New("message too large"))
		}
		return nil
	}
	publish := func(ctx context.Context, events []*outbox.Event) error {
		var b outbox.BatchErrors
		for _, e := range events {
			if b.HeldBack(e) {
				continue // an earlier event of its aggregate failed: do not send it
			}
			if err := send(ctx, e); err != nil {
				b.Fail(e, err)
			}
		}
		return b.Err()
	}

	events := []*outbox.Event{
		{ID: "1", AggregateID: "order-7"},
		{ID: "2", AggregateID: "order-7"},
		{ID: "3", AggregateID: "order-7"},
		{ID: "4", AggregateID: "order-8"},
	}
	var pe *outbox.PublishError
	if errors.As(publish(context.Background(), events), &pe) {
		for _, id := range []string{"1", "2", "3", "4"} {
			if err, ok := pe.Failed[id]; ok {
				fmt.Printf("%s: permanent %t, held back %t\n", id, outbox.IsPermanent(err), errors.Is(err, outbox.ErrHeldBack))
			} else {
				fmt.Printf("%s: acknowledged\n", id)
			}
		}
	}
	// Output:
	// 1: acknowledged
	// 2: permanent true, held back false
	// 3: permanent false, held back true
	// 4: acknowledged
}
