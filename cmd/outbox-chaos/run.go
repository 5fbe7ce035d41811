//go:build unix

package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The topics of the workload; an aggregate's events all go to one of the
// first two, events without an aggregate to the third.
var topics = []string{"orders", "stock", "misc"}

// run is the state of one chaos run.
type run struct {
	cfg    Config
	log    *slog.Logger
	db     *sqlx.DB
	store  *sqlstore.Store
	table  string
	orders string // the business table
	prefix string // stream key prefix

	dbProxy     *testproxy.Proxy
	brokerProxy proxies       // one for Redis, one per Kafka broker
	direct      *redis.Client // reads the streams back, bypassing the proxy
	kafkaDirect []string      // Kafka brokers, to read the topics back bypassing the proxies
	kafkaVia    string        // Kafka brokers and their proxies, for the relays
	fleet       *fleet
	ob          *outbox.Outbox // the writers' outbox: Save, and Publish at once
}

// Run runs one chaos run and returns its result. An error means the run
// could not be set up or carried out; a broken guarantee is a Result that
// is not OK.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	id := runID()
	r := &run{cfg: cfg, table: "chaos_" + id, orders: "chaos_" + id + "_orders", prefix: "outbox-chaos:" + id + ":"}
	if cfg.Broker == "kafka" {
		r.prefix = "outbox-chaos-" + id + "-" // Kafka topic names take no colon
	}
	var w = os.Stderr
	level := slog.LevelError + 1
	if cfg.Verbose {
		level = slog.LevelInfo
	}
	r.log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("run", id)

	cleanup, err := r.setup(ctx)
	defer cleanup()
	if err != nil {
		return nil, err
	}

	res = &Result{DB: cfg.DB, Broker: cfg.Broker, Seed: cfg.Seed, Faults: map[string]int{}, Idempotent: cfg.Idempotent}
	pub, closePub, err := r.publisher()
	if err != nil {
		return nil, err
	}
	defer closePub()
	r.ob, err = outbox.New(r.store, pub, outbox.WithTimeout(time.Second), outbox.WithLease(cfg.Lease),
		outbox.WithBreaker(3, 50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	if err := r.fleet.topUp(cfg.Relays); err != nil {
		return nil, err
	}

	// Writers and faults run side by side for cfg.Duration.
	rec := newRecorder()
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var writers sync.WaitGroup
	var werrs []error
	var werrMu sync.Mutex
	pace := newPacer(cfg.Events, cfg.Duration*9/10)
	for i := range cfg.Writers {
		writers.Go(func() {
			if err := r.writer(wctx, i, rec, pace); err != nil && wctx.Err() == nil {
				werrMu.Lock()
				werrs = append(werrs, err)
				werrMu.Unlock()
				stopWriters()
			}
		})
	}
	fctx, stopFaults := context.WithTimeout(ctx, cfg.Duration)
	faults := r.injectFaults(fctx)
	writers.Wait()
	stopFaults()
	counts := faults.wait()
	if err := errors.Join(werrs...); err != nil {
		return nil, fmt.Errorf("writers: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for k, n := range counts {
		res.Faults[k] = n
		res.FaultsInjected += n
	}

	// Heal, drain, stop.
	r.heal()
	if err := r.fleet.topUp(cfg.Relays); err != nil {
		return nil, err
	}
	r.log.Info("faults over; draining", "faults", res.FaultsInjected)
	if err := r.drain(ctx); err != nil {
		r.log.Warn("drain incomplete", "err", err)
	}
	r.fleet.stop(15 * time.Second)
	res.RelaysStarted = r.fleet.started

	if err := r.counts(ctx, res); err != nil {
		return nil, err
	}
	read := r.readStreams
	if cfg.Broker == "kafka" {
		read = r.readTopics
	}
	streams, err := read(ctx)
	if err != nil {
		return nil, err
	}
	check(res, rec.committed, rec.rolledBack, rec.uncertain, streams)
	r.describeLost(ctx, res.LostIDs)
	res.Seconds = float64(time.Since(start).Round(10*time.Millisecond).Milliseconds()) / 1000
	return res, nil
}

// describeLost writes to stderr, for each lost event, what the table
// says of it before the run drops it: its seq and partition, whether
// synced_at is set, its attempts and dead mark, and with watermarks its
// transaction ID, whether its partition's mark covers it, and that mark.
// A lost event the table says was delivered points at the relay's
// bookkeeping; one it says is pending, at the drain.
func (r *run) describeLost(ctx context.Context, ids []string) {
	for _, id := range ids {
		q := "SELECT seq, partition_no, synced_at IS NOT NULL, attempts, dead_at IS NOT NULL FROM " + r.table + " WHERE id = ?"
		var seq int64
		var part, attempts int
		var synced, dead bool
		if err := r.db.QueryRowContext(ctx, r.db.Rebind(q), id).Scan(&seq, &part, &synced, &attempts, &dead); err != nil {
			fmt.Fprintf(os.Stderr, "outbox-chaos: lost %s: read its row: %v\n", id, err)
			continue
		}
		line := fmt.Sprintf("outbox-chaos: lost %s: seq %d, partition %d, synced_at set %v, attempts %d, dead %v", id, seq, part, synced, attempts, dead)
		if r.cfg.Watermarks {
			var xid sql.NullInt64
			var covered sql.NullBool
			var markSeq int64
			var markSnap sql.NullString
			err := r.db.QueryRowContext(ctx, "SELECT e.xid, w.mark_seq, w.mark_snap::text, e.xid IS NOT NULL AND e.seq <= w.mark_seq AND txid_visible_in_snapshot(e.xid, w.mark_snap) FROM "+
				r.table+" e JOIN "+r.table+"_partitions w ON w.partition_no = e.partition_no WHERE e.id = $1", id).Scan(&xid, &markSeq, &markSnap, &covered)
			if err != nil {
				line += fmt.Sprintf("; its mark: %v", err)
			} else {
				line += fmt.Sprintf("; xid %v, covered by its partition's mark %v (mark_seq %d, mark_snap %s)", xid.Int64, covered.Bool, markSeq, markSnap.String)
			}
		}
		fmt.Fprintln(os.Stderr, line)
	}
}

func runID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// setup connects, creates the run's tables and proxies and prepares the
// relay fleet. The returned cleanup undoes what was done, always.
func (r *run) setup(ctx context.Context) (func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[r.cfg.DB]
	db, err := sqlx.Open(driver, r.cfg.DSN)
	if err != nil {
		return cleanup, err
	}
	undo = append(undo, func() { db.Close() })
	db.SetMaxOpenConns(r.cfg.Writers + 4)
	r.db = db
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		return cleanup, fmt.Errorf("connect to %s: %w", r.cfg.DB, err)
	}
	if r.store, err = sqlstore.New(db, storeOptions(r.table, r.cfg.Watermarks)...); err != nil {
		return cleanup, err
	}
	undo = append(undo, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.store.Drop(dctx); err != nil {
			fmt.Fprintf(os.Stderr, "outbox-chaos: drop %s: %v\n", r.table, err)
		}
		if _, err := db.ExecContext(dctx, "DROP TABLE IF EXISTS "+r.orders); err != nil {
			fmt.Fprintf(os.Stderr, "outbox-chaos: drop %s: %v\n", r.orders, err)
		}
	})
	if err := r.store.Migrate(pctx); err != nil {
		return cleanup, fmt.Errorf("migrate: %w", err)
	}
	if _, err := db.ExecContext(pctx, "CREATE TABLE "+r.orders+
		" (id VARCHAR(64) NOT NULL PRIMARY KEY, aggregate_id VARCHAR(255) NOT NULL, quantity INT NOT NULL)"); err != nil {
		return cleanup, fmt.Errorf("create business table: %w", err)
	}

	dbAddr, dsnVia, err := proxiedDSN(r.cfg.DB, r.cfg.DSN)
	if err != nil {
		return cleanup, err
	}
	if r.dbProxy, err = testproxy.Start(dbAddr); err != nil {
		return cleanup, err
	}
	undo = append(undo, func() { r.dbProxy.Close() })
	relayDSN := dsnVia(r.dbProxy.Addr())

	if r.cfg.Broker == "kafka" {
		if err := r.setupKafka(pctx, &undo); err != nil {
			return cleanup, err
		}
	} else if err := r.setupRedis(pctx, &undo); err != nil {
		return cleanup, err
	}

	r.fleet, err = newFleet(relayArgs{
		db: r.cfg.DB, dsn: relayDSN, redisURL: r.cfg.RedisURL, redisAddr: r.brokerProxy[0].Addr(),
		table: r.table, prefix: r.prefix, lease: r.cfg.Lease, verbose: r.cfg.Verbose, idempotent: r.cfg.Idempotent, watermarks: r.cfg.Watermarks,
		broker: r.cfg.Broker, kafkaVia: r.kafkaVia,
	}, r.cfg.Verbose)
	if err != nil {
		return cleanup, err
	}
	undo = append(undo, func() { r.fleet.stop(5 * time.Second) })
	return cleanup, nil
}

// setupRedis puts a proxy in front of Redis and connects directly to read
// the streams back, which it deletes at the end with the run's dedup keys.
func (r *run) setupRedis(pctx context.Context, undo *[]func()) error {
	opt, err := redis.ParseURL(r.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis URL: %w", err)
	}
	p, err := testproxy.Start(opt.Addr)
	if err != nil {
		return err
	}
	r.brokerProxy = proxies{p}
	*undo = append(*undo, func() { r.brokerProxy.Close() })
	r.direct = redis.NewClient(opt)
	*undo = append(*undo, func() { r.direct.Close() })
	if err := r.direct.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("connect to Redis: %w", err)
	}
	*undo = append(*undo, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, t := range topics {
			if err := r.direct.Del(dctx, r.prefix+t).Err(); err != nil {
				fmt.Fprintf(os.Stderr, "outbox-chaos: delete stream %s: %v\n", r.prefix+t, err)
			}
		}
		deleteDedupKeys(r.direct, r.prefix)
	})
	return nil
}

// proxiedDSN returns the database's address and a function that makes
// the DSN that reaches it through a proxy at another address, with short
// connection timeouts so that a cut shows quickly.
func proxiedDSN(db, dsn string) (string, func(proxy string) string, error) {
	switch db {
	case "postgres":
		u, err := url.Parse(dsn)
		if err != nil {
			return "", nil, fmt.Errorf("postgres DSN: %w", err)
		}
		if u.Host == "" {
			return "", nil, fmt.Errorf("postgres DSN: want a URL with a host, postgres://user@host:port/db")
		}
		addr := u.Host
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "5432")
		}
		return addr, func(proxy string) string {
			v := *u
			v.Host = proxy
			q := v.Query()
			q.Set("connect_timeout", "2")
			v.RawQuery = q.Encode()
			return v.String()
		}, nil
	case "mysql":
		c, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", nil, fmt.Errorf("mysql DSN: %w", err)
		}
		addr := c.Addr
		return addr, func(proxy string) string {
			v := c.Clone()
			v.Addr = proxy
			v.Timeout, v.ReadTimeout, v.WriteTimeout = 2*time.Second, 5*time.Second, 5*time.Second
			return v.FormatDSN()
		}, nil
	}
	return "", nil, fmt.Errorf("unknown database %q", db)
}

// heal ends every fault still in effect.
func (r *run) heal() {
	r.brokerProxy.SetDelay(0)
	r.brokerProxy.Restore()
	r.dbProxy.Restore()
	r.fleet.resumeAll()
}

// drain waits until no event is pending.
func (r *run) drain(ctx context.Context) error {
	deadline := time.Now().Add(r.cfg.Drain)
	for {
		st, err := r.store.Stats(ctx, 0)
		if err != nil {
			return err
		}
		n := st.Pending
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d events still pending after %v", n, r.cfg.Drain)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// counts reads how many events are still pending or buried.
func (r *run) counts(ctx context.Context, res *Result) error {
	st, err := r.store.Stats(ctx, 0)
	if err != nil {
		return err
	}
	res.Pending, res.Dead = int(st.Pending), int(st.Dead)
	return nil
}

// readStreams reads every entry of the run's streams, in stream order.
func (r *run) readStreams(ctx context.Context) (map[string][]delivery, error) {
	out := map[string][]delivery{}
	for _, t := range topics {
		key := r.prefix + t
		start := "-"
		for {
			msgs, err := r.direct.XRangeN(ctx, key, start, "+", 10000).Result()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", key, err)
			}
			for _, m := range msgs {
				e, err := redisstream.Decode(m.Values)
				if err != nil {
					return nil, fmt.Errorf("decode %s %s: %w", key, m.ID, err)
				}
				out[t] = append(out[t], delivery{id: e.ID, aggregate: e.AggregateID})
			}
			if len(msgs) < 10000 {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return out, nil
}

// publisher returns the parent's own publisher for the immediate path,
// through the broker proxy like the relays'.
func (r *run) publisher() (outbox.Publisher, func(), error) {
	if r.cfg.Broker == "kafka" {
		p, err := kafkaPublisher(r.kafkaVia, r.prefix)
		if err != nil {
			return nil, nil, err
		}
		return p, func() { _ = p.Close() }, nil
	}
	opt, err := redis.ParseURL(r.cfg.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	opt.Addr = r.brokerProxy[0].Addr()
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 500*time.Millisecond, time.Second, time.Second
	c := redis.NewClient(opt)
	p, err := redisstream.New(c, publisherOptions(r.prefix, r.cfg.Idempotent)...)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return p, func() { c.Close() }, nil
}
