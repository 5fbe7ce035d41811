package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The partition tests run relays as processes, so that a fault is a real
// one: SIGKILL, SIGSTOP. A relay process is this test binary run again
// with childEnv set to its configuration (see TestMain).
const childEnv = "OUTBOX_E2E_PARTITION_RELAY"

// The timing of every relay: a heartbeat every quarter second, alive
// for 1.25 s after the last, so a dead relay's partitions move within
// that; a claim lease of a second.
const (
	partTimeout = 500 * time.Millisecond
	partLease   = time.Second
	partTTL     = partLease + partLease/4
	partBeat    = partTTL / 5
)

// childConfig is what a relay process runs with.
type childConfig struct {
	Driver, DSN, Table string
	Redis, Stream      string // Redis host:port; the one stream of every event
	Name               string // the relay's name in the partitions table
	// SlowMillis holds each batch this long after the broker acknowledged
	// it, before it is marked: the window in which the test stops or
	// kills the relay with a batch in flight.
	SlowMillis int
	// Marks runs the relay with delivery recorded per partition
	// (sqlstore.WithWatermarks).
	Marks bool
}

// relayChild runs one relay until SIGTERM, writing to stdout, one line
// each: "ready"; "batch <key> <id,id,...>" before a batch is published
// (key: its first ID); "published <key>" once the broker acknowledged it;
// "done <key>" once its outcome is recorded; "left" after Run returned
// (and gave back its partitions). Warnings go to stderr as JSON.
func relayChild(raw string) int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "relay child:", err)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "relay child:", err); return 1 }
	db, err := sqlx.Open(cfg.Driver, cfg.DSN)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	opts := []sqlstore.Option{sqlstore.WithTable(cfg.Table), sqlstore.WithRelayName(cfg.Name), sqlstore.WithHeartbeat(partBeat, partTTL)}
	if cfg.Marks {
		opts = append(opts, sqlstore.WithWatermarks())
	}
	store, err := sqlstore.New(db, opts...)
	if err != nil {
		return fail(err)
	}
	client := redis.NewClient(&redis.Options{Addr: cfg.Redis})
	defer client.Close()
	pub, err := redisstream.New(client, redisstream.WithStream(func(*outbox.Event) string { return cfg.Stream }))
	if err != nil {
		return fail(err)
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // unbuffered: a line is out before the next step
	}
	wrapped := outbox.PublisherFunc(func(ctx context.Context, events []*outbox.Event) error {
		ids := make([]string, len(events))
		for i, e := range events {
			ids[i] = e.ID
		}
		say("batch %s %s", ids[0], strings.Join(ids, ","))
		err := pub.Publish(ctx, events)
		if err == nil {
			say("published %s", ids[0])
			time.Sleep(time.Duration(cfg.SlowMillis) * time.Millisecond)
		}
		return err
	})
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ob, err := outbox.New(store, wrapped,
		outbox.WithTimeout(partTimeout), outbox.WithLease(partLease),
		outbox.WithInterval(20*time.Millisecond), outbox.WithBatchSize(20),
		outbox.WithLogger(logger), outbox.WithHooks(doneHook{say}))
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	say("ready")
	if err := ob.Run(ctx); err != nil {
		return fail(err)
	}
	say("left")
	return 0
}

// doneHook tells when a batch's outcome is recorded.
type doneHook struct{ say func(string, ...any) }

func (doneHook) BeforePublish(ctx context.Context, _ outbox.PublishStart) context.Context { return ctx }
func (h doneHook) AfterPublish(_ context.Context, r outbox.PublishDone) {
	if !r.Immediate && len(r.Events) > 0 {
		h.say("done %s", r.Events[0].ID)
	}
}

// partFixture is one table, one stream and the relays on them.
type partFixture struct {
	t      *testing.T
	dbName string
	cfg    childConfig // Name and SlowMillis set per relay
	db     *sqlx.DB
	ob     *outbox.Outbox // saves; never relays
	broker *broker

	mu    sync.Mutex
	order map[string][]string  // aggregate -> IDs in save order
	saved map[string]time.Time // ID -> when its save committed
}

// forEachPartitionDatabase runs fn per database on a fresh table and
// stream, the subtests one after the other (each starts processes).
func forEachPartitionDatabase(t *testing.T, skipSQLite bool, fn func(t *testing.T, f *partFixture)) {
	runs := slices.Clone(databases)
	for _, d := range databases {
		if d.name == "postgres" {
			// Once more with delivery recorded per partition.
			runs = append(runs, database{name: "postgres-watermarks", driver: d.driver, dsn: d.dsn})
		}
	}
	for _, d := range runs {
		t.Run(d.name, func(t *testing.T) {
			marks := d.name == "postgres-watermarks"
			if marks {
				d.name = "postgres"
			}
			if d.name == "sqlite" && skipSQLite {
				t.Skip("SQLite has one partition")
			}
			dsn := d.dsn(t)
			if dsn == "" {
				t.Skipf("set %s to run against a real server", envOf[d.name])
			}
			db, err := sqlx.Open(d.driver, dsn)
			mustNoErr(t, err, "open")
			t.Cleanup(func() { db.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			mustNoErr(t, db.PingContext(ctx), "%s is set but the server cannot be reached", envOf[d.name])
			table := "e2e_part_" + randomHex(6)
			opts := []sqlstore.Option{sqlstore.WithTable(table)}
			if marks {
				opts = append(opts, sqlstore.WithWatermarks())
			}
			store, err := sqlstore.New(db, opts...)
			mustNoErr(t, err, "sqlstore.New")
			mustNoErr(t, store.Migrate(ctx), "migrate")
			t.Cleanup(func() {
				if err := store.Drop(context.Background()); err != nil {
					t.Errorf("drop %s: %v", table, err)
				}
			})
			ob, err := outbox.New(store, outbox.Noop{})
			mustNoErr(t, err, "outbox.New")
			b := newBroker(t)
			f := &partFixture{
				t: t, dbName: d.name, db: db, ob: ob, broker: b,
				cfg:   childConfig{Driver: d.driver, DSN: dsn, Table: table, Redis: b.direct.Options().Addr, Stream: b.prefix + "events", Marks: marks},
				order: map[string][]string{}, saved: map[string]time.Time{},
			}
			fn(t, f)
		})
	}
}

// relayProc is a running relay process and what it said.
type relayProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}

	mu        sync.Mutex
	batches   map[string][]string // key -> IDs
	done      map[string]bool
	published chan string // keys, as the broker acknowledges them
	ready     chan struct{}
	left      bool
	stderr    bytes.Buffer
	err       error // of Wait
}

func (f *partFixture) startRelay(name string, slow time.Duration) *relayProc {
	t := f.t
	t.Helper()
	cfg := f.cfg
	cfg.Name, cfg.SlowMillis = name, int(slow/time.Millisecond)
	raw, err := json.Marshal(cfg)
	mustNoErr(t, err, "config")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	r := &relayProc{name: name, cmd: cmd, exited: make(chan struct{}), batches: map[string][]string{},
		done: map[string]bool{}, published: make(chan string, 1<<16), ready: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &r.mu, w: &r.stderr}
	out, err := cmd.StdoutPipe()
	mustNoErr(t, err, "stdout")
	mustNoErr(t, cmd.Start(), "start relay %s", name)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r.line(sc.Text())
		}
		err := cmd.Wait()
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() {
			t.Logf("relay %s stderr:\n%s", name, r.stderrText())
		}
	})
	select {
	case <-r.ready:
	case <-r.exited:
		t.Fatalf("relay %s exited at start: %v\n%s", name, r.err, r.stderrText())
	case <-time.After(15 * time.Second):
		t.Fatalf("relay %s did not start", name)
	}
	return r
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (r *relayProc) line(s string) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch fields[0] {
	case "ready":
		close(r.ready)
	case "batch":
		if len(fields) == 3 {
			r.batches[fields[1]] = strings.Split(fields[2], ",")
		}
	case "published":
		if len(fields) == 2 {
			r.published <- fields[1]
		}
	case "done":
		if len(fields) == 2 {
			r.done[fields[1]] = true
		}
	case "left":
		r.left = true
	}
}

func (r *relayProc) stderrText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.String()
}

// unfinished returns the IDs of the batches the relay began and did not
// record: the only events it may leave to be published again.
func (r *relayProc) unfinished() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for key, ids := range r.batches {
		if !r.done[key] {
			for _, id := range ids {
				out[id] = true
			}
		}
	}
	return out
}

func (r *relayProc) batch(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.batches[key]
}

// nextPublished waits for the relay's next acknowledged batch, skipping
// those already reported, and returns its key.
func (r *relayProc) nextPublished(t *testing.T) string {
	t.Helper()
	for {
		select {
		case <-r.published:
		default:
			select {
			case key := <-r.published:
				return key
			case <-time.After(15 * time.Second):
				t.Fatalf("relay %s published nothing", r.name)
			}
		}
	}
}

func (r *relayProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	mustNoErr(t, r.cmd.Process.Signal(sig), "signal %v to %s", sig, r.name)
}

// stop ends the relay gracefully (Run returns and gives back its
// partitions) and fails the test unless it exits cleanly.
func (r *relayProc) stop(t *testing.T) {
	t.Helper()
	r.signal(t, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("relay %s did not stop", r.name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || !r.left {
		t.Fatalf("relay %s: exit %v (left: %v)\n%s", r.name, r.err, r.left, r.stderr.String())
	}
}

func (r *relayProc) kill(t *testing.T) {
	t.Helper()
	r.signal(t, syscall.SIGKILL)
	<-r.exited
}

// writer saves events in transactions of ten over aggs aggregates, one
// transaction after the other (so save order is commit order), until the
// returned stop is called; stop returns how many it saved.
func (f *partFixture) writer(aggs int) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	n := 0
	var werr error
	wg.Go(func() {
		for ctx.Err() == nil {
			events := make([]*outbox.Event, 10)
			for i := range events {
				events[i] = &outbox.Event{ID: outbox.NewID(), Topic: "stock", Type: "stock.updated",
					AggregateID: fmt.Sprintf("agg-%d", (n+i)%aggs), Payload: []byte("{}")}
			}
			// Not on ctx: a commit cut short by the stop may still
			// have committed, and then the events would be unaccounted.
			tx, err := f.db.BeginTx(context.Background(), nil)
			if err == nil {
				if err = f.ob.Save(context.Background(), tx, events...); err == nil {
					err = tx.Commit()
				} else {
					_ = tx.Rollback()
				}
			}
			if err != nil {
				werr = err
				return
			}
			now := time.Now()
			f.mu.Lock()
			for _, e := range events {
				f.order[e.AggregateID] = append(f.order[e.AggregateID], e.ID)
				f.saved[e.ID] = now
			}
			f.mu.Unlock()
			n += len(events)
			time.Sleep(10 * time.Millisecond)
		}
	})
	return func() int {
		cancel()
		wg.Wait()
		if werr != nil {
			f.t.Fatalf("writer: %v", werr)
		}
		return n
	}
}

// part is one row of the partitions table.
type part struct {
	owner string
	token int64
	live  bool // leased now, on the database's clock
}

func (f *partFixture) partitions() map[int]part {
	t := f.t
	t.Helper()
	now := map[string]string{"postgres": "now()", "mysql": "UTC_TIMESTAMP(6)", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')"}[f.dbName]
	rows, err := f.db.QueryContext(t.Context(), "SELECT partition_no, COALESCE(owner, ''), token, CASE WHEN lease_until > "+now+
		" THEN 1 ELSE 0 END FROM "+f.cfg.Table+"_partitions")
	mustNoErr(t, err, "read partitions")
	defer rows.Close()
	out := map[int]part{}
	for rows.Next() {
		var p, live int
		var r part
		mustNoErr(t, rows.Scan(&p, &r.owner, &r.token, &live), "scan partitions")
		r.live = live == 1
		out[p] = r
	}
	mustNoErr(t, rows.Err(), "read partitions")
	return out
}

// ownedBy returns the partitions a relay owns with a live lease.
func ownedBy(parts map[int]part, name string) map[int]part {
	out := map[int]part{}
	for p, r := range parts {
		if r.owner == name && r.live {
			out[p] = r
		}
	}
	return out
}

// waitFair waits until the live relays named own every partition, each
// at most its fair share (the partition count over them, rounded up),
// and no other relay owns one; it returns how long that took.
func (f *partFixture) waitFair(names ...string) time.Duration {
	t := f.t
	t.Helper()
	start := time.Now()
	var last map[string]int
	for time.Since(start) < 15*time.Second {
		parts := f.partitions()
		share := (len(parts) + len(names) - 1) / len(names)
		last = map[string]int{}
		owned := 0
		for _, r := range parts {
			if r.live && r.owner != "" {
				last[r.owner]++
				owned++
			}
		}
		ok := owned == len(parts) && len(last) == min(len(names), len(parts))
		for owner, n := range last {
			if n > share || !containsName(names, owner) {
				ok = false
			}
		}
		if ok {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("partitions never shared fairly among %v: owned %v", names, last)
	return 0
}

func containsName(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// waitTakenOver waits until no partition of gone is owned by relay name
// any more and each is owned by another relay under a higher token.
func (f *partFixture) waitTakenOver(name string, gone map[int]part) map[int]part {
	t := f.t
	t.Helper()
	deadline := time.Now().Add(partTTL + 10*time.Second)
	for {
		parts := f.partitions()
		moved := true
		for p, old := range gone {
			r := parts[p]
			if r.owner == name || r.owner == "" || !r.live || r.token <= old.token {
				moved = false
			}
		}
		if moved {
			return parts
		}
		if time.Now().After(deadline) {
			t.Fatalf("the partitions of %s never moved: before %v, now %v", name, gone, parts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDrained waits until no event of the table is pending.
func (f *partFixture) waitDrained() {
	t := f.t
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var pending int
		mustNoErr(t, f.db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+f.cfg.Table+" e WHERE NOT "+f.delivered("e")).Scan(&pending), "count pending")
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still pending; partitions %v", pending, f.partitions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unrecorded returns, with watermarks, the events r published that the
// table does not record as delivered: r stopped (killed or paused), so
// what it delivered since its last heartbeat may be delivered again by
// the relay that takes its partitions. Without watermarks, none.
func (f *partFixture) unrecorded(r *relayProc) map[string]bool {
	out := map[string]bool{}
	if !f.cfg.Marks {
		return out
	}
	r.mu.Lock()
	var ids []string
	for _, b := range r.batches {
		ids = append(ids, b...)
	}
	r.mu.Unlock()
	for _, id := range ids {
		if !f.synced([]string{id}) {
			out[id] = true
		}
	}
	return out
}

// delivered is the condition that the event (as alias) is recorded as
// delivered: its synced_at, or, with watermarks, its partition's mark.
func (f *partFixture) delivered(alias string) string {
	c := "(" + alias + ".synced_at IS NOT NULL"
	if f.cfg.Marks {
		c += " OR EXISTS (SELECT 1 FROM " + f.cfg.Table + "_partitions p WHERE p.partition_no = " + alias + ".partition_no AND " +
			alias + ".xid IS NOT NULL AND " + alias + ".seq <= p.mark_seq AND txid_visible_in_snapshot(" + alias + ".xid, p.mark_snap))"
	}
	return c + ")"
}

// synced reports whether every event of ids is marked synced.
func (f *partFixture) synced(ids []string) bool {
	q, args, err := sqlx.In("SELECT COUNT(*) FROM "+f.cfg.Table+" e WHERE "+f.delivered("e")+" AND e.id IN (?)", ids)
	mustNoErr(f.t, err, "query")
	var n int
	mustNoErr(f.t, f.db.QueryRowContext(f.t.Context(), f.db.Rebind(q), args...).Scan(&n), "count synced")
	return n == len(ids)
}

// verify checks the stream against what was saved: every event arrived;
// an event arrived more than once only if it is in mayRepeat; and each
// aggregate's events arrived, first copies counted, in save order. No
// event counted an attempt or is dead (the broker never failed). It
// returns the events that arrived more than once.
func (f *partFixture) verify(mayRepeat map[string]bool) map[string]int {
	t := f.t
	t.Helper()
	msgs, err := f.broker.direct.XRange(context.Background(), f.cfg.Stream, "-", "+").Result()
	mustNoErr(t, err, "XRANGE")
	f.mu.Lock()
	defer f.mu.Unlock()
	count := map[string]int{}
	got := map[string][]string{}
	for _, m := range msgs {
		id, _ := m.Values[redisstream.FieldID].(string)
		agg, _ := m.Values[redisstream.FieldAggregateID].(string)
		if _, ok := f.saved[id]; !ok {
			t.Errorf("the stream has event %s, which was never saved", id)
		}
		if count[id]++; count[id] == 1 {
			got[agg] = append(got[agg], id)
		}
	}
	repeated := map[string]int{}
	for id, n := range count {
		if n > 1 {
			repeated[id] = n
			if !mayRepeat[id] {
				t.Errorf("event %s arrived %d times, and no relay that died or lost its lease had it in flight", id, n)
			}
		}
	}
	lost := 0
	for id := range f.saved {
		if count[id] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d saved events never arrived", lost, len(f.saved))
	}
	for agg, want := range f.order {
		if fmt.Sprint(got[agg]) != fmt.Sprint(want) {
			t.Errorf("aggregate %s arrived (first copies) as %v, saved as %v", agg, got[agg], want)
		}
	}
	var attempts, dead int
	mustNoErr(t, f.db.QueryRowContext(t.Context(), "SELECT COALESCE(SUM(attempts), 0), COUNT(dead_at) FROM "+f.cfg.Table).Scan(&attempts, &dead), "count attempts")
	if attempts != 0 || dead != 0 {
		t.Errorf("%d attempts counted and %d events dead, with a broker that never failed", attempts, dead)
	}
	return repeated
}

// A relay killed (SIGKILL) with a batch published and not yet marked:
// its partitions move to the survivors once their lease ends (new owner,
// token raised), nothing is lost, each aggregate's events reach the
// stream in save order, and the only events published twice are those
// of the killed relay's batches in flight, which the new owners publish
// again.
func TestPartitionsMoveFromAKilledRelay(t *testing.T) {
	forEachPartitionDatabase(t, false, func(t *testing.T, f *partFixture) {
		start := time.Now()
		// The victim starts first, so that on SQLite it owns the one
		// partition.
		victim := f.startRelay("victim", 150*time.Millisecond)
		f.waitFair("victim")
		stopWriter := f.writer(200)
		a, b := f.startRelay("survivor-a", 0), f.startRelay("survivor-b", 0)
		f.waitFair("victim", "survivor-a", "survivor-b")

		key := victim.nextPublished(t)
		victim.kill(t)
		inFlight := victim.batch(key)
		// With watermarks, what the victim delivered since its last
		// heartbeat is not recorded: those may arrive again too.
		mayRepeat := f.unrecorded(victim)
		gone := ownedBy(f.partitions(), "victim")
		if len(gone) == 0 {
			t.Fatal("the killed relay owned no partition")
		}
		killed := time.Now()
		f.waitTakenOver("victim", gone)
		moved := time.Since(killed)
		f.waitFair("survivor-a", "survivor-b")
		time.Sleep(500 * time.Millisecond) // the survivors relay under load
		saved := stopWriter()
		f.waitDrained()
		a.stop(t)
		b.stop(t)

		maps.Copy(mayRepeat, victim.unfinished())
		repeated := f.verify(mayRepeat)
		for _, id := range inFlight {
			if repeated[id] < 2 {
				t.Errorf("event %s of the killed relay's batch in flight arrived %d times: the new owner did not publish it again", id, repeated[id])
			}
		}
		if moved < partTTL/2 {
			t.Errorf("the partitions moved %v after the kill: before their lease could end", moved)
		}
		t.Logf("%d events; %d partitions moved %v after the kill; %d arrived twice; %v in all",
			saved, len(gone), moved.Round(time.Millisecond), len(repeated), time.Since(start).Round(time.Millisecond))
	})
}

// A relay paused (SIGSTOP) past its lease with a batch published and not
// yet marked: the others take its partitions and publish that batch
// again; resumed (SIGCONT), its late mark changes no row (the relay logs
// that the lease was lost), it counts no attempt, and then it relays on.
// Nothing is lost and each aggregate's order is kept.
func TestPartitionsMoveFromAPausedRelay(t *testing.T) {
	forEachPartitionDatabase(t, false, func(t *testing.T, f *partFixture) {
		start := time.Now()
		paused := f.startRelay("paused", 150*time.Millisecond)
		f.waitFair("paused")
		stopWriter := f.writer(200)
		other := f.startRelay("other", 0)
		f.waitFair("paused", "other")

		key := f.pauseOutsideWriteLock(paused)
		stoppedAt := time.Now()
		unrecorded := f.unrecorded(paused)
		inFlight := paused.batch(key)
		gone := ownedBy(f.partitions(), "paused")
		if len(gone) == 0 {
			t.Fatal("the paused relay owned no partition")
		}
		f.waitTakenOver("paused", gone)
		moved := time.Since(stoppedAt)
		waitFor(t, "the paused relay's batch to be published again and marked", func() bool { return f.synced(inFlight) })
		paused.signal(t, syscall.SIGCONT)
		waitFor(t, "the resumed relay to find its lease lost", func() bool {
			return strings.Contains(paused.stderrText(), "lease lost before mark")
		})
		f.waitFair("paused", "other") // it joins again
		time.Sleep(500 * time.Millisecond)
		saved := stopWriter()
		f.waitDrained()
		paused.stop(t)
		other.stop(t)

		// The batch of the pause is recorded once the relay resumes (its
		// late mark changing nothing), so it is not among the unfinished.
		mayRepeat := paused.unfinished()
		maps.Copy(mayRepeat, unrecorded)
		for _, id := range inFlight {
			mayRepeat[id] = true
		}
		repeated := f.verify(mayRepeat)
		for _, id := range inFlight {
			if repeated[id] < 2 {
				t.Errorf("event %s of the paused relay's batch arrived %d times: the new owner did not publish it again", id, repeated[id])
			}
		}
		t.Logf("%d events; %d partitions moved %v after the pause; %d arrived twice; %v in all",
			saved, len(gone), moved.Round(time.Millisecond), len(repeated), time.Since(start).Round(time.Millisecond))
	})
}

// pauseOutsideWriteLock stops r (SIGSTOP) just after it published a
// batch and returns that batch's key. On SQLite, whose one write lock a
// stopped process keeps (there is no server to end its transaction), it
// resumes r and tries again whenever the pause caught r holding that lock:
// no relay, and no service, can write the file until r goes on or dies.
// sqlstore's documentation says so; this test checks what a pause outside
// that lock does.
func (f *partFixture) pauseOutsideWriteLock(r *relayProc) string {
	t := f.t
	t.Helper()
	for try := 1; ; try++ {
		key := r.nextPublished(t)
		r.signal(t, syscall.SIGSTOP)
		if f.dbName != "sqlite" || !f.sqliteWriteLocked() {
			return key
		}
		if try == 20 {
			t.Fatalf("relay %s held SQLite's write lock at each of %d pauses", r.name, try)
		}
		t.Logf("pause %d caught %s holding SQLite's write lock; resuming it and pausing again", try, r.name)
		r.signal(t, syscall.SIGCONT)
	}
}

// sqliteWriteLocked reports whether another connection holds the SQLite
// file's write lock for longer than half a second.
func (f *partFixture) sqliteWriteLocked() bool {
	t := f.t
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := f.db.Conn(ctx)
	mustNoErr(t, err, "connect")
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "PRAGMA busy_timeout = 500")
	mustNoErr(t, err, "busy_timeout")
	defer conn.ExecContext(context.Background(), "PRAGMA busy_timeout = 5000") //nolint:errcheck // best effort; the connection is pooled
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return true
	}
	_, err = conn.ExecContext(ctx, "ROLLBACK")
	mustNoErr(t, err, "rollback")
	return false
}

// Relays join and leave under load: one, then three, then one stopped
// gracefully (it gives its partitions back at once), then one killed.
// After each change the partitions are shared fairly (at most the
// partition count over the live relays, rounded up, each), and all the
// while no saved event waits longer than a partition lease and a margin:
// no partition stalls, not even the killed relay's.
func TestPartitionsRebalanceUnderLoad(t *testing.T) {
	forEachPartitionDatabase(t, true, func(t *testing.T, f *partFixture) {
		start := time.Now()
		r1 := f.startRelay("r1", 0)
		f.waitFair("r1")
		stopWriter := f.writer(300)
		stopWatch, maxWait := f.watchOldestPending()

		r2, r3 := f.startRelay("r2", 0), f.startRelay("r3", 0)
		joined := f.waitFair("r1", "r2", "r3")

		r2.stop(t)
		var relays int
		mustNoErr(t, f.db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+f.cfg.Table+"_relays WHERE owner = 'r2'").Scan(&relays), "read relays")
		if relays != 0 {
			t.Error("the stopped relay is still in the relays table: Leave did not run")
		}
		if left := ownedBy(f.partitions(), "r2"); len(left) > 0 {
			t.Errorf("the stopped relay still owns partitions %v: Leave gave them back only in part", left)
		}
		afterLeave := f.waitFair("r1", "r3")
		if afterLeave > partTTL {
			t.Errorf("the partitions given back took %v to be taken, more than a lease", afterLeave)
		}
		time.Sleep(300 * time.Millisecond)

		r3.kill(t)
		mayRepeat := f.unrecorded(r3)
		afterKill := f.waitFair("r1")
		time.Sleep(300 * time.Millisecond)
		saved := stopWriter()
		f.waitDrained()
		worst := stopWatch()
		r1.stop(t)

		maps.Copy(mayRepeat, r3.unfinished())
		f.verify(mayRepeat)
		bound := partTTL + 750*time.Millisecond
		if f.cfg.Marks {
			// The table records a delivery by a mark at the next
			// heartbeat, and the killed relay's deliveries since its
			// last heartbeat are made again by the relay that takes
			// its partitions: two heartbeats more.
			bound += 2 * partBeat
		}
		if worst > bound {
			t.Errorf("an event waited %v to be published, more than a partition lease and a margin (%v)", worst, bound)
		}
		t.Logf("%d events; fair after join in %v, after leave in %v, after kill in %v; longest wait %v (max sampled %v); %v in all",
			saved, joined.Round(time.Millisecond), afterLeave.Round(time.Millisecond), afterKill.Round(time.Millisecond),
			worst.Round(time.Millisecond), maxWait().Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})
}

// watchOldestPending samples, every 20 ms, how long the oldest pending
// event (the first by save order: one writer) has waited since its save
// committed; stop ends the sampling and returns the longest wait seen.
func (f *partFixture) watchOldestPending() (stop func() time.Duration, current func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var worst time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			var id string
			err := f.db.QueryRowContext(ctx, "SELECT id FROM "+f.cfg.Table+" e WHERE NOT "+f.delivered("e")+" ORDER BY seq LIMIT 1").Scan(&id)
			if err == nil {
				f.mu.Lock()
				at, ok := f.saved[id]
				f.mu.Unlock()
				if ok {
					mu.Lock()
					worst = max(worst, time.Since(at))
					mu.Unlock()
				}
			} else if !errors.Is(err, context.Canceled) && ctx.Err() == nil && !strings.Contains(err.Error(), "no rows") {
				f.t.Errorf("oldest pending: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	get := func() time.Duration { mu.Lock(); defer mu.Unlock(); return worst }
	return func() time.Duration { cancel(); wg.Wait(); return get() }, get
}
