package outboxtest

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/eventsync/outbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPublisherRecordsAndFails(t *testing.T) {
	t.Parallel()
	p := NewPublisher()
	a, b := &outbox.Event{ID: "a"}, &outbox.Event{ID: "b"}
	if err := p.Publish(context.Background(), []*outbox.Event{a}); err != nil {
		t.Fatal(err)
	}
	p.FailWhen(func(e *outbox.Event) error {
		if e.ID == "b" {
			return errors.New("no")
		}
		return nil
	})
	var pe *outbox.PublishError
	if err := p.Publish(context.Background(), []*outbox.Event{a, b}); !errors.As(err, &pe) || len(pe.Failed) != 1 {
		t.Fatalf("partial failure: %v", err)
	}
	p.SetDown(errors.New("down"))
	if err := p.Publish(context.Background(), []*outbox.Event{a}); err == nil {
		t.Fatal("Publish while down returned nil")
	}
	if got := len(p.Published()); got != 2 || p.Calls() != 3 {
		t.Fatalf("published %d in %d calls, want 2 in 3", got, p.Calls())
	}
}
