package outboxtest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// storeT is what a store subtest works with.
type storeT struct {
	*testing.T
	setup    StoreSetup
	features StoreFeatures
	store    outbox.Store
	// unit is the lease or delay that a test lets pass with advance.
	unit time.Duration
	seq  atomic.Int64
}

// Long enough to outlive any test: a lease or delay that must not end.
const longLease = 10 * time.Minute

func newStoreT(t *testing.T, s StoreSetup, f StoreFeatures) *storeT {
	unit := 2 * time.Second // real time: long enough for a slow database to answer within it
	if s.Advance != nil {
		unit = time.Second
	}
	return &storeT{T: t, setup: s, features: f, store: s.Store, unit: unit}
}

// advance lets d pass for the store: its clock, or real time.
func (s *storeT) advance(d time.Duration) {
	if s.setup.Advance != nil {
		s.setup.Advance(d)
		return
	}
	time.Sleep(d)
}

// pastUnit lets a lease or delay of s.unit end.
func (s *storeT) pastUnit() { s.advance(s.unit + s.unit/4) }

// event returns a valid event of aggregate agg as outbox.Save leaves it:
// ID, CreatedAt (UTC, microseconds) set.
func (s *storeT) event(agg string) *outbox.Event {
	n := s.seq.Add(1)
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       "conformance",
		Type:        "conformance.tested",
		AggregateID: agg,
		Payload:     fmt.Appendf(nil, `{"n":%d}`, n),
		CreatedAt:   time.Now().UTC().Truncate(time.Microsecond),
	}
}

func (s *storeT) events(agg string, n int) []*outbox.Event {
	out := make([]*outbox.Event, n)
	for i := range out {
		out[i] = s.event(agg)
	}
	return out
}

// save inserts events in one transaction and commits it.
func (s *storeT) save(events ...*outbox.Event) {
	s.Helper()
	ctx := s.Context()
	tx, err := s.setup.Begin(ctx)
	if err != nil {
		s.Fatalf("begin: %v", err)
	}
	if err := s.store.Insert(ctx, tx, events); err != nil {
		_ = tx.Rollback()
		s.Fatalf("Insert: %v", err)
	}
	if err := tx.Commit(); err != nil {
		s.Fatalf("commit after Insert: %v (did Insert end the caller's transaction?)", err)
	}
}

// claim claims with req and fails the test on error.
func (s *storeT) claim(req storage.ClaimRequest) *outbox.Claim {
	s.Helper()
	if req.Lease == 0 {
		req.Lease = longLease
	}
	c, err := s.store.Claim(s.Context(), req)
	if err != nil {
		s.Fatalf("Claim(%+v): %v", req, err)
	}
	if c == nil {
		s.Fatalf("Claim(%+v) returned a nil Claim and no error", req)
	}
	if len(c.Events) > 0 && c.Token == "" {
		s.Fatalf("Claim(%+v) returned %d events with an empty token", req, len(c.Events))
	}
	if req.Limit > 0 && len(c.Events) > req.Limit {
		s.Fatalf("Claim with Limit %d returned %d events", req.Limit, len(c.Events))
	}
	return c
}

// claimN claims up to limit events in default (ordered) mode.
func (s *storeT) claimN(limit int) *outbox.Claim {
	s.Helper()
	return s.claim(storage.ClaimRequest{Limit: limit})
}

// wantClaim claims up to limit events and checks which it got, in order.
func (s *storeT) wantClaim(req storage.ClaimRequest, what string, want ...*outbox.Event) *outbox.Claim {
	s.Helper()
	c := s.claim(req)
	sameIDs(s.T, what, idsOf(c.Events), idsOf(want))
	return c
}

func (s *storeT) mark(token string, want int, events ...*outbox.Event) {
	s.Helper()
	n, err := s.store.MarkSynced(s.Context(), token, idsOf(events))
	wantCount(s.T, "MarkSynced", n, err, want)
}

func (s *storeT) release(token string, want int, events ...*outbox.Event) {
	s.Helper()
	n, err := s.store.Release(s.Context(), token, idsOf(events))
	wantCount(s.T, "Release", n, err, want)
}

func (s *storeT) fail(token string, want int, failures ...storage.Failure) {
	s.Helper()
	n, err := s.store.Fail(s.Context(), token, failures)
	wantCount(s.T, "Fail", n, err, want)
}

func idsOf(events []*outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func sameIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got events %v, want %v", what, got, want)
	}
}

func wantCount(t testing.TB, what string, n int, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n != want {
		t.Fatalf("%s changed %d events, want %d", what, n, want)
	}
}

// sameEvent checks that got carries what was saved as want.
func sameEvent(t testing.TB, what string, got, want *outbox.Event) {
	t.Helper()
	switch {
	case got.ID != want.ID:
		t.Fatalf("%s: ID %q, want %q", what, got.ID, want.ID)
	case got.Topic != want.Topic:
		t.Fatalf("%s: Topic %q, want %q", what, got.Topic, want.Topic)
	case got.Type != want.Type:
		t.Fatalf("%s: Type %q, want %q", what, got.Type, want.Type)
	case got.AggregateID != want.AggregateID:
		t.Fatalf("%s: AggregateID %q, want %q", what, got.AggregateID, want.AggregateID)
	case !bytes.Equal(got.Payload, want.Payload):
		t.Fatalf("%s: Payload %q, want %q", what, got.Payload, want.Payload)
	case !equalHeaders(got.Headers, want.Headers):
		t.Fatalf("%s: Headers %v, want %v", what, got.Headers, want.Headers)
	case !got.CreatedAt.Equal(want.CreatedAt):
		t.Fatalf("%s: CreatedAt %v, want %v", what, got.CreatedAt, want.CreatedAt)
	}
}

func equalHeaders(a, b map[string]string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return maps.Equal(a, b)
}

// cancelled returns a context that has already ended.
func cancelled(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	cancel()
	return ctx
}
