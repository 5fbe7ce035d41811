//go:build unix

package main

import (
	"fmt"
	"time"
)

// Config is one chaos run.
type Config struct {
	DB       string // "postgres" or "mysql"
	DSN      string // the database, reached directly by the writers
	Broker   string // "redis" or "kafka"
	RedisURL string // the Redis broker, reached by relays through a proxy
	// KafkaBrokers are a real Kafka cluster's bootstrap addresses; with
	// none, -broker kafka runs an in-process kfake cluster.
	KafkaBrokers []string

	Events   int           // committed events to write
	Duration time.Duration // how long writing and faults last
	Writers  int           // writer goroutines
	Relays   int           // relay processes running at any time
	Seed     int64

	// FaultGap is the range of the pause between two fault starts.
	FaultGapMin, FaultGapMax time.Duration
	// Drain bounds the wait for the table to empty once faults stop.
	Drain time.Duration
	// Lease is the relays' lease; a paused relay sleeps past it.
	Lease time.Duration

	// Idempotent publishes with redisstream.WithIdempotence; the run then
	// also fails on any duplicate at the broker.
	Idempotent bool
	// Watermarks runs the relays with delivery recorded per partition
	// (sqlstore.WithWatermarks; Postgres only).
	Watermarks bool

	Verbose bool
}

// ShortConfig is the CI run: about a minute, a few thousand events, 20 or
// more faults.
func ShortConfig() Config {
	return Config{
		DB: "postgres", Broker: "redis", Events: 3000, Duration: 40 * time.Second, Writers: 4, Relays: 3,
		FaultGapMin: 700 * time.Millisecond, FaultGapMax: 1500 * time.Millisecond,
		Drain: 40 * time.Second, Lease: 2 * time.Second,
	}
}

// LongConfig is the long run: 100,000 events and hundreds of faults.
func LongConfig() Config {
	c := ShortConfig()
	c.Events, c.Duration, c.Drain = 100_000, 6*time.Minute, 3*time.Minute
	c.FaultGapMin, c.FaultGapMax = 500*time.Millisecond, 1200*time.Millisecond
	return c
}

func (c Config) validate() error {
	switch {
	case c.DB != "postgres" && c.DB != "mysql":
		return fmt.Errorf("-db %q: want postgres or mysql", c.DB)
	case c.DSN == "":
		return fmt.Errorf("no %s DSN: pass -dsn or set OUTBOX_TEST_POSTGRES / OUTBOX_TEST_MYSQL", c.DB)
	case c.Broker != "redis" && c.Broker != "kafka":
		return fmt.Errorf("-broker %q: want redis or kafka", c.Broker)
	case c.Watermarks && c.DB != "postgres":
		return fmt.Errorf("-watermarks needs -db postgres")
	case c.Broker == "kafka" && c.Idempotent:
		return fmt.Errorf("-idempotent is for -broker redis")
	case c.Broker == "redis" && c.RedisURL == "":
		return fmt.Errorf("no Redis: pass -redis or set OUTBOX_TEST_REDIS")
	case c.Events < 1 || c.Writers < 1 || c.Relays < 1:
		return fmt.Errorf("-events, -writers and -relays must be positive")
	case c.Duration <= 0:
		return fmt.Errorf("-duration must be positive")
	}
	return nil
}
