package outbox

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := newConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.interval != 10*time.Second || c.batchSize != 100 || c.timeout != 30*time.Second {
		t.Errorf("seed defaults not kept: interval %v batch %d timeout %v", c.interval, c.batchSize, c.timeout)
	}
	if c.lease != 2*c.timeout || c.maxAttempts != DefaultMaxAttempts || c.maxPayload != 1<<20 {
		t.Errorf("defaults: lease %v attempts %d payload %d", c.lease, c.maxAttempts, c.maxPayload)
	}
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		opt  Option
		name string
	}{
		"interval":    {WithInterval(time.Microsecond), "Interval"},
		"batch":       {WithBatchSize(-1), "BatchSize"},
		"big batch":   {WithBatchSize(MaxBatchSize + 1), "BatchSize"},
		"timeout":     {WithTimeout(time.Millisecond), "Timeout"},
		"lease":       {WithLease(time.Second), "Lease"},
		"attempts":    {WithMaxAttempts(-2), "MaxAttempts"},
		"backoff":     {WithBackoff(time.Minute, time.Second), "Backoff"},
		"backoff cap": {WithBackoff(time.Hour, 1<<62), "Backoff"},
		"probe cap":   {WithBreaker(3, time.Second, 1<<62), "probe"},
		"payload":     {WithMaxPayloadBytes(-1), "MaxPayloadBytes"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := newConfig([]Option{tc.opt})
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("err = %v, want ErrInvalidConfig naming %s", err, tc.name)
			}
		})
	}
	if _, err := New(nil, Noop{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New(nil store) = %v", err)
	}
}
