package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// relayStore is what the relays of a drain run on: a *sqlstore.Store, or
// the pgxpool-backed *outboxpgx.Store.
type relayStore interface {
	outbox.Store
	storage.Notifier
	storage.Purger
}

// countingStore is the SDK's store, counting what relays marked synced so
// a drain knows when it is done without polling the table. Embedding keeps
// every optional capability (Notifier, Purger) of the store visible. The
// relays of a drain each have a store of their own, as relays in
// processes of their own do, and share one counter.
type countingStore struct {
	relayStore
	*drainCounter
}

// drainCounter counts the marks of a drain's relays.
type drainCounter struct {
	synced atomic.Int64
	first  atomic.Int64 // when the first event was marked (Unix ns)
	want   int64
	done   chan struct{}
	once   sync.Once
}

func newDrainCounter(want int) *drainCounter {
	return &drainCounter{want: int64(want), done: make(chan struct{})}
}

func (c *countingStore) MarkSynced(ctx context.Context, token string, ids []string) (int, error) {
	n, err := c.relayStore.MarkSynced(ctx, token, ids)
	if n > 0 {
		c.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	if c.synced.Add(int64(n)) >= c.want {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
}

// Leave passes on to a store that owns partitions.
func (c *countingStore) Leave(ctx context.Context) error {
	if l, ok := c.relayStore.(storage.Owner); ok {
		return l.Leave(ctx)
	}
	return nil
}

// Heartbeat passes on to a store that owns partitions; for one that does
// not, there is nothing to beat.
func (c *countingStore) Heartbeat(ctx context.Context) (time.Duration, bool, error) {
	if l, ok := c.relayStore.(storage.Owner); ok {
		return l.Heartbeat(ctx)
	}
	return 0, false, nil
}

// Rebalancing passes on to a store that owns partitions.
func (c *countingStore) Rebalancing() bool {
	l, ok := c.relayStore.(storage.Owner)
	return ok && l.Rebalancing()
}

// drainOpts describes one drain.
type drainOpts struct {
	name       string
	db         *sqlx.DB
	what       string // table name part
	relays     int
	n          int
	ordered    bool
	interval   time.Duration // 0: the SDK's default
	aggregates int           // 0: defaultAggregates
	publisher  func(topic string) (outbox.Publisher, func(), error)
	profile    string
	// relayOn, if set, gives the store the relays run on, over the table
	// of st (which the backlog was saved through); nil runs them on st.
	relayOn func(st *sqlstore.Store) (relayStore, func(), error)
	// opts are the sqlstore options of the relays' stores (beside the
	// table), e.g. sqlstore.WithWatermarks().
	opts []sqlstore.Option
}

// drain fills a new table with a backlog of n events, then runs relays
// Workers with the SDK's default settings except the batch size (and
// per-aggregate order when asked) until every event is marked synced.
// The time is from the start of the relays to the last mark.
func (b *bench) drain(ctx context.Context, o drainOpts) (*Result, error) {
	st, table, err := b.newStore(ctx, o.db, o.what, o.opts...)
	if err != nil {
		return nil, err
	}
	defer b.drop(o.db, table)
	topic := b.stream(o.what)
	defer b.rdb.Del(ctx, topic)
	if err := fillStore(ctx, o.db, st, o.n, cmp.Or(o.aggregates, defaultAggregates), topic); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	pub, closePub, err := o.publisher(topic)
	if err != nil {
		return nil, err
	}
	defer closePub()
	cs := newDrainCounter(o.n)
	ws := make([]*outbox.Outbox, o.relays)
	for i := range ws {
		var rs relayStore = st
		switch {
		case o.relayOn != nil:
			var closeStore func()
			if rs, closeStore, err = o.relayOn(st); err != nil {
				return nil, err
			}
			defer closeStore()
		case i > 0:
			if rs, err = sqlstore.New(o.db, append([]sqlstore.Option{sqlstore.WithTable(table)}, o.opts...)...); err != nil {
				return nil, err
			}
		}
		if ws[i], err = outbox.New(&countingStore{rs, cs}, pub, outbox.WithBatchSize(b.cfg.batch), outbox.WithPerAggregateOrder(o.ordered), outbox.WithInterval(o.interval)); err != nil {
			return nil, err
		}
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range ws {
		wg.Go(func() { _ = w.Run(rctx) })
	}
	timeout := time.After(b.cfg.drainTimeout)
	select {
	case <-cs.done:
	case <-timeout:
	case <-ctx.Done():
	}
	d := time.Since(start)
	cancel()
	wg.Wait()
	if got := cs.synced.Load(); got < int64(o.n) {
		// Report what it did, not an error: a relay that stalls is a finding.
		r := throughput(o.name, int(got), d)
		r.Note = fmt.Sprintf("NOT DRAINED: %d of %d events synced when it gave up after %s", got, o.n, b.cfg.drainTimeout)
		return r, nil
	}
	return throughput(o.name, o.n, d), nil
}

// redisPublisher returns a factory of redisstream publishers on the
// bench's client.
func (b *bench) redisPublisher(opts ...redisstream.Option) func(string) (outbox.Publisher, func(), error) {
	return func(string) (outbox.Publisher, func(), error) {
		p, err := redisstream.New(b.rdb, opts...)
		return p, func() {}, err
	}
}

// runRelay measures the SDK's relay from each database to Redis.
func runRelay(ctx context.Context, b *bench) error {
	type sc struct {
		name     string
		db       func() (*sqlx.DB, func(), error)
		relays   int
		ordered  bool
		interval time.Duration
		// aggregates the backlog cycles through; 0: defaultAggregates
		aggregates int
		marks      bool // sqlstore.WithWatermarks
	}
	shared := func(db *sqlx.DB) func() (*sqlx.DB, func(), error) {
		return func() (*sqlx.DB, func(), error) { return db, func() {}, nil }
	}
	var list []sc
	if b.pg != nil {
		list = append(list,
			sc{"relay_pg_redis_1r", shared(b.pg), 1, true, 0, 0, false},
			sc{"relay_pg_redis_2r", shared(b.pg), 2, true, 0, 0, false},
			sc{"relay_pg_redis_1r_unordered", shared(b.pg), 1, false, 0, 0, false},
			sc{"relay_pg_redis_2r_unordered", shared(b.pg), 2, false, 0, 0, false},
			// Not a default: shows how much of the 2-relay figure is the
			// relay waiting for its interval after a partial batch.
			sc{"relay_pg_redis_2r_interval_10ms", shared(b.pg), 2, true, 10 * time.Millisecond, 0, false},
			// Not the default backlog: 10,000 aggregates of 10 events, so
			// that two ordered relays can each claim a batch of heads at
			// once (with 1,000 aggregates one batch holds all the heads).
			sc{"relay_pg_redis_2r_10k_aggregates", shared(b.pg), 2, true, 0, 10000, false},
			// Delivery recorded per partition, not per event.
			sc{"relay_pg_redis_1r_watermarks", shared(b.pg), 1, true, 0, 0, true},
			sc{"relay_pg_redis_2r_watermarks", shared(b.pg), 2, true, 0, 0, true},
		)
	}
	if b.my != nil {
		list = append(list, sc{"relay_mysql_redis_1r", shared(b.my), 1, true, 0, 0, false})
	}
	list = append(list, sc{"relay_sqlite_redis_1r", func() (*sqlx.DB, func(), error) {
		db, err := b.sqlite(ctx)
		return db, func() { db.Close() }, err
	}, 1, true, 0, 0, false})
	for _, s := range list {
		r, err := median(b.cfg.runs, func(run int) (*Result, error) {
			db, closeDB, err := s.db()
			if err != nil {
				return nil, err
			}
			defer closeDB()
			profile := ""
			if s.name == b.cfg.profileScenario && run == 0 {
				profile = b.cfg.cpuProfile
			}
			return b.drain(ctx, drainOpts{name: s.name, db: db, what: "relay", relays: s.relays, n: b.cfg.events,
				ordered: s.ordered, interval: s.interval, aggregates: s.aggregates, publisher: b.redisPublisher(), profile: profile, opts: marksOpt(s.marks)})
		})
		if err != nil {
			return err
		}
		b.res.add(r)
		b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	}
	return nil
}

// marksOpt is sqlstore.WithWatermarks when on.
func marksOpt(on bool) []sqlstore.Option {
	if on {
		return []sqlstore.Option{sqlstore.WithWatermarks()}
	}
	return nil
}
