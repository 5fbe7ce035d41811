package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Readiness says when a relay is stuck. A zero field is not checked.
type Readiness struct {
	MaxPendingAge  time.Duration // not ready when the oldest pending event is older
	MaxBreakerOpen time.Duration // not ready when the breaker has been open longer
}

// ErrNotReady is wrapped by the error of Ready when a threshold is crossed.
var ErrNotReady = errors.New("outbox: not ready")

// Ready returns nil when the relay keeps up: its breaker has not been open
// longer than r.MaxBreakerOpen and, if r.MaxPendingAge is set, the oldest
// pending event is younger (the store must then implement StatsReader).
// Otherwise the error, wrapping ErrNotReady, says which threshold.
func (w *Worker) Ready(ctx context.Context, r Readiness) error {
	if b := w.Breaker(); r.MaxBreakerOpen > 0 && b.Open && time.Since(b.Since) > r.MaxBreakerOpen {
		return fmt.Errorf("%w: circuit breaker open for %v (limit %v)", ErrNotReady, time.Since(b.Since).Round(time.Millisecond), r.MaxBreakerOpen)
	}
	if r.MaxPendingAge <= 0 {
		return nil
	}
	sr, ok := w.store.(StatsReader)
	if !ok {
		return fmt.Errorf("outbox: readiness: the store (%T) computes no Stats", w.store)
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

// ReadyHandler serves Ready as an HTTP readiness probe: 200 with
// {"ready":true}, or 503 with {"ready":false,"error":"..."}.
func (w *Worker) ReadyHandler(r Readiness) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), w.cfg.timeout)
		defer cancel()
		body := map[string]any{"ready": true}
		status := http.StatusOK
		if err := w.Ready(ctx, r); err != nil {
			status, body["ready"], body["error"] = http.StatusServiceUnavailable, false, err.Error()
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(status)
		_ = json.NewEncoder(rw).Encode(body)
	})
}
