package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// This file is a prototype, not the SDK's relay: a relay that owns
// partitions of the aggregate space instead of leasing rows. Each event
// gets a partition number when it is saved (a hash of its aggregate ID
// modulo partitionCount); relays lease whole partitions in a small table
// of their own, on the database's clock, with a fencing token per
// partition; an owner reads the due events of its partitions in save
// order without writing anything to them, publishes them, and marks the
// acknowledged ones in one UPDATE that also checks that its tokens are
// still current. One write per event. What it leaves out: the immediate
// path, rebalancing when relays come and go (relays register before any
// of them takes partitions), retries with backoff beyond an in-memory
// hold, and the SIGSTOP tests of its fencing.

// partitionCount is P: how many partitions the aggregate space is cut into.
const partitionCount = 64

// Lease timing of the prototype: a lease lasts partitionTTL on the
// database's clock and is renewed every partitionRenew; a relay stops
// publishing a partition's events partitionMargin before its own
// conservative estimate of the lease's end.
const (
	partitionTTL    = 10 * time.Second
	partitionRenew  = 2 * time.Second
	partitionMargin = 2 * time.Second
)

// runPartition drains the relay scenarios' backlog with prototype relays
// that own partitions (see above), from Postgres to Redis.
func runPartition(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	for _, s := range []struct {
		name       string
		relays     int
		aggregates int
		opts       partOpts
	}{
		{"proto_partition_pg_redis_1r", 1, defaultAggregates, partOpts{}},
		{"proto_partition_pg_redis_2r", 2, defaultAggregates, partOpts{}},
		{"proto_partition_pg_redis_2r_10k_aggregates", 2, 10000, partOpts{}},
		// Read, publish and mark one after the other, as the SDK's relay
		// does, instead of overlapping them: what the pipeline buys.
		{"proto_partition_pg_redis_1r_sequential", 1, defaultAggregates, partOpts{sequential: true}},
		// Each partition read from a cursor of its own through the
		// (partition, seq) index: its rows lie scattered over the table.
		{"proto_partition_pg_redis_2r_per_partition_read", 2, defaultAggregates, partOpts{perPartition: true}},
	} {
		r, err := median(b.cfg.runs, func(run int) (*Result, error) {
			profile := ""
			if s.name == "proto_partition_pg_redis_1r" && run == 0 {
				profile = b.cfg.partitionProfile
			}
			return b.partitionDrain(ctx, s.name, s.relays, b.cfg.events, s.aggregates, s.opts, profile)
		})
		if err != nil {
			return err
		}
		b.res.add(r)
		b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	}
	return nil
}

// partitionTables are the tables of one prototype drain.
type partitionTables struct {
	events, parts, members string
}

// newPartitionTables creates the SDK's outbox table with a partition
// column and its index, and the lease tables. The partition is a stored
// generated column so that the SDK's Save fills it at insert time; the
// SDK would compute it in Go instead.
func (b *bench) newPartitionTables(ctx context.Context) (*sqlstore.Store, *partitionTables, func(), error) {
	st, events, err := b.newStore(ctx, b.pg, "part_events")
	if err != nil {
		return nil, nil, nil, err
	}
	t := &partitionTables{events: events, parts: b.name("part_leases"), members: b.name("part_members")}
	b.own(b.pg, t.parts)
	b.own(b.pg, t.members)
	cleanup := func() {
		b.drop(b.pg, t.events)
		b.drop(b.pg, t.parts)
		b.drop(b.pg, t.members)
	}
	stmts := []string{
		fmt.Sprintf(`ALTER TABLE %s ADD COLUMN partition SMALLINT NOT NULL GENERATED ALWAYS AS ((hashtext(aggregate_id) & 2147483647) %% %d) STORED`, events, partitionCount),
		// The pending events of one partition in save order.
		fmt.Sprintf(`CREATE INDEX %s_part_idx ON %s (partition, seq) WHERE synced_at IS NULL AND dead_at IS NULL`, events, events),
		// The pending events in save order (the SDK's claim index orders
		// by priority first, which a seq cursor cannot follow).
		fmt.Sprintf(`CREATE INDEX %s_pending_seq_idx ON %s (seq) WHERE synced_at IS NULL AND dead_at IS NULL`, events, events),
		fmt.Sprintf(`CREATE TABLE %s (partition SMALLINT PRIMARY KEY, owner TEXT NULL, token BIGINT NOT NULL DEFAULT 0, lease_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity')`, t.parts),
		fmt.Sprintf(`INSERT INTO %s (partition) SELECT generate_series(0, %d)`, t.parts, partitionCount-1),
		fmt.Sprintf(`CREATE TABLE %s (owner TEXT PRIMARY KEY, seen_until TIMESTAMPTZ NOT NULL)`, t.members),
	}
	for _, s := range stmts {
		if _, err := b.pg.ExecContext(ctx, s); err != nil {
			cleanup()
			return nil, nil, nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	return st, t, cleanup, nil
}

// partitionDrain fills a new partitioned table with n events over
// aggregates aggregates (saved through the SDK's Save, as the relay
// scenarios' backlog), then drains it with relays prototype relays, each
// on connections of its own. The time is from the start of the relays to
// the last mark.
func (b *bench) partitionDrain(ctx context.Context, name string, relays, n, aggregates int, o partOpts, profile string) (*Result, error) {
	st, t, cleanup, err := b.newPartitionTables(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	topic := b.stream("part")
	defer b.rdb.Del(ctx, topic)
	if err := fillStore(ctx, b.pg, st, n, aggregates, topic); err != nil {
		return nil, fmt.Errorf("fill: %w", err)
	}
	var pub outbox.Publisher
	if pub, err = redisstream.New(b.rdb); err != nil {
		return nil, err
	}
	if o.failEvery > 0 {
		pub = &flakyPublisher{Publisher: pub, every: o.failEvery, failed: map[string]bool{}}
	}
	var marked atomic.Int64
	stats := &partStats{}
	done := make(chan struct{})
	var once sync.Once
	onMarked := func(k int) {
		if marked.Add(int64(k)) >= int64(n) {
			once.Do(func() { close(done) })
		}
	}
	rs := make([]*partRelay, relays)
	for i := range rs {
		db, err := openDB(ctx, "pgx", b.cfg.postgres)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		db.SetMaxOpenConns(3)
		rs[i] = &partRelay{db: db, t: t, owner: fmt.Sprintf("relay-%d", i), pub: pub, batch: b.cfg.batch,
			partOpts: o, onMarked: onMarked, stats: stats}
		// Register every relay before any takes partitions: the prototype
		// does not rebalance.
		if err := rs[i].register(ctx); err != nil {
			return nil, err
		}
	}
	if profile != "" {
		f, err := os.Create(profile)
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
	errs := make(chan error, relays)
	var pgCPU []func() time.Duration
	for _, r := range rs {
		pgCPU = append(pgCPU, backendCPU(ctx, r.db, 3))
	}
	cpu0, redis0 := processCPU(), b.redisCPU(ctx)
	start := time.Now()
	for _, r := range rs {
		wg.Go(func() {
			if err := r.run(rctx); err != nil && rctx.Err() == nil {
				errs <- err
				cancel()
			}
		})
	}
	select {
	case <-done:
	case <-time.After(b.cfg.drainTimeout):
	case <-rctx.Done():
	}
	d := time.Since(start)
	if profile != "" {
		pprof.StopCPUProfile() // the relays only, not the checks below
	}
	cpu, redisCPU := processCPU()-cpu0, b.redisCPU(ctx)-redis0
	var pg time.Duration
	for _, f := range pgCPU {
		pg += f()
	}
	cancel()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if got := marked.Load(); got < int64(n) {
		r := throughput(name, int(got), d)
		r.Note = fmt.Sprintf("NOT DRAINED: %d of %d events synced when it gave up after %s", got, n, b.cfg.drainTimeout)
		return r, nil
	}
	if err := b.checkOrder(ctx, t.events, topic, n); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := throughput(name, n, d)
	per := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(max(stats.batches.Load(), 1)) }
	r.Note = fmt.Sprintf("%s; CPU per batch: Postgres backends %.1f ms, this process %.1f ms, Redis %.1f ms", stats, per(pg), per(cpu), per(redisCPU))
	if f, ok := pub.(*flakyPublisher); ok {
		r.Note += fmt.Sprintf("; %d first attempts failed", len(f.failed))
	}
	return r, nil
}

// backendCPU returns a function that tells how much CPU the Postgres
// server processes behind db's connections have used since backendCPU
// was called. It holds n connections at once to learn their backends, so
// it knows every connection of a pool whose size is at most n (and whose
// idle connections are kept). It reads /proc, so it measures something
// only with the server on this machine; else it returns 0.
func backendCPU(ctx context.Context, db *sqlx.DB, n int) func() time.Duration {
	var pids []int
	var conns []*sql.Conn
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			break
		}
		conns = append(conns, c)
		var pid int
		if c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid) == nil {
			pids = append(pids, pid)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	used := func() time.Duration {
		var total time.Duration
		for _, pid := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			// Fields after the command (which may hold spaces): utime and
			// stime are the 12th and 13th, in clock ticks (100 a second).
			s := string(b)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				total += time.Duration(u+st) * 10 * time.Millisecond
			}
		}
		return total
	}
	start := used()
	return func() time.Duration { return used() - start }
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCPU is the CPU time the Redis server has used (INFO cpu), or 0.
func (b *bench) redisCPU(ctx context.Context) time.Duration {
	info, err := b.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// checkOrder checks that the stream holds every event of the table and
// each aggregate's events in save order (a repeat of an event already
// delivered aside).
func (b *bench) checkOrder(ctx context.Context, table, stream string, n int) error {
	seqOf := make(map[string]int64, n)
	rows, err := b.pg.QueryContext(ctx, "SELECT id, seq FROM "+table)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			rows.Close()
			return err
		}
		seqOf[id] = seq
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	last := map[string]int64{} // aggregate -> highest seq delivered
	seen := make(map[string]bool, n)
	from := "-"
	for {
		msgs, err := b.rdb.XRangeN(ctx, stream, from, "+", 10000).Result()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			e, err := redisstream.Decode(m.Values)
			if err != nil {
				return err
			}
			seq, ok := seqOf[e.ID]
			if !ok {
				return fmt.Errorf("stream entry %s: unknown event %s", m.ID, e.ID)
			}
			if seq < last[e.AggregateID] && !seen[e.ID] {
				return fmt.Errorf("aggregate %s: event seq %d delivered after seq %d", e.AggregateID, seq, last[e.AggregateID])
			}
			last[e.AggregateID] = max(last[e.AggregateID], seq)
			seen[e.ID] = true
		}
		if len(msgs) < 10000 {
			break
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
	if len(seen) != n || len(seqOf) != n {
		return fmt.Errorf("stream holds %d of the %d events (table: %d)", len(seen), n, len(seqOf))
	}
	return nil
}

// partRelay is one prototype relay.
type partRelay struct {
	db    *sqlx.DB
	t     *partitionTables
	owner string
	pub   outbox.Publisher
	batch int
	partOpts
	onMarked func(int)
	stats    *partStats

	mu    sync.Mutex
	owned map[int16]partLease
	// gen is bumped when a partition's events must be read again from the
	// database (an event was not published); the reader then rewinds that
	// partition's cursor and the publisher drops what it read before.
	gen [partitionCount]atomic.Int64
	// rewind is when (Unix ns) the reader is to read a partition again
	// from its oldest pending event, after an event of it was not
	// published; 0: not due.
	rewind [partitionCount]atomic.Int64
	// held are the aggregates with an event that was not published
	// (publisher only): their later events are not published until the
	// hold ends and their partition has been read again.
	held map[string]partHold
}

// partHold holds an aggregate back until a time, and for every batch read
// before its partition's re-read (gen).
type partHold struct {
	until time.Time
	gen   int64
}

// partOpts are the variants of the prototype.
type partOpts struct {
	sequential   bool // read, publish and mark one after the other
	perPartition bool // a read cursor per partition (see partReader)
	// failEvery > 0 fails the first attempt of one event in failEvery
	// (tests of the retry path).
	failEvery int
}

// flakyPublisher fails the first attempt of some events, holding back the
// later events of their aggregate in the batch as a publisher must.
type flakyPublisher struct {
	outbox.Publisher
	every  int
	mu     sync.Mutex
	n      int
	failed map[string]bool // event IDs failed once
}

func (f *flakyPublisher) Publish(ctx context.Context, events []*outbox.Event) error {
	var b outbox.BatchErrors
	send := make([]*outbox.Event, 0, len(events))
	f.mu.Lock()
	for _, e := range events {
		if b.HeldBack(e) {
			continue
		}
		if f.n++; f.n%f.every == 0 && !f.failed[e.ID] {
			f.failed[e.ID] = true
			b.Fail(e, errors.New("flaky: first attempt fails"))
			continue
		}
		send = append(send, e)
	}
	f.mu.Unlock()
	err := f.Publisher.Publish(ctx, send)
	var pe *outbox.PublishError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		for _, e := range send {
			if ferr, ok := pe.Failed[e.ID]; ok {
				b.Fail(e, ferr)
			}
		}
	default:
		return err
	}
	return b.Err()
}

// partStats adds up where the relays' time went.
type partStats struct {
	batches, readNs, pubNs, markNs atomic.Int64
}

func (s *partStats) add(what *atomic.Int64, since time.Time) { what.Add(int64(time.Since(since))) }

// String gives the mean time of each stage per batch (read: the reads
// that returned events or nothing, not the waits after those).
func (s *partStats) String() string {
	n := max(s.batches.Load(), 1)
	ms := func(v *atomic.Int64) float64 { return float64(v.Load()) / float64(n) / 1e6 }
	return fmt.Sprintf("%d batches; per batch: read %.1f ms, publish %.1f ms, mark %.1f ms", n, ms(&s.readNs), ms(&s.pubNs), ms(&s.markNs))
}

// partLease is one owned partition: its fencing token, and the local
// time after which the relay no longer publishes its events.
type partLease struct {
	token    int64
	deadline time.Time
}

// partBatch is what the reader hands the publisher.
type partBatch struct {
	events []*outbox.Event
	parts  []int16         // partition of each event
	seqs   []int64         // seq of each event
	gens   map[int16]int64 // partition -> gen when read
	leases map[int16]partLease
}

func (r *partRelay) register(ctx context.Context) error {
	_, err := r.db.ExecContext(ctx, "INSERT INTO "+r.t.members+" (owner, seen_until) VALUES ($1, now() + $2::interval) ON CONFLICT (owner) DO UPDATE SET seen_until = EXCLUDED.seen_until",
		r.owner, fmt.Sprintf("%d milliseconds", partitionTTL.Milliseconds()))
	return err
}

// maintain renews the relay's membership and leases and takes free
// partitions up to its fair share (P over the live relays, rounded up).
// Leases it lost (not renewed in time) are dropped.
func (r *partRelay) maintain(ctx context.Context) error {
	sent := time.Now()
	if err := r.register(ctx); err != nil {
		return err
	}
	ttl := fmt.Sprintf("%d milliseconds", partitionTTL.Milliseconds())
	var live int
	if err := r.db.GetContext(ctx, &live, "SELECT count(*) FROM "+r.t.members+" WHERE seen_until > now()"); err != nil {
		return err
	}
	share := (partitionCount + max(live, 1) - 1) / max(live, 1)
	leases := map[int16]partLease{}
	scan := func(rows *sql.Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p int16
			var tok int64
			if err := rows.Scan(&p, &tok); err != nil {
				return err
			}
			leases[p] = partLease{token: tok, deadline: sent.Add(partitionTTL - partitionMargin)}
		}
		return rows.Err()
	}
	if err := scan(r.db.QueryContext(ctx, "UPDATE "+r.t.parts+" SET lease_until = now() + $2::interval WHERE owner = $1 AND lease_until > now() RETURNING partition, token", r.owner, ttl)); err != nil {
		return err
	}
	if len(leases) < share {
		if err := scan(r.db.QueryContext(ctx, "UPDATE "+r.t.parts+" SET owner = $1, token = token + 1, lease_until = now() + $2::interval WHERE partition IN (SELECT partition FROM "+r.t.parts+
			" WHERE lease_until <= now() ORDER BY partition LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING partition, token", r.owner, ttl, share-len(leases))); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, l := range r.owned {
		if nl, ok := leases[p]; !ok || nl.token != l.token {
			r.gen[p].Add(1) // lost or taken anew: read it from the start
		}
	}
	r.owned = leases
	return nil
}

func (r *partRelay) leases() map[int16]partLease {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owned
}

// run drives the relay until ctx ends: lease upkeep, and the reader,
// publisher and marker, overlapped through channels of one batch unless
// sequential.
func (r *partRelay) run(ctx context.Context) error {
	if err := r.maintain(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		tick := time.NewTicker(partitionRenew)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := r.maintain(ctx); err != nil {
					cancel(err)
					return
				}
			}
		}
	})
	if r.sequential {
		rd := r.newReader()
		for ctx.Err() == nil {
			b, err := rd.read(ctx)
			if err == nil && b != nil {
				var ids []int64
				var toks []int64
				if ids, toks, err = r.publish(ctx, b); err == nil {
					err = r.mark(ctx, ids, toks)
				}
			}
			if err != nil {
				cancel(err)
			}
		}
		return stopped(ctx)
	}
	toPub := make(chan *partBatch, 1)
	type marks struct {
		ids  []int64
		toks []int64
	}
	toMark := make(chan marks, 1)
	wg.Go(func() {
		defer close(toPub)
		rd := r.newReader()
		for ctx.Err() == nil {
			b, err := rd.read(ctx)
			if err != nil {
				cancel(err)
				return
			}
			if b == nil {
				continue
			}
			select {
			case toPub <- b:
			case <-ctx.Done():
				return
			}
		}
	})
	wg.Go(func() {
		defer close(toMark)
		for b := range toPub {
			ids, toks, err := r.publish(ctx, b)
			if err != nil {
				cancel(err)
				return
			}
			if len(ids) > 0 {
				select {
				case toMark <- marks{ids, toks}:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	for m := range toMark {
		if err := r.mark(ctx, m.ids, m.toks); err != nil {
			cancel(err)
		}
	}
	return stopped(ctx)
}

// stopped is nil when ctx was cancelled without a cause, else the cause.
func stopped(ctx context.Context) error {
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// partReader reads the due events of the owned partitions in save
// order, from a cursor: the last seq it handed on, so it reads ahead of
// the marks and never re-reads what is in flight. With global, one cursor
// for all its partitions, read in save order through the pending index on
// seq (the rows of other relays' partitions are read and skipped); else
// one cursor per partition, each read through the (partition, seq) index.
type partReader struct {
	r      *partRelay
	global bool
	cursor [partitionCount]int64
	all    int64 // the cursor of global
	gen    [partitionCount]int64
	had    [partitionCount]bool
	turn   int
	stmt   string
}

func (r *partRelay) newReader() *partReader {
	if !r.perPartition {
		return &partReader{r: r, global: true, stmt: "SELECT seq, id, topic, event_type, aggregate_id, payload, headers, created_at, partition FROM " + r.t.events +
			" WHERE seq > $2 AND synced_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now() AND partition = ANY($1::smallint[]) ORDER BY seq LIMIT $3"}
	}
	return &partReader{r: r, stmt: "SELECT e.seq, e.id, e.topic, e.event_type, e.aggregate_id, e.payload, e.headers, e.created_at, e.partition" +
		" FROM unnest($1::smallint[], $2::bigint[]) AS o(part, after) CROSS JOIN LATERAL (SELECT * FROM " + r.t.events +
		" WHERE partition = o.part AND seq > o.after AND synced_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()" +
		" ORDER BY seq LIMIT $3) e LIMIT $3"}
}

// read returns the next batch, or nil after a short wait when there is
// nothing due.
func (rd *partReader) read(ctx context.Context) (*partBatch, error) {
	leases := rd.r.leases()
	parts := make([]int16, 0, len(leases))
	for p := range leases {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	// Start at another partition each time, so that no partition waits
	// for the others to drain.
	if len(parts) > 0 {
		rd.turn = (rd.turn + 1) % len(parts)
		parts = append(parts[rd.turn:], parts[:rd.turn]...)
	}
	afters := make([]int64, len(parts))
	gens := make(map[int16]int64, len(parts))
	now := time.Now().UnixNano()
	var owned [partitionCount]bool
	for i, p := range parts {
		owned[p] = true
		if t := rd.r.rewind[p].Load(); t != 0 && now >= t && rd.r.rewind[p].CompareAndSwap(t, 0) {
			rd.r.gen[p].Add(1)
		}
		if g := rd.r.gen[p].Load(); g != rd.gen[p] || !rd.had[p] {
			rd.gen[p], rd.cursor[p] = g, 0
			if rd.global {
				rd.all = 0 // read all the partitions again from their oldest
			}
		}
		afters[i], gens[p] = rd.cursor[p], rd.gen[p]
	}
	rd.had = owned
	if len(parts) == 0 {
		return nil, sleep(ctx, 50*time.Millisecond)
	}
	t0 := time.Now()
	var rows *sql.Rows
	var err error
	if rd.global {
		rows, err = rd.r.db.QueryContext(ctx, rd.stmt, parts, rd.all, rd.r.batch)
	} else {
		rows, err = rd.r.db.QueryContext(ctx, rd.stmt, parts, afters, rd.r.batch)
	}
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	defer rows.Close()
	b := &partBatch{gens: gens, leases: leases}
	for rows.Next() {
		var seq int64
		var p int16
		var headers sql.NullString
		e := &outbox.Event{}
		if err := rows.Scan(&seq, &e.ID, &e.Topic, &e.Type, &e.AggregateID, &e.Payload, &headers, &e.CreatedAt, &p); err != nil {
			return nil, err
		}
		if headers.Valid && headers.String != "" {
			if err := json.Unmarshal([]byte(headers.String), &e.Headers); err != nil {
				return nil, fmt.Errorf("headers of %s: %w", e.ID, err)
			}
		}
		e.CreatedAt = e.CreatedAt.UTC()
		rd.cursor[p], rd.all = seq, seq
		b.events = append(b.events, e)
		b.parts = append(b.parts, p)
		b.seqs = append(b.seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rd.r.stats.add(&rd.r.stats.readNs, t0)
	if len(b.events) == 0 {
		return nil, sleep(ctx, 5*time.Millisecond)
	}
	return b, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return nil
}

// publish sends a batch's events that may go (their partition still
// owned, not re-read since, their aggregate not held) and returns the
// seqs of those the broker acknowledged, with the relay's token of every
// partition (by partition number) for the fenced mark. An event that is
// not published holds its aggregate for a second and has its partition
// read again from the database.
func (r *partRelay) publish(ctx context.Context, b *partBatch) ([]int64, []int64, error) {
	now := time.Now()
	send := make([]*outbox.Event, 0, len(b.events))
	part := make(map[string]int, len(b.events)) // event ID -> index in b
	for i, e := range b.events {
		p := b.parts[i]
		l := b.leases[p]
		if r.gen[p].Load() != b.gens[p] || now.After(l.deadline) {
			continue // lost, or to be read again: drop what was read before
		}
		if h, ok := r.held[e.AggregateID]; ok {
			if now.Before(h.until) || b.gens[p] == h.gen {
				continue
			}
			delete(r.held, e.AggregateID)
		}
		send = append(send, e)
		part[e.ID] = i
	}
	if len(send) == 0 {
		return nil, nil, nil
	}
	r.stats.batches.Add(1)
	t0 := time.Now()
	err := r.pub.Publish(ctx, send)
	r.stats.add(&r.stats.pubNs, t0)
	var pe *outbox.PublishError
	if err != nil && !errors.As(err, &pe) {
		pe = &outbox.PublishError{Failed: map[string]error{}}
		for _, e := range send {
			pe.Failed[e.ID] = err
		}
	}
	ids := make([]int64, 0, len(send))
	for _, e := range send {
		if pe != nil {
			if _, failed := pe.Failed[e.ID]; failed {
				p, until := b.parts[part[e.ID]], now.Add(time.Second)
				if r.held == nil {
					r.held = map[string]partHold{}
				}
				r.held[e.AggregateID] = partHold{until, b.gens[p]}
				r.rewind[p].CompareAndSwap(0, until.UnixNano())
				continue
			}
		}
		ids = append(ids, b.seqs[part[e.ID]])
	}
	toks := make([]int64, partitionCount)
	for p, l := range b.leases {
		toks[p] = l.token
	}
	return ids, toks, nil
}

// mark sets synced_at on the acknowledged events in one statement that
// also checks, for each event's partition, that the relay's token is
// still the partition's and its lease has not ended.
func (r *partRelay) mark(ctx context.Context, ids []int64, toks []int64) error {
	if len(ids) == 0 {
		return nil
	}
	defer r.stats.add(&r.stats.markNs, time.Now())
	res, err := r.db.ExecContext(ctx, "UPDATE "+r.t.events+" e SET synced_at = now() FROM "+r.t.parts+" p"+
		" WHERE e.seq = ANY($1::bigint[]) AND e.synced_at IS NULL AND p.partition = e.partition"+
		" AND p.token = ($2::bigint[])[e.partition + 1] AND p.lease_until > now()", ids, toks)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("mark: %w", err)
	}
	k, err := res.RowsAffected()
	if err != nil {
		return err
	}
	r.onMarked(int(k))
	return nil
}
