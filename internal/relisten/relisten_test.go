package relisten

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunRetriesWithCatchUpAndBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var calls []bool
	var at []time.Time
	err := Run(ctx, func(catchUp bool) (bool, error) {
		calls = append(calls, catchUp)
		at = append(at, time.Now())
		if len(calls) == 4 {
			cancel()
		}
		return false, nil // never listened: the delay doubles
	})
	if err != nil {
		t.Fatalf("Run = %v after its context ended, want nil", err)
	}
	if len(calls) != 4 || calls[0] || !calls[1] || !calls[3] {
		t.Fatalf("catch-up flags %v, want false then true", calls)
	}
	if d1, d2 := at[2].Sub(at[1]), at[1].Sub(at[0]); d1 < RetryMin || d2 < RetryMin || d1 < d2 {
		t.Errorf("delays %v then %v: want at least %v, doubling", d2, d1, RetryMin)
	}
}

func TestRunStopsOnAFatalError(t *testing.T) {
	boom := errors.New("cannot listen at all")
	n := 0
	err := Run(t.Context(), func(bool) (bool, error) { n++; return false, boom })
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("Run = %v after %d sessions, want the fatal error after one", err, n)
	}
}
