package outbox

import (
	"errors"
	"testing"
)

// FuzzEnvOptions checks that any values of the three variables either
// fail with ErrInvalidConfig naming the variable or give options that New
// accepts or refuses with ErrInvalidConfig, never a panic or a zero
// setting.
func FuzzEnvOptions(f *testing.F) {
	f.Add("10s", "100", "30s")
	f.Add("10", "1", "1")
	f.Add("", "", "")
	f.Add("1m30s", "10000", "500ms")
	f.Add("-1s", "0", "0")
	f.Add("soon", "1.5", "9999999999999")
	f.Fuzz(func(t *testing.T, interval, batch, timeout string) {
		vars := map[string]string{EnvInterval: interval, EnvBatchSize: batch, EnvTimeout: timeout}
		opts, err := EnvOptions(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("EnvOptions error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		c, err := newConfig(opts)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("newConfig error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if c.interval < MinInterval || c.batchSize < 1 || c.batchSize > MaxBatchSize || c.timeout < MinTimeout || c.lease <= c.timeout {
			t.Fatalf("accepted %q %q %q as interval %v, batch %d, timeout %v, lease %v", interval, batch, timeout, c.interval, c.batchSize, c.timeout, c.lease)
		}
	})
}
