package outbox

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox/storage"
)

// idStore answers claims by ID as a store whose relays own partitions
// does: it takes the claimable events asked for, names those another
// relay owns in Elsewhere, and leaves the others out.
type idStore struct {
	fakeStore
	claimable map[string]*Event
	elsewhere map[string]bool
}

func (s *idStore) Claim(_ context.Context, req storage.ClaimRequest) (*Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimErr != nil {
		return nil, s.claimErr
	}
	c := &Claim{Token: "tok"}
	for _, id := range req.IDs {
		switch {
		case s.claimable[id] != nil:
			c.Events = append(c.Events, s.claimable[id])
			delete(s.claimable, id)
		case s.elsewhere[id]:
			c.Elsewhere = append(c.Elsewhere, id)
		}
	}
	return c, nil
}

// outcomes renders r.Outcomes as "id=fate" words, for comparison.
func outcomes(r Result) string {
	var b []string
	for _, o := range r.Outcomes {
		b = append(b, o.ID+"="+o.String())
	}
	return strings.Join(b, "; ")
}

// Publish says of each event, in the order it was given, whether the
// broker acknowledged it, whom it was handed to and why, or whether it
// waits for a retry.
func TestPublishSaysWhatHappened(t *testing.T) {
	t.Parallel()
	evs := map[string]*Event{}
	for _, id := range []string{"acked", "owned", "retry", "held", "dead", "heldback"} {
		evs[id] = &Event{ID: id, Topic: "t", Type: "x", AggregateID: id}
	}
	evs["heldback"].AggregateID = "dead" // behind "dead" in the same batch
	s := &idStore{
		claimable: map[string]*Event{"acked": evs["acked"], "retry": evs["retry"], "dead": evs["dead"], "heldback": evs["heldback"]},
		elsewhere: map[string]bool{"owned": true},
	}
	pub := PublisherFunc(func(_ context.Context, batch []*Event) error {
		var b BatchErrors
		for _, e := range batch {
			switch {
			case b.HeldBack(e):
			case e.ID == "retry":
				b.Fail(e, errors.New("NOSCRIPT"))
			case e.ID == "dead":
				b.Fail(e, Permanent(errors.New("too large")))
			}
		}
		return b.Err()
	})
	o := newTestOutbox(t, s, pub)
	res, err := o.Publish(t.Context(), evs["acked"], evs["owned"], evs["retry"], evs["held"], evs["acked"], evs["dead"], evs["heldback"])
	want := "acked=acknowledged; owned=handed to the relay: another relay owns its partition; " +
		"retry=waiting for a retry: NOSCRIPT; held=handed to the relay: in flight, or held behind an earlier undelivered event of its aggregate; " +
		"dead=dead: too large; heldback=handed to the relay: given back unattempted"
	if got := outcomes(res); got != want {
		t.Errorf("outcomes:\n got %s\nwant %s", got, want)
	}
	if err == nil || !strings.Contains(err.Error(), "3 of 4 events not acknowledged: 1 waiting for a retry, 1 dead, 1 handed to the relay") {
		t.Errorf("error %v", err)
	}
	if got := res.IDs(HandedToRelay); !slices.Equal(got, []string{"owned", "held", "heldback"}) {
		t.Errorf("IDs(HandedToRelay) = %v", got)
	}
	if o, ok := res.Outcome("owned"); !ok || o.Handoff != OwnedElsewhere {
		t.Errorf("Outcome(owned) = %+v, %v", o, ok)
	}
	if _, ok := res.Outcome("nope"); ok {
		t.Error("an outcome for an ID never asked for")
	}
	if res.Claimed != 4 || res.Synced != 1 || res.Failed != 1 || res.Dead != 1 || res.Released != 1 {
		t.Errorf("counts %+v", res)
	}
}

// Events only handed to the relay are no error: nothing failed.
func TestPublishHandoffIsNoError(t *testing.T) {
	t.Parallel()
	e := &Event{ID: "x", Topic: "t", Type: "x"}
	s := &idStore{elsewhere: map[string]bool{"x": true}}
	res, err := newTestOutbox(t, s, Noop{}).Publish(t.Context(), e)
	if err != nil || outcomes(res) != "x=handed to the relay: another relay owns its partition" {
		t.Errorf("%s, %v", outcomes(res), err)
	}
}

// A Publish that sends nothing says why of every event: the breaker was
// open, or the claim failed.
func TestPublishSendingNothingSaysWhy(t *testing.T) {
	t.Parallel()
	e1, e2 := &Event{ID: "a", Topic: "t", Type: "x"}, &Event{ID: "b", Topic: "t", Type: "x"}

	s := &idStore{}
	s.claimErr = errors.New("connection refused")
	res, err := newTestOutbox(t, s, Noop{}).Publish(t.Context(), e1, e2)
	if err == nil || outcomes(res) != "a=handed to the relay: the claim failed; b=handed to the relay: the claim failed" {
		t.Errorf("claim failed: %s, %v", outcomes(res), err)
	}

	down := PublisherFunc(func(context.Context, []*Event) error { return errors.New("dial tcp: connection refused") })
	o := newTestOutbox(t, &idStore{claimable: map[string]*Event{"a": e1}}, down, WithBreaker(1, time.Hour, time.Hour))
	res, err = o.Publish(t.Context(), e1)
	if err == nil || outcomes(res) != "a=waiting for a retry: dial tcp: connection refused" || res.BrokerErr == nil {
		t.Errorf("broker down: %s, %v", outcomes(res), err)
	}
	res, err = o.Publish(t.Context(), e2) // the breaker is open now
	if !errors.Is(err, ErrBreakerOpen) || outcomes(res) != "b=handed to the relay: the circuit breaker is open" {
		t.Errorf("breaker open: %s, %v", outcomes(res), err)
	}
}

// The log lines of a Publish use the same words as its result.
func TestPublishLogsHandoffs(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	e := &Event{ID: "x", Topic: "t", Type: "x"}
	o := newTestOutbox(t, &idStore{elsewhere: map[string]bool{"x": true}}, Noop{}, WithLogger(newTextLogger(&buf)))
	if _, err := o.Publish(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "outbox: events handed to the relay: another relay owns its partition") || !strings.Contains(got, "event_ids=[x]") {
		t.Errorf("log:\n%s", got)
	}
}

// syncBuffer is a strings.Builder safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTextLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
