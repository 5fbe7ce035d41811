package outboxprom_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxprom"
	"github.com/eventsync/outbox/sqlstore"
)

// broker is a publisher whose answer the test sets per event type.
type broker struct {
	mu   sync.Mutex
	down error            // fail every batch with this error
	fail map[string]error // event type -> error for such events
}

func (b *broker) set(down error, fail map[string]error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down, b.fail = down, fail
}

func (b *broker) Publish(_ context.Context, events []*outbox.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down != nil {
		return b.down
	}
	failed := map[string]error{}
	for _, e := range events {
		if err := b.fail[e.Type]; err != nil {
			failed[e.ID] = err
		}
	}
	if len(failed) > 0 {
		return &outbox.PublishError{Failed: failed}
	}
	return nil
}

type bundle struct {
	db    *sqlx.DB
	store *sqlstore.Store
	pub   *broker
	reg   *prometheus.Registry
	m     *outboxprom.Metrics
	ob    *outbox.Outbox
}

// setup returns an Outbox on a fresh SQLite table whose hooks feed a
// Metrics registered on a registry of the test's own.
func setup(t *testing.T, opts ...outbox.Option) *bundle {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outbox.db")
	db, err := sqlx.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	store, err := sqlstore.New(db, sqlstore.WithTable("outbox_prom_"+hex.EncodeToString(b[:])))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	bd := &bundle{db: db, store: store, pub: &broker{}, reg: prometheus.NewRegistry(), m: newMetrics(t)}
	bd.reg.MustRegister(bd.m, newStats(t, store, outboxprom.WithStatsCacheFor(outboxprom.NoStatsCache)))
	opts = append([]outbox.Option{
		outbox.WithHooks(bd.m),
		outbox.WithBackoff(time.Microsecond, time.Microsecond),
		outbox.WithBreaker(2, time.Hour, time.Hour),
	}, opts...)
	bd.ob, err = outbox.New(store, bd.pub, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return bd
}

// save commits events of the given types, without publishing them.
func (b *bundle) save(t *testing.T, types ...string) []*outbox.Event {
	t.Helper()
	events := make([]*outbox.Event, len(types))
	for i, typ := range types {
		events[i] = &outbox.Event{Topic: "stock", Type: typ, AggregateID: "sku-" + typ + string(rune('a'+i)), Payload: []byte("{}")}
	}
	tx, err := b.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ob.Save(t.Context(), tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return events
}

func (b *bundle) sync(t *testing.T) outbox.Result {
	t.Helper()
	res, err := b.ob.SyncPending(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// metric returns the sample of the metric name whose labels include
// the given name/value pairs, or nil.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// counter returns the value of a counter of topic stock and the type.
func counter(t *testing.T, b *bundle, name, typ string) float64 {
	t.Helper()
	return metric(t, b.reg, name, "topic", "stock", "type", typ).GetCounter().GetValue()
}

func gauge(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	return metric(t, reg, name, labels...).GetGauge().GetValue()
}

type histo struct {
	count uint64
	sum   float64
}

func histogram(t *testing.T, b *bundle, name string, labels ...string) histo {
	t.Helper()
	h := metric(t, b.reg, name, labels...).GetHistogram()
	return histo{h.GetSampleCount(), h.GetSampleSum()}
}

// TestMetricsFollowTheRelay publishes, fails and buries events through a
// real relay and store and checks that every metric moves by exactly what
// happened.
func TestMetricsFollowTheRelay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pub.set(nil, map[string]error{
		"flaky":  errors.New("busy"),
		"poison": outbox.Permanent(errors.New("too large")),
	})
	b.save(t, "ok", "ok", "flaky", "poison")
	wantGauges := func(when string, gauges map[string]float64) {
		t.Helper()
		for name, v := range gauges {
			labels := []string{}
			if n, typ, ok := strings.Cut(name, "/"); ok {
				name, labels = n, []string{"type", typ}
			}
			if got := gauge(t, b.reg, name, labels...); got != v {
				t.Errorf("%s: %s%v = %v, want %v", when, name, labels, got, v)
			}
		}
	}
	wantGauges("after saving", map[string]float64{
		"outbox_events_pending/ok": 2, "outbox_events_pending/flaky": 1, "outbox_events_pending/poison": 1,
		"outbox_events_dead": 0, "outbox_events_synced_window": 0, "outbox_stats_up": 1,
	})
	if age := gauge(t, b.reg, "outbox_oldest_pending_age_seconds"); age < 0 || age > 60 {
		t.Errorf("outbox_oldest_pending_age_seconds = %v", age)
	}
	// The store owns the table's one partition (SQLite) from the relay's
	// first claim on.
	if m := metric(t, b.reg, "outbox_partitions_owned"); m == nil || m.GetGauge().GetValue() != 0 {
		t.Errorf("outbox_partitions_owned before any claim: %v, want 0", m)
	}

	if res := b.sync(t); res.Synced != 2 || res.Failed != 1 || res.Dead != 1 {
		t.Fatalf("first pass: %+v", res)
	}
	want := map[string]map[string]float64{
		"outbox_events_published_total": {"ok": 2, "flaky": 0, "poison": 0},
		"outbox_events_failed_total":    {"ok": 0, "flaky": 1, "poison": 1},
		"outbox_events_dead_total":      {"ok": 0, "flaky": 0, "poison": 1},
	}
	check := func(when string) {
		t.Helper()
		for name, byType := range want {
			for typ, v := range byType {
				if got := counter(t, b, name, typ); got != v {
					t.Errorf("%s: %s{type=%q} = %v, want %v", when, name, typ, got, v)
				}
			}
		}
	}
	check("after the first pass")
	if g := gauge(t, b.reg, "outbox_partitions_owned"); g != 1 {
		t.Errorf("outbox_partitions_owned after the first pass: %v, want 1", g)
	}
	wantGauges("after the first pass", map[string]float64{
		"outbox_events_pending/ok": 0, "outbox_events_pending/flaky": 1, "outbox_events_pending/poison": 0,
		"outbox_events_dead": 1, "outbox_events_synced_window": 2,
	})
	if h := histogram(t, b, "outbox_relay_batch_size"); h.count != 1 || h.sum != 4 {
		t.Errorf("outbox_relay_batch_size: %+v, want one batch of 4", h)
	}
	if h := histogram(t, b, "outbox_sync_lag_seconds"); h.count != 2 || h.sum < 0 || h.sum > 60 {
		t.Errorf("outbox_sync_lag_seconds: %+v, want 2 observations", h)
	}
	if h := histogram(t, b, "outbox_publish_duration_seconds", "mode", "relay"); h.count != 1 {
		t.Errorf("outbox_publish_duration_seconds{mode=relay}: %+v, want 1 observation", h)
	}

	// The flaky event goes through on its retry; the buried one stays.
	b.pub.set(nil, nil)
	time.Sleep(5 * time.Millisecond) // past the 1µs backoff, on the store's real clock
	if res := b.sync(t); res.Synced != 1 {
		t.Fatalf("second pass: %+v", res)
	}
	want["outbox_events_published_total"]["flaky"] = 1
	check("after the retry")
	wantGauges("after the retry", map[string]float64{
		"outbox_events_pending/flaky": 0, "outbox_events_dead": 1, "outbox_events_synced_window": 3,
		"outbox_oldest_pending_age_seconds": 0,
	})
	if h := histogram(t, b, "outbox_relay_batch_size"); h.count != 2 || h.sum != 5 {
		t.Errorf("outbox_relay_batch_size: %+v, want batches of 4 and 1", h)
	}

	// Nothing due: no batch, nothing moves.
	b.sync(t)
	check("after an empty pass")
	if h := histogram(t, b, "outbox_relay_batch_size"); h.count != 2 {
		t.Errorf("an empty pass was observed: %+v", h)
	}
}

// TestMetricsBreaker takes the broker down until the breaker opens, then
// brings it back.
func TestMetricsBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	open := func() float64 { return gauge(t, b.reg, "outbox_circuit_breaker_open") }
	if g := open(); g != 0 {
		t.Fatalf("breaker gauge %v before any failure", g)
	}
	b.pub.set(errors.New("connection refused"), nil)
	b.save(t, "ok")
	b.sync(t)
	if g := open(); g != 0 {
		t.Fatalf("breaker gauge %v after one failure (threshold 2)", g)
	}
	b.sync(t)
	if g := open(); g != 1 {
		t.Fatalf("breaker gauge %v after two failures, want 1", g)
	}
	if n := metric(t, b.reg, "outbox_broker_failures_total").GetCounter().GetValue(); n != 2 {
		t.Errorf("outbox_broker_failures_total = %v, want 2", n)
	}
	if got := counter(t, b, "outbox_events_failed_total", "ok"); got != 2 {
		t.Errorf("failed attempts %v, want 2", got)
	}
	if got := counter(t, b, "outbox_events_dead_total", "ok"); got != 0 {
		t.Errorf("a broker outage buried %v events", got)
	}
	b.pub.set(nil, nil)
	b.sync(t) // the relay's SyncPending publishes regardless of the breaker; success closes it
	if g := open(); g != 0 {
		t.Fatalf("breaker gauge %v after the broker came back, want 0", g)
	}
}

// TestMetricsImmediate checks that publication right after commit is
// counted with mode immediate and is not a relay batch.
func TestMetricsImmediate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.ob.Transact(t.Context(), b.db, func(tx *outbox.Tx) error {
		return tx.Save(t.Context(), &outbox.Event{Topic: "stock", Type: "ok", AggregateID: "sku-1", Payload: []byte("{}")})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := counter(t, b, "outbox_events_published_total", "ok"); got != 1 {
		t.Errorf("published %v, want 1", got)
	}
	if h := histogram(t, b, "outbox_publish_duration_seconds", "mode", "immediate"); h.count != 1 {
		t.Errorf("immediate publish duration: %+v", h)
	}
	if h := histogram(t, b, "outbox_relay_batch_size"); h.count != 0 {
		t.Errorf("an immediate publication counted as a relay batch: %+v", h)
	}
}

// TestMetricsHeldBack: an event not sent because an earlier event of its
// aggregate failed is no failed attempt.
func TestMetricsHeldBack(t *testing.T) {
	t.Parallel()
	m := newMetrics(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	a := &outbox.Event{ID: "a", Topic: "t", Type: "x", CreatedAt: time.Now()}
	c := &outbox.Event{ID: "c", Topic: "t", Type: "x", CreatedAt: time.Now()}
	m.AfterPublish(t.Context(), outbox.PublishDone{
		Events: []*outbox.Event{a, c},
		Failed: map[string]error{"a": errors.New("nope"), "c": outbox.ErrHeldBack},
	})
	if got := metric(t, reg, "outbox_events_failed_total", "type", "x").GetCounter().GetValue(); got != 1 {
		t.Errorf("failed %v, want 1", got)
	}
}

// TestMetricsLint runs client_golang's linter over the exposition.
func TestMetricsLint(t *testing.T) {
	t.Parallel()
	m := newMetrics(t, outboxprom.WithConstLabels(prometheus.Labels{"table": "outbox_events"}))
	m.AfterPublish(t.Context(), outbox.PublishDone{Events: []*outbox.Event{{ID: "a", Topic: "t", Type: "x"}}})
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(m, "outbox_events_published_total"); n != 1 {
		t.Errorf("%d published series, want 1", n)
	}
}
