package outboxprom_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxprom"
)

// fakeStats is a StatsReader whose answer the test sets.
type fakeStats struct {
	mu     sync.Mutex
	st     outbox.Stats
	err    error
	block  bool // wait for the context to end
	reads  atomic.Int32
	window time.Duration
}

func (f *fakeStats) Stats(ctx context.Context, window time.Duration) (outbox.Stats, error) {
	f.reads.Add(1)
	f.mu.Lock()
	st, err, block := f.st, f.err, f.block
	f.window = window
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return outbox.Stats{}, ctx.Err()
	}
	return st, err
}

func (f *fakeStats) set(st outbox.Stats, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st, f.err = st, err
}

// fakeOwner is a fakeStats whose store owns the partitions the test sets,
// as sqlstore.Store does.
type fakeOwner struct {
	fakeStats
	ownMu sync.Mutex
	owned []int
}

func (f *fakeOwner) Owned() []int {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	return f.owned
}

func (f *fakeOwner) own(parts ...int) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	f.owned = parts
}

// TestStatsCollectorPartitionsOwned: a store that owns partitions gives
// outbox_partitions_owned, asked on every scrape (not cached), and also
// while the table cannot be read; a store that does not gives none
// (TestStatsCollectorExports).
func TestStatsCollectorPartitionsOwned(t *testing.T) {
	t.Parallel()
	f := &fakeOwner{fakeStats: fakeStats{st: outbox.Stats{PendingByType: map[string]int64{"a": 1}}}}
	f.own(3, 4, 9)
	c := newStats(t, f, outboxprom.WithStatsCacheFor(time.Hour), outboxprom.WithConstLabels(prometheus.Labels{"table": "outbox_events"}))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if g := gauge(t, reg, "outbox_partitions_owned"); g != 3 {
		t.Errorf("outbox_partitions_owned %v, want 3", g)
	}
	f.own(1)
	if g := gauge(t, reg, "outbox_partitions_owned"); g != 1 {
		t.Errorf("outbox_partitions_owned %v within the cache period, want the store's 1 now", g)
	}
	if n := f.reads.Load(); n != 1 {
		t.Errorf("%d reads of the table for two scrapes within the cache period, want 1", n)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// The table is down: the table figures go, the process's own stays.
	f.own()
	f.set(outbox.Stats{}, errors.New("connection refused"))
	down := prometheus.NewPedanticRegistry()
	down.MustRegister(newStats(t, f, outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache)))
	mfs, err := down.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if want := map[string]float64{"outbox_stats_up": 0, "outbox_partitions_owned": 0}; !maps.Equal(got, want) {
		t.Errorf("with the table down: %v, want %v", got, want)
	}
}

func TestStatsCollectorExports(t *testing.T) {
	t.Parallel()
	f := &fakeStats{st: outbox.Stats{
		Pending:          5,
		PendingByType:    map[string]int64{"stock.updated": 3, "reservation.created": 2},
		OldestPendingAge: 90 * time.Second,
		Dead:             4,
		Synced:           100,
		AvgSyncLatency:   20 * time.Millisecond,
		P99SyncLatency:   1500 * time.Millisecond,
	}}
	c := newStats(t, f, outboxprom.WithStatsWindow(time.Hour))
	want := `
# HELP outbox_events_dead Dead events in the table, waiting for an operator to re-queue them.
# TYPE outbox_events_dead gauge
outbox_events_dead 4
# HELP outbox_events_pending Events committed but not yet acknowledged by the broker (not dead), by type.
# TYPE outbox_events_pending gauge
outbox_events_pending{type="reservation.created"} 2
outbox_events_pending{type="stock.updated"} 3
# HELP outbox_events_synced_window Events synced within the stats window.
# TYPE outbox_events_synced_window gauge
outbox_events_synced_window 100
# HELP outbox_oldest_pending_age_seconds Age of the oldest pending event; 0 when none is pending.
# TYPE outbox_oldest_pending_age_seconds gauge
outbox_oldest_pending_age_seconds 90
# HELP outbox_stats_up 1 if the last read of the outbox store's figures succeeded, else 0.
# TYPE outbox_stats_up gauge
outbox_stats_up 1
# HELP outbox_sync_latency_avg_seconds Mean time from creation to acknowledgement of the events synced within the stats window.
# TYPE outbox_sync_latency_avg_seconds gauge
outbox_sync_latency_avg_seconds 0.02
# HELP outbox_sync_latency_p99_seconds 99th percentile of the time from creation to acknowledgement within the stats window.
# TYPE outbox_sync_latency_p99_seconds gauge
outbox_sync_latency_p99_seconds 1.5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if f.window != time.Hour {
		t.Errorf("window %v, want 1h", f.window)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestStatsCollectorCaches: scrapes within the cache period read the
// store once, concurrent scrapes included.
func TestStatsCollectorCaches(t *testing.T) {
	t.Parallel()
	f := &fakeStats{st: outbox.Stats{Pending: 1, PendingByType: map[string]int64{"a": 1}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStats(t, f, outboxprom.WithStatsCacheFor(time.Hour)))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := f.reads.Load(); n != 1 {
		t.Errorf("%d reads for 8 scrapes within the cache period, want 1", n)
	}
	f.set(outbox.Stats{Pending: 2, PendingByType: map[string]int64{"a": 2}}, nil)
	if g := gauge(t, reg, "outbox_events_pending", "type", "a"); g != 1 {
		t.Errorf("pending %v from the cache, want the cached 1", g)
	}

	// Without a cache every scrape reads.
	g := &fakeStats{st: outbox.Stats{}}
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(newStats(t, g, outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache)))
	for range 3 {
		if _, err := reg2.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.reads.Load(); n != 3 {
		t.Errorf("%d reads for 3 scrapes without cache, want 3", n)
	}
}

// TestStatsCollectorDown: a failing or slow store makes outbox_stats_up 0
// and leaves the other gauges out; the scrape itself succeeds in time.
func TestStatsCollectorDown(t *testing.T) {
	t.Parallel()
	f := &fakeStats{err: errors.New("connection refused")}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStats(t, f, outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache), outboxprom.WithStatsTimeout(50*time.Millisecond)))
	check := func() {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if len(mfs) != 1 || mfs[0].GetName() != "outbox_stats_up" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 0 {
			t.Fatalf("got %v, want only outbox_stats_up 0", mfs)
		}
	}
	check()
	f.mu.Lock()
	f.err, f.block = nil, true
	f.mu.Unlock()
	start := time.Now()
	check()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a blocked store held the scrape for %v", d)
	}
	f.mu.Lock()
	f.block = false
	f.mu.Unlock()
	if g := gauge(t, reg, "outbox_stats_up"); g != 1 {
		t.Errorf("outbox_stats_up %v once the store answers, want 1", g)
	}
}
