package outboxprom_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxprom"
	"github.com/eventsync/outbox/storage"
)

// fakeRunway is a store that may be partitioned by save time.
type fakeRunway struct {
	fakeOwner
	rmu         sync.Mutex
	rw          storage.Runway
	partitioned bool
	err         error
}

func (f *fakeRunway) Runway(context.Context) (storage.Runway, bool, error) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	return f.rw, f.partitioned, f.err
}

// TestStatsCollectorRunway: a store partitioned by time gives its runway
// and the rows of its DEFAULT partition with the table's figures; one
// that is not, or whose runway cannot be read, gives neither, and the
// table's figures stay.
func TestStatsCollectorRunway(t *testing.T) {
	t.Parallel()
	f := &fakeRunway{partitioned: true, rw: storage.Runway{Ahead: 36 * time.Hour, DefaultRows: 7}}
	f.st = outbox.Stats{PendingByType: map[string]int64{"a": 1}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newStats(t, f, outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache)))
	if g := gauge(t, reg, "outbox_partition_runway_seconds"); g != 36*3600 {
		t.Errorf("outbox_partition_runway_seconds %v, want %v", g, 36*3600)
	}
	if g := gauge(t, reg, "outbox_partition_default_rows"); g != 7 {
		t.Errorf("outbox_partition_default_rows %v, want 7", g)
	}
	problems, err := testutil.CollectAndLint(newStats(t, f))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, change := range []func(){
		func() { f.partitioned = false },
		func() { f.partitioned, f.err = true, errors.New("lock timeout") },
	} {
		f.rmu.Lock()
		change()
		f.rmu.Unlock()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		if names["outbox_partition_runway_seconds"] || names["outbox_partition_default_rows"] || !names["outbox_stats_up"] || !names["outbox_events_pending"] {
			t.Errorf("exported %v, want the table's figures without the runway", names)
		}
	}
}
