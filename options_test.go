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
	if _, err := NewWorker(nil, Noop); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewWorker(nil store) = %v", err)
	}
}

func TestEnvOptions(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	opts, err := EnvOptions(env(map[string]string{
		EnvInterval: "250ms", EnvBatchSize: " 500 ", EnvTimeout: "7",
	}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := newConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.interval != 250*time.Millisecond || c.batchSize != 500 || c.timeout != 7*time.Second {
		t.Errorf("got interval %v batch %d timeout %v", c.interval, c.batchSize, c.timeout)
	}

	if opts, err := EnvOptions(env(map[string]string{EnvInterval: ""})); err != nil || len(opts) != 0 {
		t.Errorf("empty variable: %v %d options", err, len(opts))
	}
	for name, bad := range map[string]string{EnvInterval: "soon", EnvBatchSize: "1.5", EnvTimeout: "-3s"} {
		_, err := EnvOptions(env(map[string]string{name: bad}))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: err = %v, want ErrInvalidConfig naming the variable", name, bad, err)
		}
	}
	// Limits are checked at construction, naming the option.
	opts, _ = EnvOptions(env(map[string]string{EnvBatchSize: "1000000"}))
	if _, err := newConfig(opts); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("batch size 1000000 accepted: %v", err)
	}
}

func FuzzParseSeconds(f *testing.F) {
	for _, s := range []string{"10", "10s", "1m30s", "0", "-1", "abc", "9999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSeconds("X", s)
		if err == nil && d <= 0 {
			t.Fatalf("parseSeconds(%q) = %v without error", s, d)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
		}
	})
}
