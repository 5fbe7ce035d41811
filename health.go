package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Readiness says when a relay is stuck. A zero field is not checked.
type Readiness struct {
	MaxPendingAge  time.Duration // not ready when the oldest pending event is older
	MaxBreakerOpen time.Duration // not ready when the breaker has been open longer
}

// ErrNotReady is wrapped by the error of Ready when a threshold is crossed.
var ErrNotReady = errors.New("outbox: not ready")

// Ready is the check behind a readiness probe. It returns nil when the
// relay keeps up: its breaker has not been open longer than
// r.MaxBreakerOpen and, if r.MaxPendingAge is set, the oldest pending event
// is younger (the store must then implement StatsReader). Otherwise the
// error, wrapping ErrNotReady, says which threshold.
func (o *Outbox) Ready(ctx context.Context, r Readiness) error {
	if b := o.Breaker(); r.MaxBreakerOpen > 0 && b.Open && time.Since(b.Since) > r.MaxBreakerOpen {
		return fmt.Errorf("%w: circuit breaker open for %v (limit %v)", ErrNotReady, time.Since(b.Since).Round(time.Millisecond), r.MaxBreakerOpen)
	}
	if r.MaxPendingAge <= 0 {
		return nil
	}
	sr, ok := o.store.(StatsReader)
	if !ok {
		return fmt.Errorf("outbox: readiness: the store (%T) computes no Stats", o.store)
	}
	st, err := sr.Stats(ctx, time.Minute)
	if err != nil {
		return fmt.Errorf("outbox: readiness: %w", err)
	}
	if st.OldestPendingAge > r.MaxPendingAge {
		return fmt.Errorf("%w: oldest pending event is %v old (limit %v)", ErrNotReady, st.OldestPendingAge.Round(time.Millisecond), r.MaxPendingAge)
	}
	return nil
}
