package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox/internal/leaktest"
)

// TestMain lets the test binary act as the relay child process, which the
// outage and memory scenarios start from os.Executable; as the test binary
// it fails the run if a goroutine outlives the tests (sarama's by-design
// ones aside).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:]))
	}
	leaktest.Main(m)
}

// TestQuick runs every scenario in -quick mode against the servers the
// flags' defaults (or OUTBOX_BENCH_* variables) name, so the benchmark
// cannot rot. It checks the output's shape, not the figures.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres, MySQL and Redis")
	}
	cfg, err := parseFlags([]string{"-quick"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out, log bytes.Buffer
	res, err := run(context.Background(), cfg, &out, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	if len(res.list) == 0 {
		t.Fatal("no scenario ran")
	}
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if r.Scenario == "" || r.Events <= 0 {
			t.Errorf("incomplete result %q", line)
		}
		n++
	}
	if n != len(res.list) {
		t.Errorf("%d JSON lines for %d scenarios", n, len(res.list))
	}
	t.Log(out.String())
}

// TestPartitionRetries drains a backlog with two prototype relays whose
// publisher fails the first attempt of one event in 37: every event must
// still reach the stream, each aggregate's in save order (partitionDrain
// checks both and fails otherwise).
func TestPartitionRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres and Redis")
	}
	cfg, err := parseFlags([]string{"-quick", "-mysql", ""}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.drainTimeout = 20 * time.Second
	var log bytes.Buffer
	b, err := newBench(context.Background(), cfg, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	r, err := b.partitionDrain(context.Background(), "retries", 2, cfg.events, 100, partOpts{failEvery: 37}, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Note, "NOT DRAINED") || !strings.Contains(r.Note, "first attempts failed") || strings.Contains(r.Note, " 0 first attempts failed") {
		t.Fatal(r.Note)
	}
	t.Log(r.Note)
}
