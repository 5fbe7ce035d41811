package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// Database failures: the SQL server goes away under a running relay and
// under Publish, and comes back. To a client a restart is every
// connection closed by the server and new ones refused until it is up
// again, which is what the proxy does between Cut and Restore; the shared
// servers themselves are never touched. A private Postgres that really
// restarts runs the same scenarios (dbfailure_pg_test.go).

// outageDB is a database whose server the test can take away: the
// application's pool (db, and store over it) goes through the outage; the
// direct pool does not, where it can, and reads what the table holds.
type outageDB struct {
	db     *sqlx.DB
	store  *sqlstore.Store
	direct *sqlx.DB
	check  *sqlstore.Store // over direct
	down   func(t *testing.T)
	up     func(t *testing.T)
}

// proxiedDatabase opens the real server named (postgres or mysql) through
// a proxy, with a table of its own. It skips when the server's env var is
// unset.
func proxiedDatabase(t *testing.T, name string) *outageDB {
	t.Helper()
	dsn := os.Getenv(envOf[name])
	if dsn == "" {
		t.Skipf("set %s to run against a real server", envOf[name])
	}
	var target string
	var through func(addr string) string
	switch name {
	case "postgres":
		u, err := url.Parse(dsn)
		mustNoErr(t, err, "%s", envOf[name])
		target = u.Host
		if u.Port() == "" {
			target += ":5432"
		}
		through = func(addr string) string { v := *u; v.Host = addr; return v.String() }
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		mustNoErr(t, err, "%s", envOf[name])
		target = cfg.Addr
		through = func(addr string) string { c := cfg.Clone(); c.Addr = addr; return c.FormatDSN() }
	}
	p, err := testproxy.Start(target)
	mustNoErr(t, err, "proxy")
	t.Cleanup(func() { p.Close() })
	o := openOutageDB(t, driverOf(name), dsn, through(p.Addr()))
	o.down = func(*testing.T) { p.Cut() }
	o.up = func(*testing.T) { p.Restore() }
	return o
}

func driverOf(name string) string {
	for _, d := range databases {
		if d.name == name {
			return d.driver
		}
	}
	panic("no database " + name)
}

// openOutageDB opens the two pools, migrates a fresh table through the
// direct one and drops it at the end.
func openOutageDB(t *testing.T, driver, directDSN, appDSN string) *outageDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(dsn string) *sqlx.DB {
		db, err := sqlx.Open(driver, dsn)
		mustNoErr(t, err, "open")
		t.Cleanup(func() { db.Close() })
		mustNoErr(t, db.PingContext(ctx), "the server cannot be reached")
		return db
	}
	o := &outageDB{direct: open(directDSN), db: open(appDSN)}
	table := "e2e_" + randomHex(6)
	var err error
	o.check, err = sqlstore.New(o.direct, sqlstore.WithTable(table))
	mustNoErr(t, err, "sqlstore.New")
	o.store, err = sqlstore.New(o.db, sqlstore.WithTable(table))
	mustNoErr(t, err, "sqlstore.New")
	mustNoErr(t, o.check.Migrate(ctx), "migrate")
	t.Cleanup(func() {
		if err := o.check.Drop(context.Background()); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	return o
}

// watchStore notes what the database did for the relay: when its own
// claims (not Publish's claims by ID) succeeded, and which events' marks
// failed (those alone may reach the broker twice, guarantee 3).
type watchStore struct {
	*sqlstore.Store // keeps Listen visible to the relay on Postgres
	mu              sync.Mutex
	relayClaims     []time.Time
	markFailed      map[string]bool
}

func (s *watchStore) Claim(ctx context.Context, req storage.ClaimRequest) (*outbox.Claim, error) {
	c, err := s.Store.Claim(ctx, req)
	if err == nil && len(req.IDs) == 0 {
		s.mu.Lock()
		s.relayClaims = append(s.relayClaims, time.Now())
		s.mu.Unlock()
	}
	return c, err
}

func (s *watchStore) MarkSynced(ctx context.Context, token string, ids []string) (int, error) {
	n, err := s.Store.MarkSynced(ctx, token, ids)
	if err != nil {
		s.mu.Lock()
		if s.markFailed == nil {
			s.markFailed = map[string]bool{}
		}
		for _, id := range ids {
			s.markFailed[id] = true
		}
		s.mu.Unlock()
	}
	return n, err
}

// firstRelayClaimAfter is when the relay's first successful claim after
// t0 was, or zero.
func (s *watchStore) firstRelayClaimAfter(t0 time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.relayClaims {
		if at.After(t0) {
			return at
		}
	}
	return time.Time{}
}

// arrivals is a broker that records every event it acknowledges, in order.
// Payloads are the event's position in its aggregate.
type arrivals struct {
	mu   sync.Mutex
	list []arrival
	seen map[string]int
}

type arrival struct {
	id, agg string
	seq     int
	at      time.Time
}

func (a *arrivals) Publish(_ context.Context, events []*outbox.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string]int{}
	}
	for _, e := range events {
		n, _ := strconv.Atoi(string(e.Payload))
		a.list = append(a.list, arrival{e.ID, e.AggregateID, n, time.Now()})
		a.seen[e.ID]++
	}
	return nil
}

func (a *arrivals) has(ids ...string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		if a.seen[id] == 0 {
			return false
		}
	}
	return true
}

// lastFirstArrival is when the last of ids first arrived, or zero if one
// has not.
func (a *arrivals) lastFirstArrival(ids map[string]bool) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	first := map[string]time.Time{}
	for _, r := range a.list {
		if _, ok := first[r.id]; !ok {
			first[r.id] = r.at
		}
	}
	var last time.Time
	for id := range ids {
		at, ok := first[id]
		if !ok {
			return time.Time{}
		}
		if at.After(last) {
			last = at
		}
	}
	return last
}

// check asserts that exactly the events in want arrived, each
// aggregate's in save order, and none twice unless its mark failed.
func (a *arrivals) check(t *testing.T, want map[string]bool, mayRepeat map[string]bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	last := map[string]int{}
	times := map[string]int{}
	for _, r := range a.list {
		if !want[r.id] {
			t.Errorf("event %s (%s #%d) reached the broker but is not in the table", r.id, r.agg, r.seq)
		}
		if times[r.id]++; times[r.id] > 1 {
			if !mayRepeat[r.id] {
				t.Errorf("event %s (%s #%d) reached the broker %d times, and its mark never failed", r.id, r.agg, r.seq, times[r.id])
			}
			continue
		}
		if prev, ok := last[r.agg]; ok && r.seq <= prev {
			t.Errorf("aggregate %s: #%d arrived after #%d", r.agg, r.seq, prev)
		}
		last[r.agg] = r.seq
	}
	for id := range want {
		if a.seen[id] == 0 {
			t.Errorf("event %s is in the table but never reached the broker", id)
		}
	}
}

// logCapture keeps every record the outbox logs (and shows them with
// t.Log, as testLogger does).
type logCapture struct {
	mu    sync.Mutex
	lines []logLine
	fwd   slog.Handler
}

type logLine struct {
	at    time.Time
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogCapture(t *testing.T) *logCapture {
	return &logCapture{fwd: testLogger(t).Handler()}
}

func (c *logCapture) logger() *slog.Logger { return slog.New(c) }

func (c *logCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (c *logCapture) Handle(ctx context.Context, r slog.Record) error {
	line := logLine{at: time.Now(), level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { line.attrs[a.Key] = a.Value.String(); return true })
	c.mu.Lock()
	c.lines = append(c.lines, line)
	c.mu.Unlock()
	return c.fwd.Handle(ctx, r)
}

func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCapture) WithGroup(string) slog.Handler      { return c }

// between returns the records logged from t0 to t1 at level or above.
func (c *logCapture) between(t0, t1 time.Time, level slog.Level) []logLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logLine
	for _, l := range c.lines {
		if !l.at.Before(t0) && !l.at.After(t1) && l.level >= level {
			out = append(out, l)
		}
	}
	return out
}

// Bounds of the scenarios. The relay backs off after store errors from
// failBackoffMin doubling to failBackoffMax, so it is back within about
// failBackoffMax of the restore; the rest is margin for a loaded machine.
const (
	failBackoffMin = 100 * time.Millisecond
	failBackoffMax = time.Second
	maxResume      = 3 * time.Second // restore → the relay's first good claim
	maxDrain       = 5 * time.Second // restore → every committed event at the broker
	// maxWarnPerSecond bounds the Warn lines per second of outage, plus
	// maxWarnExtra for the edges (a save committed just before the cut
	// whose publication failed, a mark lost).
	maxWarnPerSecond = 5
	maxWarnExtra     = 10
)

func outageOptions(extra ...outbox.Option) []outbox.Option {
	return append([]outbox.Option{
		outbox.WithTimeout(time.Second),
		outbox.WithLease(2 * time.Second),
		outbox.WithBackoff(failBackoffMin, failBackoffMax),
		outbox.WithBatchSize(100),
		outbox.WithMaxAttempts(1000),
	}, extra...)
}

// runRelay runs ob's relay until the test ends and checks that Run
// returns nil.
func runRelay(t *testing.T, ob *outbox.Outbox) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ob.Run(ctx) }()
	t.Cleanup(func() { stop(); mustNoErr(t, <-done, "Run") })
}

// relayThroughOutage: a steady stream of saves (Transact: commit, then
// Publish at once) before, during and after an outage of the database.
// Saves during the outage fail; the relay's passes fail and back off,
// logged at Warn with the error, a handful a second; after the restore
// the relay resumes by itself, says so, and every event the table holds
// (every committed one, and any whose commit was in doubt) reaches the
// broker once, in order per aggregate.
func relayThroughOutage(t *testing.T, o *outageDB, outage time.Duration) {
	ctx := context.Background()
	ws := &watchStore{Store: o.store}
	broker := &arrivals{}
	logs := newLogCapture(t)
	ob, err := outbox.New(ws, broker, outageOptions(outbox.WithInterval(500*time.Millisecond), outbox.WithLogger(logs.logger()))...)
	mustNoErr(t, err, "outbox.New")
	runRelay(t, ob)

	type attempt struct {
		id  string
		at  time.Time
		err error
	}
	var attempts []attempt
	stopSaving := make(chan struct{})
	saverDone := make(chan struct{})
	go func() {
		defer close(saverDone)
		aggs := []string{"a", "b", "c", "d"}
		seq := map[string]int{}
		for i := 0; ; i++ {
			select {
			case <-stopSaving:
				return
			case <-time.After(5 * time.Millisecond):
			}
			agg := aggs[i%len(aggs)]
			e := &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: agg, Payload: []byte(strconv.Itoa(seq[agg]))}
			seq[agg]++
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := ob.Transact(sctx, o.db, func(tx *outbox.Tx) error { return tx.Save(sctx, e) })
			cancel()
			attempts = append(attempts, attempt{e.ID, time.Now(), err})
		}
	}()

	time.Sleep(500 * time.Millisecond)
	cut := time.Now()
	o.down(t)
	time.Sleep(outage)
	o.up(t)
	restored := time.Now()
	time.Sleep(time.Second)
	close(stopSaving)
	<-saverDone

	// Every event the table holds reaches the broker and is marked.
	var inTable map[string]bool
	deadline := restored.Add(maxDrain)
	for {
		ids, pending := tableIDs(t, o)
		inTable = ids
		if pending == 0 && broker.has(slices.Collect(maps.Keys(ids))...) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the restore, %d events are still pending", maxDrain, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resumedAt := ws.firstRelayClaimAfter(restored)

	var committed, failedDuring, inDoubt, before, after int
	backlog := map[string]bool{} // in the table, saved before the restore
	for _, a := range attempts {
		if inTable[a.id] && a.at.Before(restored) {
			backlog[a.id] = true
		}
		switch {
		case a.err == nil:
			committed++
			if !inTable[a.id] {
				t.Errorf("event %s was committed at %v but is not in the table", a.id, a.at.Sub(cut))
			}
			if a.at.Before(cut) {
				before++
			} else if a.at.After(restored) {
				after++
			}
		case inTable[a.id]:
			inDoubt++ // the commit reached the server, its answer did not
		default:
			failedDuring++
		}
	}
	drained := max(broker.lastFirstArrival(backlog).Sub(restored), 0)
	ws.mu.Lock()
	mayRepeat := ws.markFailed
	ws.mu.Unlock()
	t.Logf("%d saves: %d committed (%d before the cut, %d after the restore), %d failed, %d in doubt and committed; "+
		"relay's first good claim %v after the restore; the %d events saved before the restore all at the broker %v after it; %d events whose mark failed",
		len(attempts), committed, before, after, failedDuring, inDoubt, resumedAt.Sub(restored).Round(time.Millisecond),
		len(backlog), drained.Round(time.Millisecond), len(mayRepeat))
	if before == 0 || after == 0 || failedDuring == 0 {
		t.Fatalf("the outage was not one: %d saves committed before the cut, %d after the restore, %d failed", before, after, failedDuring)
	}
	if drained > maxDrain {
		t.Errorf("the events saved before the restore were all at the broker %v after it; want under %v", drained, maxDrain)
	}
	if resumedAt.IsZero() || resumedAt.Sub(restored) > maxResume {
		t.Errorf("the relay's first good claim came %v after the restore; want under %v", resumedAt.Sub(restored), maxResume)
	}
	broker.check(t, inTable, mayRepeat)
	checkOutageLogs(t, logs, cut, restored, true)
}

// checkOutageLogs asserts what an operator reads about an outage from cut
// to restored: the failed passes at Warn with the error (if passes is
// set: the relay tried during the outage), never a flood, and the
// recovery at Info after the restore.
func checkOutageLogs(t *testing.T, logs *logCapture, cut, restored time.Time, passes bool) {
	t.Helper()
	warns := logs.between(cut, restored.Add(time.Second), slog.LevelWarn)
	failed := 0
	for _, l := range warns {
		if l.msg == "outbox: relay pass failed" {
			failed++
			if l.attrs["err"] == "" || l.attrs["retry_in"] == "" {
				t.Errorf("a failed pass is logged without its error or retry delay: %q %v", l.msg, l.attrs)
			}
		}
	}
	outage := restored.Sub(cut).Seconds()
	limit := int(outage*maxWarnPerSecond) + maxWarnExtra
	t.Logf("%d lines at Warn or above over %.1fs of outage (%d failed passes)", len(warns), outage, failed)
	if passes && failed == 0 {
		t.Errorf("no failed pass was logged at Warn during the outage")
	}
	if len(warns) > limit {
		t.Errorf("%d lines at Warn or above over %.1fs of outage, want at most %d: the relay does not back off", len(warns), outage, limit)
	}
	// From the cut on: a relay may reconnect to a really restarted server
	// before the command that started it returns (restored).
	// The pass that delivered logs the recovery once it returns, after its
	// marks: wait for the line a little.
	var recovered []logLine
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		recovered = recovered[:0]
		for _, l := range logs.between(cut, time.Now(), slog.LevelInfo) {
			if l.msg == "outbox: store is back; relay resumed" {
				recovered = append(recovered, l)
			}
		}
		if !passes || len(recovered) > 0 || time.Now().After(deadline) {
			break
		}
	}
	// Once, or twice if a connection the outage left in a pool failed
	// one more pass after the restore.
	if passes && (len(recovered) == 0 || len(recovered) > 2) {
		t.Errorf("the recovery was logged %d times after the cut, want once", len(recovered))
	}
}

// tableIDs reads the IDs in the table and how many are pending, through
// the direct pool.
func tableIDs(t *testing.T, o *outageDB) (map[string]bool, int) {
	t.Helper()
	rows, err := o.direct.QueryContext(context.Background(), "SELECT id, CASE WHEN synced_at IS NULL THEN 1 ELSE 0 END FROM "+o.check.Table())
	mustNoErr(t, err, "read the table")
	defer rows.Close()
	ids := map[string]bool{}
	pending := 0
	for rows.Next() {
		var id string
		var p int
		mustNoErr(t, rows.Scan(&id, &p), "scan")
		ids[id] = true
		pending += p
	}
	mustNoErr(t, rows.Err(), "read the table")
	return ids, pending
}

// publishWhileDown: events committed, then the database goes away before
// Publish claims them. Publish fails at once, says the events stay
// pending, and they do; a relay started during the outage (its interval
// an hour) delivers them by itself once the database is back.
func publishWhileDown(t *testing.T, o *outageDB) {
	ctx := context.Background()
	ws := &watchStore{Store: o.store}
	broker := &arrivals{}
	logs := newLogCapture(t)
	ob, err := outbox.New(ws, broker, outageOptions(outbox.WithInterval(time.Hour), outbox.WithLogger(logs.logger()))...)
	mustNoErr(t, err, "outbox.New")

	evs := make([]*outbox.Event, 6)
	for i := range evs {
		evs[i] = &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: fmt.Sprintf("p%d", i%2), Payload: []byte(strconv.Itoa(i / 2))}
	}
	tx, err := o.db.BeginTxx(ctx, nil)
	mustNoErr(t, err, "begin")
	mustNoErr(t, ob.Save(ctx, tx, evs...), "save")
	mustNoErr(t, tx.Commit(), "commit")

	cut := time.Now()
	o.down(t)
	t0 := time.Now()
	res, err := ob.Publish(ctx, evs...)
	took := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "stay pending") {
		t.Fatalf("Publish with the database down: %+v, %v; want an error saying the events stay pending", res, err)
	}
	if res.Synced != 0 || broker.has(evs[0].ID) {
		t.Fatalf("Publish with the database down published %+v", res)
	}
	if took > 2*time.Second {
		t.Errorf("Publish with the database down took %v; want under its timeout (1s) and a margin", took)
	}
	t.Logf("Publish failed after %v: %v", took.Round(time.Millisecond), err)
	// The relay starts only now: running before the cut, a notification of
	// the commit could wake it to deliver the events before Publish tries.
	// Its first pass fails on the database that is down, and it backs off.
	runRelay(t, ob)
	time.Sleep(300 * time.Millisecond)
	o.up(t)
	restored := time.Now()

	waitFor(t, "the relay to deliver the events Publish left", func() bool { return broker.has(idsOf(evs)...) })
	delivered := time.Since(restored)
	waitFor(t, "the events to be marked", func() bool { _, p := tableIDs(t, o); return p == 0 })
	t.Logf("the relay delivered them %v after the restore", delivered.Round(time.Millisecond))
	if delivered > maxDrain {
		t.Errorf("the relay delivered the events %v after the restore; want under %v", delivered, maxDrain)
	}
	ids, _ := tableIDs(t, o)
	ws.mu.Lock()
	mayRepeat := ws.markFailed
	ws.mu.Unlock()
	broker.check(t, ids, mayRepeat)
	checkOutageLogs(t, logs, cut, restored, true)
}

// listenAfterOutage (Postgres): the relay's interval is an hour, so only
// a notification wakes it. After an outage the listener reconnects by
// itself (the relay passes once then, for what it missed), and an event
// committed after that, with no kick in this process, is delivered
// within moments.
func listenAfterOutage(t *testing.T, o *outageDB, outage time.Duration) {
	ctx := context.Background()
	ws := &watchStore{Store: o.store}
	broker := &arrivals{}
	logs := newLogCapture(t)
	ob, err := outbox.New(ws, broker, outageOptions(outbox.WithInterval(time.Hour), outbox.WithLogger(logs.logger()))...)
	mustNoErr(t, err, "outbox.New")
	runRelay(t, ob)
	waitFor(t, "the listener", func() bool { return listening(t, o, time.Time{}) })

	cut := time.Now()
	o.down(t)
	time.Sleep(outage)
	o.up(t)
	restored := time.Now()
	// From the cut on: after a real restart the listener may reconnect, and
	// the relay pass, before the command that started the server returns.
	waitFor(t, "the listener to reconnect", func() bool { return listening(t, o, cut) })
	relistened := max(time.Since(restored), 0)
	waitFor(t, "the relay's catch-up pass", func() bool { return !ws.firstRelayClaimAfter(cut).IsZero() })
	// Let any pass already woken (the listener's catch-up, a retry) end:
	// from here on only a notification can wake the relay.
	time.Sleep(200 * time.Millisecond)

	e := &outbox.Event{Topic: "inventory", Type: "stock.updated", AggregateID: "n", Payload: []byte("0")}
	tx, err := o.direct.BeginTxx(ctx, nil)
	mustNoErr(t, err, "begin")
	mustNoErr(t, ob.Save(ctx, tx, e), "save")
	committed := time.Now()
	mustNoErr(t, tx.Commit(), "commit")
	waitFor(t, "the notified relay to deliver the event", func() bool { return broker.has(e.ID) })
	latency := time.Since(committed)
	t.Logf("listener back %v after the restore; an event committed then reached the broker %v after its commit",
		relistened.Round(time.Millisecond), latency.Round(100*time.Microsecond))
	if latency > time.Second {
		t.Errorf("the event reached the broker %v after its commit; with an hour's interval only a notification can wake the relay that fast, want under 1s", latency)
	}
	if relistened > maxResume {
		t.Errorf("the listener reconnected %v after the restore; want under %v", relistened, maxResume)
	}
	checkOutageLogs(t, logs, cut, restored, false)
}

// listening reports whether a session that connected after since is
// listening on the store's channel. (The listener may take a connection
// the pool already held: since is only meaningful after an outage, which
// left none.)
func listening(t *testing.T, o *outageDB, since time.Time) bool {
	var n int
	err := o.direct.QueryRowContext(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND backend_start > $2",
		`LISTEN "`+o.store.Channel()+`"`, since).Scan(&n)
	return err == nil && n > 0
}

func TestDatabaseOutageUnderRelay(t *testing.T) {
	for _, name := range []string{"postgres", "mysql"} {
		t.Run(name, func(t *testing.T) { relayThroughOutage(t, proxiedDatabase(t, name), 1500*time.Millisecond) })
	}
}

func TestDatabaseOutageUnderPublish(t *testing.T) {
	for _, name := range []string{"postgres", "mysql"} {
		t.Run(name, func(t *testing.T) { publishWhileDown(t, proxiedDatabase(t, name)) })
	}
}

func TestDatabaseOutageListenReconnects(t *testing.T) {
	listenAfterOutage(t, proxiedDatabase(t, "postgres"), time.Second)
}
