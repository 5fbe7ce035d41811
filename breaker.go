package outbox

import (
	"sync"
	"time"
)

// BreakerState is a snapshot of the relay's circuit breaker.
type BreakerState struct {
	Open      bool      // the broker is considered down; the relay only probes
	Since     time.Time // when it opened; zero while closed
	Failures  int       // passes in a row in which the broker failed a whole batch
	NextProbe time.Time // when the next probe is due; zero while closed
}

// breaker counts whole-batch broker failures and, past a threshold, tells
// the relay to stop sending and probe with a growing delay instead.
type breaker struct {
	threshold int // -1: never opens
	min, max  time.Duration

	mu    sync.Mutex
	state BreakerState
	delay time.Duration
}

func newBreaker(threshold int, min, max time.Duration) *breaker {
	return &breaker{threshold: threshold, min: min, max: max}
}

func (b *breaker) snapshot() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state.Open
}

// success closes the breaker. It reports whether it was open.
func (b *breaker) success() (wasOpen bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen = b.state.Open
	b.state = BreakerState{}
	return wasOpen
}

// failure counts a whole-batch failure, or a failed probe while open. It
// reports whether this failure opened the breaker.
func (b *breaker) failure(now time.Time) (opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state.Failures++
	switch {
	case b.state.Open:
		b.delay = min(2*b.delay, b.max)
	case b.threshold > 0 && b.state.Failures >= b.threshold:
		b.state.Open, b.state.Since, b.delay = true, now, b.min
		opened = true
	default:
		return false
	}
	b.state.NextProbe = now.Add(b.delay)
	return opened
}

// postpone moves the next probe one probe delay ahead without counting a
// failure: the probe could not tell (nothing to send, the store failed).
func (b *breaker) postpone(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Open {
		b.state.NextProbe = now.Add(b.delay)
	}
}

// untilProbe is how long to wait before the next probe; 0 when one is due.
func (b *breaker) untilProbe(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, b.state.NextProbe.Sub(now))
}
