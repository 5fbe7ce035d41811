package sqlstore

import (
	"context"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// deliveries sums up what a relay with watermarks delivered by its marks
// since its last heartbeat: no synced_at records those events, so the
// heartbeat writes this instead (one row), for Stats and the console.
type deliveries struct {
	events   int64
	sumUS    int64
	maxUS    int64
	buckets  map[int]int64
	earliest time.Time
}

// latencyBucket is the histogram bucket of a latency in microseconds:
// four a doubling, so a percentile read from it is within 19 %.
func latencyBucket(us int64) int {
	return int(math.Floor(4 * math.Log2(1+float64(max(us, 0)))))
}

// bucketValue is the latency a bucket stands for: its middle.
func bucketValue(b int) float64 {
	lo, hi := math.Exp2(float64(b)/4)-1, math.Exp2(float64(b+1)/4)-1
	return (lo + hi) / 2
}

func (d *deliveries) add(latency time.Duration) {
	us := latency.Microseconds()
	if us < 0 {
		us = 0
	}
	if d.buckets == nil {
		d.buckets = map[int]int64{}
	}
	d.events++
	d.sumUS += us
	d.maxUS = max(d.maxUS, us)
	d.buckets[latencyBucket(us)]++
}

func (d *deliveries) merge(o deliveries) {
	if o.events == 0 {
		return
	}
	if d.buckets == nil {
		d.buckets = map[int]int64{}
	}
	d.events += o.events
	d.sumUS += o.sumUS
	d.maxUS = max(d.maxUS, o.maxUS)
	for b, n := range o.buckets {
		d.buckets[b] += n
	}
}

// histText is the histogram as the deliveries table keeps it.
func (d *deliveries) histText() string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(d.buckets)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(k) + ":" + strconv.FormatInt(d.buckets[k], 10))
	}
	return b.String()
}

// parseHist adds a histogram in the table's text form to d's buckets.
func (d *deliveries) parseHist(s string) {
	if d.buckets == nil {
		d.buckets = map[int]int64{}
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			continue
		}
		b, err1 := strconv.Atoi(k)
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err1 == nil && err2 == nil {
			d.buckets[b] += n
		}
	}
}

// percentile returns the latency at quantile q (0..1) of the histogram,
// and false when it is empty.
func (d *deliveries) percentile(q float64) (time.Duration, bool) {
	var total int64
	for _, n := range d.buckets {
		total += n
	}
	if total == 0 {
		return 0, false
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for _, b := range slices.Sorted(maps.Keys(d.buckets)) {
		if seen += d.buckets[b]; seen >= rank {
			v := min(bucketValue(b), float64(d.maxUS))
			return time.Duration(math.Round(v)) * time.Microsecond, true
		}
	}
	return time.Duration(d.maxUS) * time.Microsecond, true
}

// deliveredLatencyLocked counts an event delivered by its mark. l.mu held.
func (l *ledger) deliveredLatencyLocked(created time.Time) {
	if created.IsZero() || l.now == nil {
		return
	}
	l.deliv.add(l.now().Sub(created))
}

// takeDeliveries returns, and forgets, what was delivered by marks since
// the last call.
func (l *ledger) takeDeliveries() deliveries {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.deliv
	l.deliv = deliveries{}
	return d
}

// putBackDeliveries adds back what a heartbeat that failed did not write.
func (l *ledger) putBackDeliveries(d deliveries) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deliv.merge(d)
}

// writeDeliveries inserts, in a heartbeat's transaction, a row of what
// the relay delivered by its marks since its last heartbeat, and deletes
// rows older than a day.
func (o *owner) writeDeliveries(ctx context.Context, tx sqlx.ExecerContext, d deliveries) error {
	s := o.s
	table := s.t.Sibling(deliveriesSuffix)
	if d.events > 0 {
		q := newQuery(s.sx)
		q.sql("INSERT INTO ", table, " (relay, at, events, latency_sum_us, latency_max_us, latency_hist) VALUES (",
			q.arg(o.name), ", ", s.d.dbNow(), ", ", q.arg(d.events), ", ", q.arg(d.sumUS), ", ", q.arg(d.maxUS), ", ", q.arg(d.histText()), ")")
		if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
			return beatErr("record deliveries", err)
		}
	}
	q := newQuery(s.sx)
	q.sql("DELETE FROM ", table, " WHERE at < ", s.d.dbLater(q, -24*time.Hour))
	if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
		return beatErr("forget old deliveries", err)
	}
	return nil
}
