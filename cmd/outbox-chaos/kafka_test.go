//go:build unix

package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestShortRunKafka is the chaos run with -broker kafka: the relays
// publish with the kafka package, through a proxy per broker, to an
// in-process kfake cluster (or to the brokers of OUTBOX_TEST_KAFKA), and
// the check reads the topics back. It is shorter than the Redis run, with
// faults a little closer together so that 20 or more still happen. It
// needs OUTBOX_TEST_POSTGRES and skips without it.
func TestShortRunKafka(t *testing.T) {
	pg := os.Getenv("OUTBOX_TEST_POSTGRES")
	if pg == "" {
		t.Skip("Kafka chaos run skipped: set OUTBOX_TEST_POSTGRES to run it")
	}
	if testing.Short() {
		t.Skip("chaos run skipped with -short")
	}
	cfg := ShortConfig()
	cfg.DSN, cfg.Broker, cfg.Seed = pg, "kafka", time.Now().UnixNano()
	if env := os.Getenv("OUTBOX_TEST_KAFKA"); env != "" {
		cfg.KafkaBrokers = strings.Split(env, ",")
	}
	// 24 s holds 21 faults at the longest gap (1.1 s).
	cfg.Events, cfg.Duration = 1500, 24*time.Second
	cfg.FaultGapMin, cfg.FaultGapMax = 600*time.Millisecond, 1100*time.Millisecond
	cfg.Drain = 30 * time.Second
	res := shortRun(t, cfg)
	if res != nil && res.Broker != "kafka" {
		t.Errorf("broker %q in the result, want kafka", res.Broker)
	}
}

func TestKafkaFlags(t *testing.T) {
	t.Setenv("OUTBOX_TEST_POSTGRES", "postgres://u@h:5432/db")
	t.Setenv("OUTBOX_TEST_REDIS", "")
	t.Setenv("OUTBOX_TEST_KAFKA", "")
	cfg, err := parseFlags([]string{"-short", "-broker", "kafka", "-kafka", "k1:9092,k2:9092"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Broker != "kafka" || len(cfg.KafkaBrokers) != 2 || cfg.KafkaBrokers[1] != "k2:9092" {
		t.Fatalf("-broker kafka -kafka: %+v", cfg)
	}
	if _, err := parseFlags([]string{"-broker", "kafka"}); err != nil {
		t.Fatalf("-broker kafka without brokers (kfake) refused: %v", err)
	}
	if _, err := parseFlags([]string{"-broker", "kafka", "-idempotent"}); err == nil {
		t.Fatal("-broker kafka -idempotent accepted")
	}
	if _, err := parseFlags([]string{"-broker", "nats"}); err == nil {
		t.Fatal("-broker nats accepted")
	}
	via := map[string]string{"127.0.0.1:1": "127.0.0.1:2", "127.0.0.1:3": "127.0.0.1:4"}
	got, err := parseVia(formatVia(via))
	if err != nil || len(got) != 2 || got["127.0.0.1:3"] != "127.0.0.1:4" {
		t.Fatalf("via round trip: %v %v", got, err)
	}
	if _, err := parseVia("nonsense"); err == nil {
		t.Fatal("parseVia accepted nonsense")
	}
}
