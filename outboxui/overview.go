package outboxui

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// chartMinutes is how far back the overview's chart reaches.
const chartMinutes = 60

// overviewData is what the overview shows.
type overviewData struct {
	Pending sqlstore.PendingFigures
	Dead    int64
	Types   []typeCount
	Synced  int64 // within the chart's hour
	Sampled int64 // the latest synced events the latencies are over
	P50     time.Duration
	P99     time.Duration
	Chart   chart
	Breaker *outbox.BreakerState
}

type typeCount struct {
	Type string
	N    int64
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := h.ctx(r)
	defer cancel()
	// Four reads of three indexes, side by side on four connections.
	var d overviewData
	var per []int64
	var start time.Time
	var lat sqlstore.Latency
	errs := make([]error, 4)
	var wg sync.WaitGroup
	wg.Go(func() { d.Pending, errs[0] = h.store.Pending(ctx) })
	wg.Go(func() { d.Dead, errs[1] = h.store.CountDead(ctx, "") })
	wg.Go(func() { per, start, errs[2] = h.store.SyncedPerMinute(ctx, chartMinutes) })
	wg.Go(func() { lat, errs[3] = h.store.SyncLatency(ctx, chartMinutes*time.Minute) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	for _, typ := range slices.Sorted(maps.Keys(d.Pending.ByType)) {
		d.Types = append(d.Types, typeCount{typ, d.Pending.ByType[typ]})
	}
	d.Chart = newChart(per, start)
	d.Synced, d.Sampled, d.P50, d.P99 = d.Chart.Total, lat.Events, lat.P50, lat.P99
	if h.c.breaker != nil {
		b := h.c.breaker()
		d.Breaker = &b
	}
	h.render(w, r, http.StatusOK, "overview", layout{Title: "Overview", Nav: "overview"}, d)
}

// chart is the synced-per-minute bar chart, drawn as SVG on the server
// so that it needs no script.
type chart struct {
	Width, Height int
	Bars          []bar
	Max           int64
	Total         int64
	From, To      time.Time
}

// bar is one minute of the chart.
type bar struct {
	X, Y, W, H int
	Title      string
}

func newChart(per []int64, start time.Time) chart {
	const barW, height = 10, 120
	c := chart{Width: barW * len(per), Height: height, From: start, To: start.Add(time.Duration(len(per)) * time.Minute)}
	for _, n := range per {
		c.Max = max(c.Max, n)
		c.Total += n
	}
	for i, n := range per {
		h := 0
		if c.Max > 0 {
			h = int(n * int64(height) / c.Max)
		}
		if n > 0 && h == 0 {
			h = 1
		}
		at := start.Add(time.Duration(i) * time.Minute)
		c.Bars = append(c.Bars, bar{X: i * barW, Y: height - h, W: barW - 2, H: h,
			Title: fmt.Sprintf("%s UTC: %d synced", at.Format("15:04"), n)})
	}
	return c
}
