package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// bench holds the connections and the names one process run owns.
type bench struct {
	cfg    config
	log    io.Writer
	prefix string // obb_<hex>: every table and stream key of this run starts with it
	tmp    string // SQLite files

	pg, my *sqlx.DB
	rdb    *redis.Client

	mu      sync.Mutex
	tables  map[*sqlx.DB][]string
	streams []string
	seq     int

	res results
}

func newBench(ctx context.Context, cfg config, log io.Writer) (*bench, error) {
	var r [4]byte
	_, _ = rand.Read(r[:])
	b := &bench{cfg: cfg, log: log, prefix: "obb_" + hex.EncodeToString(r[:]), tables: map[*sqlx.DB][]string{}}
	var err error
	if b.tmp, err = os.MkdirTemp("", "outbox-bench-"); err != nil {
		return nil, err
	}
	if cfg.postgres != "" {
		if b.pg, err = openDB(ctx, "pgx", cfg.postgres); err != nil {
			b.close()
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	if cfg.mysql != "" {
		if b.my, err = openDB(ctx, "mysql", cfg.mysql); err != nil {
			b.close()
			return nil, fmt.Errorf("mysql: %w", err)
		}
	}
	b.rdb = redis.NewClient(&redis.Options{Addr: cfg.redis, PoolSize: 16})
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		b.close()
		return nil, fmt.Errorf("redis %s: %w", cfg.redis, err)
	}
	b.logf("prefix %s, %d runs, backlog %d, big backlog %d, batch %d", b.prefix, cfg.runs, cfg.events, cfg.bigEvents, cfg.batch)
	return b, nil
}

func openDB(ctx context.Context, driver, dsn string) (*sqlx.DB, error) {
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// name returns a new table or stream name of this run.
func (b *bench) name(what string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return fmt.Sprintf("%s_%s_%d", b.prefix, what, b.seq)
}

// stream returns a new stream key of this run, deleted at the end.
func (b *bench) stream(what string) string {
	k := b.name(what)
	b.mu.Lock()
	b.streams = append(b.streams, k)
	b.mu.Unlock()
	return k
}

// own records a table of this run, dropped at the end.
func (b *bench) own(db *sqlx.DB, table string) {
	b.mu.Lock()
	b.tables[db] = append(b.tables[db], table)
	b.mu.Unlock()
}

// drop drops a table of this run now, with what the SDK's Migrate made
// beside it (Store.Drop: its siblings, the view of watermarks, which a
// plain DROP TABLE refuses to leave without, and the trigger function).
// A table the SDK did not make is dropped alone.
func (b *bench) drop(db *sqlx.DB, table string) {
	if b.cfg.keep {
		return
	}
	if st, err := sqlstore.New(db, sqlstore.WithTable(table)); err == nil {
		if err := st.Drop(context.Background()); err == nil {
			return
		}
	}
	_, _ = db.Exec("DROP TABLE IF EXISTS " + table)
}

func (b *bench) close() {
	ctx := context.Background()
	if b.rdb != nil {
		if !b.cfg.keep && len(b.streams) > 0 {
			for _, k := range b.streams {
				b.rdb.Del(ctx, k)
			}
		}
		b.rdb.Close()
	}
	for db, tables := range b.tables {
		for _, t := range tables {
			b.drop(db, t)
		}
	}
	for _, db := range []*sqlx.DB{b.pg, b.my} {
		if db != nil {
			db.Close()
		}
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// sqlite opens a new SQLite database file in WAL mode, closed at the end.
func (b *bench) sqlite(ctx context.Context) (*sqlx.DB, error) {
	path := filepath.Join(b.tmp, b.name("sqlite")+".db")
	db, err := sqlx.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, db.PingContext(ctx)
}

// newStore creates an outbox table with the SDK's migrations.
func (b *bench) newStore(ctx context.Context, db *sqlx.DB, what string, opts ...sqlstore.Option) (*sqlstore.Store, string, error) {
	table := b.name(what)
	b.own(db, table)
	st, err := sqlstore.New(db, append([]sqlstore.Option{sqlstore.WithTable(table)}, opts...)...)
	if err != nil {
		return nil, "", err
	}
	if err := st.Migrate(ctx); err != nil {
		return nil, "", err
	}
	return st, table, nil
}

// payload returns a JSON document of about size bytes, shaped like an
// inventory event, with enough variation that compression does not get it
// for free.
func payload(r *mrand.Rand, size int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"items":[`)
	for i := 0; sb.Len() < size-40; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"sku":"sku-%06d","warehouse":"wh-%d","quantity":%d,"reserved":%d,"price_cents":%d}`,
			r.IntN(1_000_000), r.IntN(8), r.IntN(500), r.IntN(20), 100+r.IntN(100_000))
	}
	sb.WriteString(`],"by":"user-`)
	fmt.Fprintf(&sb, "%d", r.IntN(10_000))
	sb.WriteString(`"}`)
	s := sb.String()
	if len(s) > size {
		// Keep exactly size bytes; the tail need not be valid JSON for a
		// relay, which never parses payloads.
		s = s[:size]
	}
	return []byte(s)
}

// newEvents returns n events for topic over aggregates aggregates, with
// payloads of about size bytes.
func newEvents(n, aggregates, size int, topic string) []*outbox.Event {
	r := mrand.New(mrand.NewPCG(uint64(n), uint64(size)))
	pl := payload(r, size)
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{
			Topic:       topic,
			Type:        "stock.updated",
			AggregateID: fmt.Sprintf("sku-%06d", i%aggregates),
			Payload:     pl,
		}
	}
	return events
}

// defaultAggregates is how many aggregates a backlog's events cycle
// through: with a batch of 1,000, each batch holds one event of every
// aggregate, so ordered relays cannot claim in parallel.
const defaultAggregates = 1000

// fill saves n events into st through ob.Save in transactions of 5,000,
// as a service would, only in larger transactions. Event i belongs to
// aggregate i mod aggregates.
func fill(ctx context.Context, db *sqlx.DB, ob *outbox.Outbox, n, aggregates int, topic string) error {
	const chunk = 5000
	for done := 0; done < n; done += chunk {
		events := newEvents(min(chunk, n-done), aggregates, 256, topic)
		for i, e := range events {
			e.AggregateID = fmt.Sprintf("sku-%06d", (done+i)%aggregates)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := ob.Save(ctx, tx, events...); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// fillStore fills a store's table with n pending events for topic over
// aggregates aggregates, then has the database gather the table's
// statistics.
func fillStore(ctx context.Context, db *sqlx.DB, st *sqlstore.Store, n, aggregates int, topic string) error {
	ob, err := outbox.New(st, outbox.Noop{})
	if err != nil {
		return err
	}
	if err := fill(ctx, db, ob, n, aggregates, topic); err != nil {
		return err
	}
	return analyze(ctx, db, st.Table())
}

// analyze gathers a filled table's statistics, as autovacuum would soon
// after a large insert on a production server. The servers this benchmark
// was written on run with autovacuum off, and without statistics the
// planner may read a fresh table through any index that matches and sort.
func analyze(ctx context.Context, db *sqlx.DB, table string) error {
	stmt := "ANALYZE " + table
	if db.DriverName() == "mysql" {
		stmt = "ANALYZE TABLE " + table
	}
	_, err := db.ExecContext(ctx, stmt)
	return err
}

// median runs f runs times and returns the result with the median
// events/s, with Runs set.
func median(runs int, f func(run int) (*Result, error)) (*Result, error) {
	var all []*Result
	for i := range runs {
		r, err := f(i)
		if err != nil {
			return nil, err
		}
		all = append(all, r)
	}
	slices.SortFunc(all, func(a, b *Result) int {
		switch {
		case a.EventsPerSec < b.EventsPerSec:
			return -1
		case a.EventsPerSec > b.EventsPerSec:
			return 1
		}
		return 0
	})
	m := all[len(all)/2]
	m.Runs = runs
	return m, nil
}

// throughput makes a Result of n events in d.
func throughput(name string, n int, d time.Duration) *Result {
	return &Result{Scenario: name, Events: n, Seconds: round(d.Seconds(), 3), EventsPerSec: round(float64(n)/d.Seconds(), 0)}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// percentile returns the p-th percentile (0..100) of sorted durations, in µs.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return round(float64(sorted[i])/float64(time.Microsecond), 1)
}

// rngFor returns a deterministic random source for the i-th payload.
func rngFor(i int) *mrand.Rand { return mrand.New(mrand.NewPCG(uint64(i), 42)) }
