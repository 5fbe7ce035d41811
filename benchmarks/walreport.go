package main

import (
	"fmt"
	"io"
	"slices"
)

// walMedian is one figure over the runs: the medians of its bytes per
// event (the phase's own, its full-page images, the cluster's) and of the
// runs' ratios to their Save.
type walMedian struct {
	name     string
	base     string
	events   int
	seconds  float64
	perEvent float64
	fpi      float64
	cluster  float64
	ratio    float64
	runs     int
	notes    []string
}

// walMedians returns, for each figure of the first run, its medians over
// the runs.
func walMedians(runs []walRun) []walMedian {
	if len(runs) == 0 {
		return nil
	}
	var out []walMedian
	for _, f := range runs[0] {
		m := walMedian{name: f.name, base: f.base, events: f.events}
		var per, fpi, cluster, ratio, secs []float64
		for _, r := range runs {
			g, ok := r.get(f.name)
			if !ok {
				continue
			}
			per = append(per, g.perEvent())
			fpi = append(fpi, float64(g.fpi)/float64(g.events))
			cluster = append(cluster, float64(g.cluster)/float64(g.events))
			ratio = append(ratio, r.ratio(g))
			secs = append(secs, g.seconds)
			if g.note != "" && !slices.Contains(m.notes, g.note) {
				m.notes = append(m.notes, g.note)
			}
		}
		m.perEvent, m.fpi, m.cluster = medianOf(per), medianOf(fpi), medianOf(cluster)
		m.ratio, m.seconds, m.runs = medianOf(ratio), medianOf(secs), len(per)
		out = append(out, m)
	}
	return out
}

// medianOf returns the median of v (the mean of the middle two for an
// even count), 0 for none.
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// walColumns heads the tables' columns: bytes/event is the phase's own
// WAL per event, fpi/event the full-page images in it, cluster/event all
// the WAL the cluster wrote meanwhile (other sessions' too), x_save
// bytes/event over the Save's.
const walColumns = "%-28s %7s %7s %11s %9s %13s %7s  %s\n"

// walBreakdown lists the figures whose records a run's table details.
var walBreakdown = []string{"relay_watermarks", "publish_partitions", "publish_watermarks"}

// printWALRun writes one run's table.
func printWALRun(w io.Writer, title string, r walRun) {
	fmt.Fprintf(w, "\n%s\n"+walColumns, title, "figure", "events", "seconds", "bytes/event", "fpi/event", "cluster/event", "x_save", "save")
	for _, f := range r {
		fmt.Fprintf(w, "%-28s %7d %7.2f %11.1f %9.1f %13.1f %7.3f  %s\n", f.name, f.events, f.seconds, f.perEvent(),
			float64(f.fpi)/float64(f.events), float64(f.cluster)/float64(f.events), r.ratio(f), f.base)
	}
	for _, name := range walBreakdown {
		if f, ok := r.get(name); ok && len(f.parts) > 0 {
			printWALParts(w, name, f.events, f.parts, 10)
		}
	}
}

// printWALMedians writes the medians' table.
func printWALMedians(w io.Writer, title string, ms []walMedian) {
	fmt.Fprintf(w, "\n%s\n"+walColumns, title, "figure", "events", "seconds", "bytes/event", "fpi/event", "cluster/event", "x_save", "save")
	for _, m := range ms {
		fmt.Fprintf(w, "%-28s %7d %7.2f %11.1f %9.1f %13.1f %7.3f  %s\n", m.name, m.events, m.seconds, m.perEvent, m.fpi, m.cluster, m.ratio, m.base)
	}
	for _, m := range ms {
		for _, n := range m.notes {
			fmt.Fprintf(w, "  %s: %s\n", m.name, n)
		}
	}
}
