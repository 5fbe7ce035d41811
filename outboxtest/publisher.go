// Package outboxtest holds helpers for testing code that uses the outbox:
// a Publisher that records what it acknowledged and fails on demand.
package outboxtest

import (
	"context"
	"sync"

	"github.com/eventsync/outbox"
)

// Publisher is an outbox.Publisher for tests. It acknowledges every event
// and records it, unless it was told to fail: SetDown fails whole batches,
// FailWhen fails single events. It is safe for concurrent use.
type Publisher struct {
	mu        sync.Mutex
	down      error
	failWhen  func(*outbox.Event) error
	published []*outbox.Event
	calls     int
}

// NewPublisher returns a Publisher that acknowledges everything.
func NewPublisher() *Publisher { return &Publisher{} }

// SetDown makes every later Publish fail as a whole with err, as a broker
// that cannot be reached does; SetDown(nil) brings it back.
func (p *Publisher) SetDown(err error) {
	p.mu.Lock()
	p.down = err
	p.mu.Unlock()
}

// FailWhen makes Publish fail each event for which f returns an error,
// reported in an *outbox.PublishError, and acknowledge the others.
// FailWhen(nil) clears it.
func (p *Publisher) FailWhen(f func(*outbox.Event) error) {
	p.mu.Lock()
	p.failWhen = f
	p.mu.Unlock()
}

// Publish implements outbox.Publisher.
func (p *Publisher) Publish(ctx context.Context, events []*outbox.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.down != nil {
		return p.down
	}
	failed := map[string]error{}
	for _, e := range events {
		if p.failWhen != nil {
			if err := p.failWhen(e); err != nil {
				failed[e.ID] = err
				continue
			}
		}
		c := *e
		p.published = append(p.published, &c)
	}
	if len(failed) > 0 {
		return &outbox.PublishError{Failed: failed}
	}
	return nil
}

// Published returns copies of the events acknowledged so far, in the order
// they were acknowledged.
func (p *Publisher) Published() []*outbox.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*outbox.Event(nil), p.published...)
}

// Calls returns how many times Publish was called.
func (p *Publisher) Calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}
