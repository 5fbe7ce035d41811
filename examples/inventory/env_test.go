package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

func TestReadRelaySettings(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	s, err := readRelaySettings(env(map[string]string{
		envInterval: "250ms", envBatchSize: " 500 ", envTimeout: "7",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Interval != 250*time.Millisecond || s.BatchSize != 500 || s.Timeout != 7*time.Second {
		t.Errorf("got interval %v batch %d timeout %v", s.Interval, s.BatchSize, s.Timeout)
	}
	if len(s.options()) != 3 {
		t.Errorf("%d options, want 3", len(s.options()))
	}

	if s, err := readRelaySettings(env(map[string]string{envInterval: ""})); err != nil || len(s.options()) != 0 {
		t.Errorf("empty variable: %v %d options", err, len(s.options()))
	}
	for name, bad := range map[string]string{envInterval: "soon", envBatchSize: "1.5", envTimeout: "-3s"} {
		_, err := readRelaySettings(env(map[string]string{name: bad}))
		if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: err = %v, want ErrInvalidConfig naming the variable", name, bad, err)
		}
	}
	// Limits are checked at construction, naming the option.
	s, _ = readRelaySettings(env(map[string]string{envBatchSize: "1000000"}))
	if _, err := outbox.New(nopStore{}, outbox.Noop{}, s.options()...); !errors.Is(err, outbox.ErrInvalidConfig) {
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
		if err != nil && !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
		}
	})
}

// FuzzRelaySettings checks that any values of the three variables either
// fail with ErrInvalidConfig naming the variable or give options that
// outbox.New accepts or refuses with ErrInvalidConfig, never a panic or a
// zero setting.
func FuzzRelaySettings(f *testing.F) {
	f.Add("10s", "100", "30s")
	f.Add("10", "1", "1")
	f.Add("", "", "")
	f.Add("1m30s", "10000", "500ms")
	f.Add("-1s", "0", "0")
	f.Add("soon", "1.5", "9999999999999")
	f.Fuzz(func(t *testing.T, interval, batch, timeout string) {
		vars := map[string]string{envInterval: interval, envBatchSize: batch, envTimeout: timeout}
		s, err := readRelaySettings(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
		if err != nil {
			if !errors.Is(err, outbox.ErrInvalidConfig) {
				t.Fatalf("readRelaySettings error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if s.Interval < 0 || s.BatchSize < 0 || s.Timeout < 0 {
			t.Fatalf("accepted %q %q %q as %+v", interval, batch, timeout, s)
		}
		if _, err := outbox.New(nopStore{}, outbox.Noop{}, s.options()...); err != nil && !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Fatalf("outbox.New error %v does not wrap ErrInvalidConfig", err)
		}
	})
}
