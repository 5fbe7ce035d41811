package main

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/storage"
)

// runKafkaRelay measures the relay from Postgres to an in-process Kafka
// cluster (kfake), with the kafka publisher's defaults.
func runKafkaRelay(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	r, err := median(b.cfg.runs, func(int) (*Result, error) {
		return b.drain(ctx, drainOpts{name: "relay_pg_kafka_1r", db: b.pg, what: "kafka", relays: 1, n: b.cfg.events, ordered: true,
			publisher: kafkaPublisher(nil)})
	})
	if err != nil {
		return err
	}
	b.res.add(r)
	b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	return nil
}

// kafkaPublisher returns a factory of kafka publishers, each on its own
// kfake cluster with the topic created.
func kafkaPublisher(cfg func() *sarama.Config) func(string) (outbox.Publisher, func(), error) {
	return func(topic string) (outbox.Publisher, func(), error) {
		c, err := newKafka(topic, 6)
		if err != nil {
			return nil, nil, err
		}
		var sc *sarama.Config
		if cfg != nil {
			sc = cfg()
		}
		p, err := kafka.New(c.ListenAddrs(), sc)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return p, func() { p.Close(); c.Close() }, nil
	}
}

// ackRecorder wraps a publisher and records when each event was
// acknowledged.
type ackRecorder struct {
	outbox.Publisher
	mu   sync.Mutex
	acks map[string]time.Time
}

func (a *ackRecorder) Publish(ctx context.Context, events []*outbox.Event) error {
	err := a.Publisher.Publish(ctx, events)
	now := time.Now()
	if err == nil {
		a.mu.Lock()
		for _, e := range events {
			a.acks[e.ID] = now
		}
		a.mu.Unlock()
	}
	return err
}

func (a *ackRecorder) ackedAt(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.acks[id]
	return t, ok
}

// runLatency measures commit → broker ack: with immediate publication
// (Outbox.Publish right after Commit), and through a relay woken by the
// store's notifications (Postgres LISTEN/NOTIFY), one event per
// transaction, one at a time.
func runLatency(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	n := 2000
	if b.cfg.quick {
		n = 200
	}
	// immediate: Publish in a process that runs no relay (it leases the
	// row); immediate_owner: Publish beside the process's relay, which
	// owns the partitions (the claim is in memory); relay_notify: no
	// Publish, the relay woken by the commit's notification.
	// The _watermarks modes: the same, on a Store WithWatermarks.
	for _, mode := range []string{"immediate", "immediate_owner", "relay_notify", "immediate_owner_watermarks", "relay_notify_watermarks"} {
		var runs []*Result
		for range b.cfg.runs {
			r, err := b.latency(ctx, mode, n)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		// The median run by p99.
		slices.SortFunc(runs, func(x, y *Result) int { return cmpFloat(x.P99us, y.P99us) })
		r := runs[len(runs)/2]
		r.Runs = b.cfg.runs
		b.res.add(r)
		b.logf("%s: p50 %.0f µs, p99 %.0f µs", r.Scenario, r.P50us, r.P99us)
	}
	return nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (b *bench) latency(ctx context.Context, mode string, n int) (*Result, error) {
	name := mode
	mode, marks := strings.CutSuffix(mode, "_watermarks")
	st, table, err := b.newStore(ctx, b.pg, "latency", marksOpt(marks)...)
	if err != nil {
		return nil, err
	}
	defer b.drop(b.pg, table)
	topic := b.stream("latency")
	defer b.rdb.Del(ctx, topic)
	pubF, _, _ := b.redisPublisher()(topic)
	rec := &ackRecorder{Publisher: pubF, acks: map[string]time.Time{}}
	ob, err := outbox.New(st, rec, outbox.WithBatchSize(b.cfg.batch))
	if err != nil {
		return nil, err
	}
	_, notifies := any(st).(storage.Notifier)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if mode == "relay_notify" || mode == "immediate_owner" {
		wg.Go(func() { _ = ob.Run(rctx) })
		time.Sleep(200 * time.Millisecond) // let the relay start listening
	}
	defer func() { cancel(); wg.Wait() }()

	lat := make([]time.Duration, 0, n)
	for i := range n {
		e := &outbox.Event{Topic: topic, Type: "stock.updated", AggregateID: fmt.Sprintf("sku-%d", i%100), Payload: []byte(`{"quantity":8}`)}
		tx, err := b.pg.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		if err := ob.Save(ctx, tx, e); err != nil {
			tx.Rollback()
			return nil, err
		}
		if err := tx.Commit(); err != nil {
			return nil, err
		}
		committed := time.Now()
		if mode == "immediate" || mode == "immediate_owner" {
			if _, err := ob.Publish(ctx, e); err != nil {
				return nil, err
			}
		}
		deadline := committed.Add(30 * time.Second)
		for {
			if at, ok := rec.ackedAt(e.ID); ok {
				lat = append(lat, at.Sub(committed))
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("latency %s: event not acknowledged within 30 s (store notifies: %v)", mode, notifies)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	slices.Sort(lat)
	var total time.Duration
	for _, d := range lat {
		total += d
	}
	r := &Result{Scenario: "latency_commit_to_ack_" + name, Events: n, Seconds: round(total.Seconds(), 3),
		P50us: percentile(lat, 50), P99us: percentile(lat, 99)}
	if mode == "relay_notify" && !notifies {
		r.Note = "the store does not notify: the relay waits for its interval"
	}
	return r, nil
}

// runSave compares Save of one event inside the caller's transaction with
// a plain single-row INSERT of the same columns, and counts the round
// trips of a Save of 100 events.
func runSave(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	n := 5000
	if b.cfg.quick {
		n = 500
	}
	var plain, save []*Result
	for range b.cfg.runs {
		p, s, err := b.saveCost(ctx, n)
		if err != nil {
			return err
		}
		plain, save = append(plain, p), append(save, s)
	}
	med := func(rs []*Result) *Result {
		slices.SortFunc(rs, func(x, y *Result) int { return cmpFloat(x.P50us, y.P50us) })
		r := rs[len(rs)/2]
		r.Runs = len(rs)
		return r
	}
	p, s := b.res.add(med(plain)), b.res.add(med(save))
	s.Baseline = p.Scenario
	s.RatioToBaseline = round(s.P50us/p.P50us, 2)
	s.Note = "ratio is of the median time per call (p50), not of events/s"

	r, err := b.saveRoundTrips(ctx)
	if err != nil {
		return err
	}
	b.res.add(r)
	return nil
}

// countingExec counts the statements sent through a transaction.
type countingExec struct {
	*sql.Tx
	n atomic.Int64
}

func (c *countingExec) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	c.n.Add(1)
	return c.Tx.ExecContext(ctx, q, args...)
}

func (b *bench) saveCost(ctx context.Context, n int) (plain, save *Result, err error) {
	st, table, err := b.newStore(ctx, b.pg, "save")
	if err != nil {
		return nil, nil, err
	}
	defer b.drop(b.pg, table)
	// The same columns and constraints, without the outbox.
	plainTable := b.name("plain")
	b.own(b.pg, plainTable)
	defer b.drop(b.pg, plainTable)
	if _, err := b.pg.ExecContext(ctx, "CREATE TABLE "+plainTable+" (LIKE "+table+" INCLUDING ALL)"); err != nil {
		return nil, nil, err
	}
	ob, err := outbox.New(st, outbox.Noop{})
	if err != nil {
		return nil, nil, err
	}
	events := newEvents(n, 100, 256, "t")
	insert := "INSERT INTO " + plainTable + " (id, topic, event_type, aggregate_id, payload, headers, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
	timeIt := func(name string, f func(tx *sql.Tx, e *outbox.Event) error) (*Result, error) {
		tx, err := b.pg.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		lat := make([]time.Duration, 0, n)
		start := time.Now()
		for _, e := range events {
			t := time.Now()
			if err := f(tx, e); err != nil {
				return nil, err
			}
			lat = append(lat, time.Since(t))
		}
		d := time.Since(start)
		if err := tx.Commit(); err != nil {
			return nil, err
		}
		slices.Sort(lat)
		r := throughput(name, n, d)
		r.P50us, r.P99us = percentile(lat, 50), percentile(lat, 99)
		return r, nil
	}
	plain, err = timeIt("save_plain_insert_1_row", func(tx *sql.Tx, e *outbox.Event) error {
		now := time.Now().UTC()
		_, err := tx.ExecContext(ctx, insert, outbox.NewID(), e.Topic, e.Type, e.AggregateID, e.Payload, nil, now, now)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	save, err = timeIt("save_outbox_1_event", func(tx *sql.Tx, e *outbox.Event) error {
		c := *e
		return ob.Save(ctx, tx, &c)
	})
	return plain, save, err
}

func (b *bench) saveRoundTrips(ctx context.Context) (*Result, error) {
	st, table, err := b.newStore(ctx, b.pg, "save100")
	if err != nil {
		return nil, err
	}
	defer b.drop(b.pg, table)
	ob, err := outbox.New(st, outbox.Noop{})
	if err != nil {
		return nil, err
	}
	tx, err := b.pg.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	c := &countingExec{Tx: tx}
	events := newEvents(100, 10, 256, "t")
	start := time.Now()
	if err := ob.Save(ctx, c, events...); err != nil {
		return nil, err
	}
	d := time.Since(start)
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	r := throughput("save_outbox_100_events_one_call", 100, d)
	r.Runs = 1
	r.Note = fmt.Sprintf("%d statement(s) sent", c.n.Load())
	return r, nil
}

var _ = sqlx.DB{}
