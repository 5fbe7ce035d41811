// Command outbox-bench measures the outbox relay against the limits of its
// database and broker, and against the relays it replaces, in one run.
//
// Every throughput figure is the median of -runs runs and is compared with
// a baseline measured in the same process run, so the ratios hold on a
// busy machine where the absolute figures do not. It prints a table, then
// the targets met or missed, then one JSON object per scenario.
//
//	go run . [-quick] [-runs 3] [-events 100000]
//
// Each run works in its own tables (prefix obb_<random>) and stream keys
// and removes only what it created.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

// config is what the flags set.
type config struct {
	postgres, mysql, redis string
	quick                  bool
	runs                   int
	events                 int // backlog of the drain scenarios
	bigEvents              int // backlog of the outage and memory scenarios
	batch                  int
	only                   string
	longTxFor              time.Duration
	cpuProfile             string
	profileScenario        string
	partitionProfile       string
	keep                   bool
	drainTimeout           time.Duration
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, err := run(ctx, cfg, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox-bench:", err)
		os.Exit(1)
	}
	if failed := results.failedChecks(); failed > 0 {
		fmt.Fprintf(os.Stderr, "outbox-bench: %d targets not met (see above)\n", failed)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("outbox-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.postgres, "postgres", env("OUTBOX_BENCH_POSTGRES", "postgres://root@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL (env OUTBOX_BENCH_POSTGRES); empty skips Postgres")
	fs.StringVar(&c.mysql, "mysql", env("OUTBOX_BENCH_MYSQL", "root@tcp(127.0.0.1:3306)/test"), "MySQL/MariaDB DSN (env OUTBOX_BENCH_MYSQL); empty skips MySQL")
	fs.StringVar(&c.redis, "redis", env("OUTBOX_BENCH_REDIS", "127.0.0.1:6379"), "Redis host:port (env OUTBOX_BENCH_REDIS)")
	fs.BoolVar(&c.quick, "quick", false, "small counts, one run: a smoke test of every scenario in a few seconds")
	fs.IntVar(&c.runs, "runs", 3, "runs of each scenario; the median is reported")
	fs.IntVar(&c.events, "events", 100_000, "backlog of the drain scenarios")
	fs.IntVar(&c.bigEvents, "big", 1_000_000, "backlog of the outage and memory scenarios")
	fs.IntVar(&c.batch, "batch", 1000, "relay batch size (the one setting changed from the SDK defaults)")
	fs.StringVar(&c.only, "only", "", "comma-separated scenario groups to run (limits,original,watermill,relay,kafka,latency,outage,memory,save,pgx,compression,partition,wal,longtx); empty runs all but longtx")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of a relay drain (-profile-scenario) to this file")
	fs.StringVar(&c.profileScenario, "profile-scenario", "relay_pg_redis_1r", "the relay scenario -cpuprofile profiles")
	fs.StringVar(&c.partitionProfile, "partition-cpuprofile", "", "write a CPU profile of the 1-relay partition-ownership prototype drain to this file")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 2*time.Minute, "give up a drain that has not finished after this long, and report how far it got")
	fs.DurationVar(&c.longTxFor, "longtx-for", 11*time.Minute, "how long the longtx scenario writes (its transactions stay open for all but the first minute)")
	fs.BoolVar(&c.keep, "keep", false, "keep tables and streams after the run (for inspection)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.quick {
		c.runs = 1
		c.events = 3000
		c.bigEvents = 20000
		c.drainTimeout = 5 * time.Second
		c.longTxFor = 8 * time.Second
	}
	if c.runs < 1 || c.events < c.batch || c.bigEvents < c.batch {
		fmt.Fprintln(stderr, "outbox-bench: -runs must be at least 1 and -events and -big at least -batch")
		return c, fmt.Errorf("bad flags")
	}
	return c, nil
}

func (c config) wants(group string) bool {
	if c.only == "" {
		return !slices.Contains(explicitGroups, group)
	}
	for _, g := range strings.Split(c.only, ",") {
		if strings.TrimSpace(g) == group {
			return true
		}
	}
	return false
}

// Result is one scenario's figure, printed as a table row and as JSON.
type Result struct {
	Scenario        string  `json:"scenario"`
	Events          int     `json:"events"`
	Seconds         float64 `json:"seconds"`
	EventsPerSec    float64 `json:"events_per_sec"`
	P50us           float64 `json:"p50_us,omitempty"`
	P99us           float64 `json:"p99_us,omitempty"`
	Baseline        string  `json:"baseline,omitempty"`
	RatioToBaseline float64 `json:"ratio_to_baseline,omitempty"`
	PeakRSSMB       float64 `json:"peak_rss_mb,omitempty"`
	// WALBytesPerEvent is the write-ahead log a phase wrote per event
	// (the wal group); RatioToBaseline is then of this figure.
	WALBytesPerEvent float64 `json:"wal_bytes_per_event,omitempty"`
	Runs             int     `json:"runs"`
	Note             string  `json:"note,omitempty"`
}

// check is one target of the issue and whether this run met it.
type check struct {
	Target string
	Figure string
	Met    bool
}

type results struct {
	list   []*Result
	byName map[string]*Result
	checks []check
	// info are lines printed after the targets that no target depends on
	// (the prototype's figures against the targets it is meant for).
	info []check
	// tables are printed before the main table: those of groups whose
	// figures are not throughputs (the wal group's runs and medians).
	tables []string
}

func (r *results) add(res *Result) *Result {
	if r.byName == nil {
		r.byName = map[string]*Result{}
	}
	r.list = append(r.list, res)
	r.byName[res.Scenario] = res
	return res
}

func (r *results) get(name string) *Result { return r.byName[name] }

// relate sets res's baseline and ratio (events/s over the baseline's).
func (r *results) relate(res *Result, baseline string) {
	b := r.get(baseline)
	if res == nil || b == nil || b.EventsPerSec == 0 {
		return
	}
	res.Baseline = baseline
	res.RatioToBaseline = round(res.EventsPerSec/b.EventsPerSec, 3)
}

func (r *results) check(target, figure string, met bool) {
	r.checks = append(r.checks, check{target, figure, met})
}

func (r *results) failedChecks() int {
	n := 0
	for _, c := range r.checks {
		if !c.Met {
			n++
		}
	}
	return n
}

func (r *results) print(w io.Writer) {
	for _, t := range r.tables {
		fmt.Fprint(w, t)
	}
	fmt.Fprintf(w, "\n%-40s %9s %8s %10s %9s %9s %7s %8s  %s\n", "scenario", "events", "seconds", "events/s", "p50_us", "p99_us", "ratio", "rss_MB", "baseline")
	for _, res := range r.list {
		num := func(v float64, f string) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf(f, v)
		}
		fmt.Fprintf(w, "%-40s %9d %8.3f %10s %9s %9s %7s %8s  %s\n", res.Scenario, res.Events, res.Seconds,
			num(res.EventsPerSec, "%.0f"), num(res.P50us, "%.0f"), num(res.P99us, "%.0f"),
			num(res.RatioToBaseline, "%.2f"), num(res.PeakRSSMB, "%.1f"), res.Baseline)
	}
	if len(r.checks) > 0 {
		fmt.Fprintln(w, "\ntargets:")
		for _, c := range r.checks {
			mark := "met    "
			if !c.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(w, "  %s  %-60s %s\n", mark, c.Target, c.Figure)
		}
	}
	if len(r.info) > 0 {
		fmt.Fprintln(w, "\ninformational (not targets of this program):")
		for _, c := range r.info {
			mark := "would meet"
			if !c.Met {
				mark = "would miss"
			}
			fmt.Fprintf(w, "  %s  %-60s %s\n", mark, c.Target, c.Figure)
		}
	}
	fmt.Fprintln(w)
	enc := json.NewEncoder(w)
	for _, res := range r.list {
		_ = enc.Encode(res)
	}
}

// run runs every scenario the config wants and prints the results.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (*results, error) {
	b, err := newBench(ctx, cfg, stderr)
	if err != nil {
		return nil, err
	}
	defer b.close()
	start := time.Now()
	for _, g := range groups {
		if !cfg.wants(g.name) || ctx.Err() != nil {
			continue
		}
		b.logf("== %s", g.name)
		if err := g.run(ctx, b); err != nil {
			return nil, fmt.Errorf("%s: %w", g.name, err)
		}
	}
	evaluate(&b.res, cfg)
	b.res.print(stdout)
	b.logf("done in %s", time.Since(start).Round(time.Second))
	return &b.res, ctx.Err()
}

// explicitGroups run only when -only names them.
var explicitGroups = []string{"longtx"}

// groups are the scenario groups, in the order they run: baselines first.
var groups = []struct {
	name string
	run  func(ctx context.Context, b *bench) error
}{
	{"limits", runLimits},
	{"original", runOriginal},
	{"watermill", runWatermill},
	{"relay", runRelay},
	{"kafka", runKafkaRelay},
	{"latency", runLatency},
	{"outage", runOutage},
	{"memory", runMemory},
	{"save", runSave},
	{"pgx", runPgx},
	{"compression", runCompression},
	{"partition", runPartition},
	{"wal", runWAL},
	{"longtx", runLongTx}, // only when named: it lasts -longtx-for
}
