package outbox

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// maintainingStore is a storage.Maintainer: it fails once, then asks to
// be called again at once until its fourth call, then says it has nothing
// to maintain.
type maintainingStore struct {
	fakeStore
	calls atomic.Int32
}

func (m *maintainingStore) Maintain(context.Context) (time.Duration, error) {
	switch n := m.calls.Add(1); {
	case n == 1:
		return time.Millisecond, errors.New("lock timeout")
	case n < 4:
		return time.Millisecond, nil
	}
	return 0, nil
}

// Run maintains a storage.Maintainer in a goroutine of its own, retries
// after a failure and stops when Maintain returns 0.
func TestRunMaintains(t *testing.T) {
	t.Parallel()
	m := &maintainingStore{}
	w := newTestOutbox(t, m, Noop{}, WithInterval(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, func() bool { return m.calls.Load() == 4 })
	time.Sleep(20 * time.Millisecond)
	if n := m.calls.Load(); n != 4 {
		t.Errorf("%d Maintain calls after it returned 0, want 4", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
