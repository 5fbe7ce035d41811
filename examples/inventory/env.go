package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// The relay's environment variables, named as in the system this service
// grew out of.
const (
	envInterval  = "EVENT_SYNC_INTERVAL"   // a Go duration ("10s") or whole seconds ("10")
	envBatchSize = "EVENT_SYNC_BATCH_SIZE" // a whole number
	envTimeout   = "EVENT_SYNC_TIMEOUT"    // a Go duration or whole seconds
	// envWatermarks (true or false) makes the relay record delivery per
	// partition instead of per event (sqlstore.WithWatermarks, Postgres).
	envWatermarks = "EVENT_SYNC_WATERMARKS"
)

// relaySettings are the relay's settings read from the environment; a
// zero field was not set and keeps the outbox's default.
type relaySettings struct {
	Interval  time.Duration
	BatchSize int
	Timeout   time.Duration
}

// options returns the outbox options the settings stand for.
func (s relaySettings) options() []outbox.Option {
	var opts []outbox.Option
	if s.Interval != 0 {
		opts = append(opts, outbox.WithInterval(s.Interval))
	}
	if s.BatchSize != 0 {
		opts = append(opts, outbox.WithBatchSize(s.BatchSize))
	}
	if s.Timeout != 0 {
		opts = append(opts, outbox.WithTimeout(s.Timeout))
	}
	return opts
}

// readRelaySettings reads EVENT_SYNC_INTERVAL, EVENT_SYNC_BATCH_SIZE and
// EVENT_SYNC_TIMEOUT through lookup; unset or empty variables set nothing.
// A malformed value is an error naming the variable; limits are checked by
// outbox.New.
func readRelaySettings(lookup func(string) (string, bool)) (relaySettings, error) {
	var s relaySettings
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	if v, ok := get(envInterval); ok {
		d, err := parseSeconds(envInterval, v)
		if err != nil {
			return relaySettings{}, err
		}
		s.Interval = d
	}
	if v, ok := get(envBatchSize); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return relaySettings{}, fmt.Errorf("%w: %s=%q is not a positive whole number", outbox.ErrInvalidConfig, envBatchSize, v)
		}
		s.BatchSize = n
	}
	if v, ok := get(envTimeout); ok {
		d, err := parseSeconds(envTimeout, v)
		if err != nil {
			return relaySettings{}, err
		}
		s.Timeout = d
	}
	return s, nil
}

// parseSeconds accepts a Go duration ("1m30s") or whole seconds ("90").
func parseSeconds(name, v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 && n < 1<<31 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: %s=%q is not a positive duration such as \"10s\" or \"10\"", outbox.ErrInvalidConfig, name, v)
	}
	return d, nil
}
