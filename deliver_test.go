package outbox

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventsync/outbox/storage"
)

// The relay is the one place that cuts an error before it is kept: the
// stores take Failure.Err as it is.
func TestErrorTextIsCutOnceToValidUTF8(t *testing.T) {
	t.Parallel()
	if got := errorText(nil); got != "" {
		t.Errorf("errorText(nil) = %q", got)
	}
	short := errors.New("connection refused")
	if got := errorText(short); got != "connection refused" {
		t.Errorf("short error changed: %q", got)
	}
	// A multi-byte rune across the limit is dropped, not split.
	long := errors.New(strings.Repeat("a", storage.MaxErrorLength-1) + "é" + strings.Repeat("b", 100))
	got := errorText(long)
	if len(got) > storage.MaxErrorLength || !utf8.ValidString(got) || got != strings.Repeat("a", storage.MaxErrorLength-1) {
		t.Errorf("long error cut to %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}

// hangingPublisher blocks until its context ends and reports that.
var hangingPublisher = PublisherFunc(func(ctx context.Context, _ []*Event) error {
	<-ctx.Done()
	return ctx.Err()
})

// breakerContexts records whether the contexts BreakerChanged gets have
// ended.
type breakerContexts struct {
	mu    sync.Mutex
	ended []bool
}

func (b *breakerContexts) BreakerChanged(ctx context.Context, _ BreakerState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = append(b.ended, ctx.Err() != nil)
}

// A relay pass that runs out of time is the broker's failure: the events
// are failed (an attempt counted, due again at once), not given back, and
// the breaker counts it, told on a context that has not ended.
func TestPassTimeoutIsABrokerFailure(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2)}
	h := &breakerContexts{}
	o := newTestOutbox(t, s, hangingPublisher, WithTimeout(20*time.Millisecond), WithBreaker(1, time.Hour, time.Hour), WithHooks(h))
	res, err := o.SyncPending(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.BrokerErr == nil || res.Failed != 2 || res.Released != 0 || len(s.failed) != 2 || len(s.released) != 0 {
		t.Fatalf("timed-out pass: %+v; failed %+v released %v", res, s.failed, s.released)
	}
	if b := o.Breaker(); !b.Open || b.Failures != 1 {
		t.Errorf("breaker %+v after one timed-out pass with threshold 1, want open", b)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ended) != 1 || h.ended[0] {
		t.Errorf("BreakerChanged calls (context ended?) %v, want one on a live context", h.ended)
	}
}

// An immediate publication that runs out of time gives its events back to
// the relay without counting an attempt or a broker failure; a relay that
// is stopped mid-pass does the same.
func TestImmediateTimeoutAndStopRelease(t *testing.T) {
	t.Parallel()
	s := &fakeStore{pending: events(2)}
	o := newTestOutbox(t, s, hangingPublisher, WithTimeout(20*time.Millisecond), WithBreaker(1, time.Hour, time.Hour))
	res, err := o.Publish(context.Background(), s.pending...)
	if err == nil || res.Released != 2 || res.Failed != 0 || len(s.failed) != 0 {
		t.Fatalf("timed-out Publish: %+v %v; failed %+v", res, err, s.failed)
	}
	if b := o.Breaker(); b.Failures != 0 {
		t.Errorf("breaker %+v after an immediate timeout, want no failure counted", b)
	}

	s2 := &fakeStore{pending: events(2)}
	o2 := newTestOutbox(t, s2, hangingPublisher, WithTimeout(time.Hour), WithBreaker(1, time.Hour, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	res, err = o2.SyncPending(ctx, 10)
	if err != nil || res.Released != 2 || res.Failed != 0 || o2.Breaker().Failures != 0 {
		t.Fatalf("stopped pass: %+v %v; breaker %+v", res, err, o2.Breaker())
	}
}
