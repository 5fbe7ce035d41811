package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// The WAL scenarios (group "wal", Postgres only) count the bytes of
// write-ahead log each step of an event's life writes, per event: the
// service's Save, a relay's drain of the backlog under each delivery
// protocol, the purge of what was delivered, and publication right after
// commit. WAL is a physical count, so unlike a throughput it does not move
// with the machine's load; it is what a replica, a backup and the disk
// pay. Every phase starts with a CHECKPOINT, so that each pays the
// full-page images of the pages it touches first, alike. Its WAL is that
// of its own records, told apart from other sessions' with pg_walinspect
// (walinspect.go); without that extension, the distance the cluster's
// WAL insert position moved, which counts whatever else the server
// writes meanwhile.

const (
	walAggregates = 1000 // the backlog's events cycle through this many aggregates
	walPerTx      = 10   // events per business transaction of the Save phase
)

// walProtocol is one way a relay records delivery.
type walProtocol struct {
	name  string // figure name part
	opts  []sqlstore.Option
	purge bool // measure Store.Purge of the drained events
	pub   bool // measure publication right after commit
}

var walProtocols = []walProtocol{
	{name: "row_leases", opts: []sqlstore.Option{sqlstore.WithRowLeases()}},
	{name: "partitions", purge: true, pub: true},
	{name: "watermarks", opts: []sqlstore.Option{sqlstore.WithWatermarks()}, purge: true, pub: true},
}

// walFigure is one figure of one run: WAL bytes over events, and what
// it is compared with (a Save figure of the same run, or none for a Save
// that is its own baseline).
type walFigure struct {
	name    string
	events  int
	bytes   int64 // the phase's WAL (for publish: over its save)
	cluster int64 // the cluster's WAL over the same time (for publish: over its save's)
	fpi     int64 // of bytes: full-page images
	parts   []walPart
	seconds float64
	base    string // the Save figure it is relative to; "" for itself
	note    string
}

// set records what the phase wrote.
func (f *walFigure) set(c walCount, seconds float64) {
	f.bytes, f.cluster, f.fpi, f.parts, f.seconds = c.bytes(), c.cluster, c.fpi, c.parts, seconds
}

// measure runs f as the figure's phase (see walMeasure).
func (b *bench) measure(ctx context.Context, env walEnv, fig *walFigure, f func() error) error {
	c, secs, err := b.walMeasure(ctx, env, f)
	if err != nil {
		return fmt.Errorf("%s: %w", fig.name, err)
	}
	fig.set(c, secs)
	return nil
}

func (f walFigure) perEvent() float64 {
	if f.events == 0 {
		return 0
	}
	return float64(f.bytes) / float64(f.events)
}

// walRun is the figures of one run, in the order they were measured.
type walRun []walFigure

func (r walRun) get(name string) (walFigure, bool) {
	for _, f := range r {
		if f.name == name {
			return f, true
		}
	}
	return walFigure{}, false
}

// ratio is f's bytes per event over its Save's (1 for a Save).
func (r walRun) ratio(f walFigure) float64 {
	if f.base == "" {
		return 1
	}
	b, ok := r.get(f.base)
	if !ok || b.perEvent() == 0 {
		return 0
	}
	return f.perEvent() / b.perEvent()
}

// runWAL measures the WAL per event of each phase, -runs times, and
// reports each figure's median.
func runWAL(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	pubN := 3000
	if b.cfg.quick {
		pubN = 300
	}
	var runs []walRun
	var sb strings.Builder
	for i := range b.cfg.runs {
		r, err := b.walRun(ctx, b.cfg.events, pubN)
		if err != nil {
			return err
		}
		runs = append(runs, r)
		printWALRun(&sb, fmt.Sprintf("WAL per event, run %d of %d", i+1, b.cfg.runs), r)
		b.logf("wal run %d done", i+1)
	}
	ms := walMedians(runs)
	printWALMedians(&sb, fmt.Sprintf("WAL per event, median of %d runs (x_save: the median of each run's figure over its Save's)", len(runs)), ms)
	b.res.tables = append(b.res.tables, sb.String())
	for _, m := range ms {
		r := b.res.add(&Result{Scenario: "wal_" + m.name, Events: m.events, Seconds: round(m.seconds, 3), Runs: m.runs,
			WALBytesPerEvent: round(m.perEvent, 1), Note: strings.Join(m.notes, "; ")})
		if m.base != "" {
			r.Baseline, r.RatioToBaseline = "wal_"+m.base, round(m.ratio, 3)
			r.Note = strings.TrimPrefix(r.Note+"; ratio is of WAL bytes per event", "; ")
		}
	}
	byName := map[string]walMedian{}
	for _, m := range ms {
		byName[m.name] = m
	}
	target := func(what, name string, limit float64) {
		m, ok := byName[name]
		if !ok {
			return
		}
		b.res.check(what, fmt.Sprintf("%.3f× (%.1f vs %.1f bytes/event)", m.ratio, m.perEvent, byName[m.base].perEvent), m.ratio <= limit)
	}
	target("relay WAL/event with watermarks ≤ 5% of the Save's", "relay_watermarks", 0.05)
	target("immediate publish WAL/event with watermarks ≤ 10% of the Save's", "publish_watermarks", 0.10)
	return nil
}

// walRun measures every phase once, in a schema of its own that it drops
// at the end.
func (b *bench) walRun(ctx context.Context, n, pubN int) (walRun, error) {
	schema := b.name("wal")
	if _, err := b.pg.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		return nil, err
	}
	defer func() {
		if !b.cfg.keep {
			_, _ = b.pg.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		}
	}()
	env := walEnv{schema: schema, inspect: b.walInspect(ctx, schema)}
	var run walRun
	for _, p := range walProtocols {
		figs, err := b.walDrain(ctx, env, p, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		run = append(run, figs...)
	}
	for _, p := range walProtocols {
		if !p.pub {
			continue
		}
		figs, err := b.walPublish(ctx, env, p, pubN)
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", p.name, err)
		}
		run = append(run, figs...)
	}
	return run, nil
}

// walStore creates a table in schema for protocol p.
func (b *bench) walStore(ctx context.Context, schema, what string, p walProtocol) (*sqlstore.Store, error) {
	st, err := sqlstore.New(b.pg, append([]sqlstore.Option{sqlstore.WithTable(schema + "." + what + "_" + p.name)}, p.opts...)...)
	if err != nil {
		return nil, err
	}
	return st, st.Migrate(ctx)
}

// walSave saves n events for topic through ob, in transactions of perTx
// events, event i of aggregate i mod walAggregates, from workers
// goroutines at once (as a service's requests do; it shortens the phase
// and writes the same records).
func (b *bench) walSave(ctx context.Context, ob *outbox.Outbox, n, perTx, workers int, topic string) error {
	events := newEvents(n, walAggregates, 256, topic)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)-1) * perTx
				if i >= n || ctx.Err() != nil {
					return
				}
				tx, err := b.pg.BeginTx(ctx, nil)
				if err == nil {
					if err = ob.Save(ctx, tx, events[i:min(i+perTx, n)]...); err != nil {
						tx.Rollback()
					} else {
						err = tx.Commit()
					}
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// walPending waits at most within until the store's Stats count nothing
// pending (for a Store with watermarks, until the heartbeats have
// recorded the marks that cover every delivered event), and returns how
// many are still pending.
func (b *bench) walPending(ctx context.Context, st *sqlstore.Store, within time.Duration) (int64, error) {
	deadline := time.Now().Add(within)
	for {
		s, err := st.Stats(ctx, 0)
		if err != nil || s.Pending == 0 || time.Now().After(deadline) {
			return s.Pending, err
		}
		select {
		case <-ctx.Done():
			return s.Pending, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// walDrain saves a backlog of n events into a new table of protocol p,
// drains it with one relay to Redis and, if p.purge, purges it,
// measuring each phase.
func (b *bench) walDrain(ctx context.Context, env walEnv, p walProtocol, n int) (walRun, error) {
	st, err := b.walStore(ctx, env.schema, "drain", p)
	if err != nil {
		return nil, err
	}
	topic := b.stream("wal")
	defer b.rdb.Del(ctx, topic)
	saver, err := outbox.New(st, outbox.Noop{})
	if err != nil {
		return nil, err
	}
	save := walFigure{name: "save_" + p.name, events: n}
	if err := b.measure(ctx, env, &save, func() error { return b.walSave(ctx, saver, n, walPerTx, 4, topic) }); err != nil {
		return nil, err
	}
	// As autovacuum would after a large insert (it is off on the servers
	// this was written on); outside the phases.
	if err := analyze(ctx, b.pg, st.Table()); err != nil {
		return nil, err
	}
	pub, _, err := b.redisPublisher()(topic)
	if err != nil {
		return nil, err
	}
	cs := newDrainCounter(n)
	ob, err := outbox.New(&countingStore{st, cs}, pub, outbox.WithBatchSize(b.cfg.batch))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	relay := walFigure{name: "relay_" + p.name, events: n, base: save.name}
	err = b.measure(ctx, env, &relay, func() error {
		wg.Go(func() { _ = ob.Run(rctx) })
		select {
		case <-cs.done:
		case <-time.After(b.cfg.drainTimeout):
			return fmt.Errorf("not drained after %s: %d of %d marked", b.cfg.drainTimeout, cs.synced.Load(), n)
		case <-ctx.Done():
			return ctx.Err()
		}
		// Under watermarks the marks are recorded by the heartbeat, after
		// the last MarkSynced: they are the cost, so wait for them.
		left, err := b.walPending(ctx, st, b.cfg.drainTimeout)
		if err == nil && left > 0 {
			err = fmt.Errorf("%d events still pending %s after the last mark", left, b.cfg.drainTimeout)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	cancel()
	wg.Wait()
	out := walRun{save, relay}
	if !p.purge {
		return out, nil
	}
	purged := 0
	purge := walFigure{name: "purge_" + p.name, events: n, base: save.name}
	err = b.measure(ctx, env, &purge, func() error {
		for {
			k, err := st.Purge(ctx, 0, 10_000)
			if err != nil {
				return err
			}
			if k == 0 {
				return nil
			}
			purged += k
		}
	})
	if err != nil {
		return nil, err
	}
	if purged != n {
		purge.note = fmt.Sprintf("purged %d of %d events", purged, n)
	}
	return append(out, purge), nil
}

// walPublish measures publication right after commit under protocol p:
// pubN transactions of one event each, saved without publication into one
// new table, and saved through Transact (Save, commit, Publish) into
// another, beside a relay of the same Outbox that owns every partition.
// The publication's figure is the difference, per event, until every
// event is recorded as delivered.
func (b *bench) walPublish(ctx context.Context, env walEnv, p walProtocol, pubN int) (walRun, error) {
	topic := b.stream("walpub") // both tables' events: rows of the same size
	defer b.rdb.Del(ctx, topic)
	plain, err := b.walStore(ctx, env.schema, "save1", p)
	if err != nil {
		return nil, err
	}
	saver, err := outbox.New(plain, outbox.Noop{})
	if err != nil {
		return nil, err
	}
	save := walFigure{name: "save_1_per_tx_" + p.name, events: pubN}
	if err := b.measure(ctx, env, &save, func() error { return b.walSave(ctx, saver, pubN, 1, 1, topic) }); err != nil {
		return nil, err
	}

	st, err := b.walStore(ctx, env.schema, "pub", p)
	if err != nil {
		return nil, err
	}
	pubr, _, err := b.redisPublisher()(topic)
	if err != nil {
		return nil, err
	}
	ob, err := outbox.New(st, pubr, outbox.WithBatchSize(b.cfg.batch))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { _ = ob.Run(rctx) })
	// Outside the phase: the relay joins and takes every partition.
	for deadline := time.Now().Add(10 * time.Second); len(st.Owned()) < 64; {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the relay owns %d partitions after 10 s", len(st.Owned()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	events := newEvents(pubN, walAggregates, 256, topic)
	acked := 0
	var left, unrecorded int64
	pub := walFigure{name: "publish_" + p.name, events: pubN, base: save.name}
	err = b.measure(ctx, env, &pub, func() error {
		for _, e := range events {
			res, err := ob.Transact(ctx, b.pg, func(tx *outbox.Tx) error { return tx.Save(ctx, e) })
			if err != nil {
				return err
			}
			for _, o := range res.Outcomes {
				if o.Fate == outbox.Acknowledged {
					acked++
				}
			}
		}
		// Under watermarks an event published at once is recorded by the
		// first mark that covers it, which only a relay's read after it
		// makes; with no traffic after the last one, the last events wait
		// for the relay's next read or its Leave (which writes their
		// synced_at). Wait two heartbeats, then stop the relay within
		// the phase, so that every event is recorded as delivered.
		if left, err = b.walPending(ctx, st, 2*sqlstore.DefaultHeartbeat); err != nil {
			return err
		}
		cancel()
		wg.Wait()
		unrecorded, err = b.walPending(ctx, st, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var notes []string
	if acked != pubN {
		notes = append(notes, fmt.Sprintf("%d of %d events acknowledged by the immediate publication, the rest by the relay", acked, pubN))
	}
	if left > 0 {
		notes = append(notes, fmt.Sprintf("%d events still pending 2 heartbeats after the last commit, recorded by the relay's Leave (included)", left))
	}
	if unrecorded > 0 {
		notes = append(notes, fmt.Sprintf("%d events pending after the relay stopped", unrecorded))
	}
	pub.note = strings.Join(notes, "; ")
	pub.bytes -= save.bytes
	pub.cluster -= save.cluster
	pub.fpi -= save.fpi
	pub.parts = subtractParts(pub.parts, save.parts, "save1_", "pub_")
	return walRun{save, pub}, nil
}
