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

// TestWALMedians checks the wal group's arithmetic without a server: each
// figure's median over the runs, the median of each run's ratio to its
// own Save, and the publication's records less its saves'.
func TestWALMedians(t *testing.T) {
	run := func(save, relay int64) walRun {
		return walRun{
			{name: "save_x", events: 100, bytes: save, cluster: 2 * save},
			{name: "relay_x", events: 100, bytes: relay, fpi: relay / 2, base: "save_x", note: "n"},
		}
	}
	ms := walMedians([]walRun{run(1000, 50), run(2000, 40), run(1000, 30)})
	if len(ms) != 2 {
		t.Fatalf("%d figures, want 2", len(ms))
	}
	save, relay := ms[0], ms[1]
	if save.perEvent != 10 || save.ratio != 1 || save.cluster != 20 || save.runs != 3 {
		t.Errorf("save: %+v", save)
	}
	// Per event 0.5, 0.4, 0.3; ratios 0.05, 0.02, 0.03.
	if relay.perEvent != 0.4 || relay.ratio != 0.03 || relay.fpi != 0.2 || relay.base != "save_x" {
		t.Errorf("relay: %+v", relay)
	}
	if len(relay.notes) != 1 {
		t.Errorf("notes %q: want one, once", relay.notes)
	}
	if m := medianOf([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of an even count: %v", m)
	}
	if m := medianOf(nil); m != 0 {
		t.Errorf("median of none: %v", m)
	}
	if r := (walRun{}).ratio(walFigure{name: "a", events: 1, bytes: 1, base: "missing"}); r != 0 {
		t.Errorf("ratio to a missing Save: %v", r)
	}
	pub := []walPart{{rel: "pub_w", kind: "Heap:INSERT", records: 10, bytes: 1000}, {rel: "pub_w_partitions", kind: "Heap:HOT_UPDATE", records: 2, bytes: 200, fpis: 50}}
	saved := []walPart{{rel: "save1_w", kind: "Heap:INSERT", records: 10, bytes: 1000}, {rel: "save1_w", kind: "Heap:INSERT+INIT", records: 1, bytes: 90}}
	got := subtractParts(pub, saved, "save1_", "pub_")
	want := []walPart{{rel: "pub_w_partitions", kind: "Heap:HOT_UPDATE", records: 2, bytes: 200, fpis: 50}, {rel: "pub_w", kind: "Heap:INSERT+INIT", records: -1, bytes: -90}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("subtractParts = %+v, want %+v", got, want)
	}
}
