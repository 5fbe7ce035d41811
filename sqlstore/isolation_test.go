package sqlstore

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// pauseKey marks the context of a Claim that must stop right after the
// statement that sets the claim transaction's settings.
type pauseKey struct{}

type pause struct {
	reached chan struct{} // closed when the settings statement has run
	resume  chan struct{} // closed by the test to let the claim go on
}

type pausedQuery struct{}

// pauseTracer stops a claim whose context carries a pause after its
// settings statement (claimSettings) has run, before the claim statement.
type pauseTracer struct{}

func (pauseTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if _, ok := ctx.Value(pauseKey{}).(*pause); ok && strings.Contains(data.SQL, "set_config") {
		return context.WithValue(ctx, pausedQuery{}, true)
	}
	return ctx
}

func (pauseTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	p, ok := ctx.Value(pauseKey{}).(*pause)
	if !ok || ctx.Value(pausedQuery{}) == nil {
		return
	}
	close(p.reached)
	<-p.resume
}

// A Postgres claim must not depend on the database's or role's
// default_transaction_isolation: the claim relies on READ COMMITTED (a
// fresh snapshot for the claim statement, and FOR UPDATE SKIP LOCKED
// following a row that another relay leased and committed instead of
// failing). Before the one-statement claim, the ordered claim pinned READ
// COMMITTED, and claimTx must too: under default_transaction_isolation =
// 'repeatable read' the snapshot would be taken by the settings statement,
// and a concurrent relay's committed lease in between would make the claim
// fail with "could not serialize access due to concurrent update" instead
// of claiming nothing.
func TestPostgresClaimPinsReadCommitted(t *testing.T) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		t.Skipf("Postgres tests skipped: set %s", envPostgres)
	}
	for _, tc := range []struct {
		name string
		req  storage.ClaimRequest
	}{
		{"ordered", storage.ClaimRequest{Limit: 10, Lease: time.Minute}},
		{"unordered", storage.ClaimRequest{Limit: 10, Lease: time.Minute, Unordered: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := isolationBundle(t, dsn, "repeatable read", pauseTracer{}, 0)
			s := b.store
			events := b.run("A", 2)
			b.save(t, events...)

			// Relay B starts its claim and stops after the settings
			// statement; relay A claims everything and commits meanwhile.
			p := &pause{reached: make(chan struct{}), resume: make(chan struct{})}
			var once sync.Once
			resume := func() { once.Do(func() { close(p.resume) }) }
			t.Cleanup(resume) // never leave relay B stopped holding its locks
			type result struct {
				c   *outbox.Claim
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := s.Claim(context.WithValue(t.Context(), pauseKey{}, p), tc.req)
				done <- result{c, err}
			}()
			select {
			case <-p.reached:
			case r := <-done:
				t.Fatalf("relay B's claim ended before its settings statement ran: %+v, %v", r.c, r.err)
			case <-time.After(10 * time.Second):
				t.Fatal("relay B's claim never ran its settings statement")
			}
			a := b.claimReq(t, tc.req)
			resume()
			equalIDs(t, "relay A", ids(a.Events), ids(events))
			r := <-done
			if r.err != nil {
				t.Fatalf("relay B's claim failed after relay A leased the events: %v", r.err)
			}
			if len(r.c.Events) != 0 {
				t.Fatalf("relay B also claimed %v, which relay A holds", ids(r.c.Events))
			}
		})
	}
}

// A Postgres claim turns synchronous_commit, jit and bitmap scans off (and
// a claim by IDs forces a generic plan) for its own transaction only: the pooled connection it used must come back with the
// server's settings, after a claim that succeeded and after one whose
// statement failed (the deferred rollback ends the transaction).
func TestPostgresClaimSettingsStayInTheClaim(t *testing.T) {
	b := setup(t, Postgres, WithRowLeases())
	b.db.SetMaxOpenConns(1) // every statement below uses the claim's connection
	ctx := t.Context()
	show := func(name string) string {
		t.Helper()
		var v string
		if err := b.db.QueryRowContext(ctx, "SHOW "+name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	settings := []string{"synchronous_commit", "jit", "enable_bitmapscan", "plan_cache_mode"}
	want := map[string]string{}
	for _, name := range settings {
		want[name] = show(name)
	}
	if want["synchronous_commit"] == "off" || want["enable_bitmapscan"] == "off" || want["plan_cache_mode"] == "force_generic_plan" {
		t.Fatalf("the server already runs with %v; the test could not tell a leak", want)
	}
	check := func(after string) {
		t.Helper()
		for _, name := range settings {
			if got := show(name); got != want[name] {
				t.Errorf("after %s: %s = %s on the pooled connection, want %s", after, name, got, want[name])
			}
		}
	}
	events := b.newEvents(3)
	b.save(t, events...)
	for _, unordered := range []bool{false, true} {
		if c, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute, Unordered: unordered}); err != nil || len(c.Events) != 1 {
			t.Fatalf("claim: %v, %v", c, err)
		}
		check("a claim")
	}
	if c, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{events[2].ID}}); err != nil || len(c.Events) != 1 {
		t.Fatalf("claim by ID: %v, %v", c, err)
	}
	check("a claim by IDs")
	// A claim whose statement fails: the column it leases is gone.
	if _, err := b.db.ExecContext(ctx, "ALTER TABLE "+b.store.t.Quoted+" RENAME COLUMN claim_token TO claim_token_gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute}); err == nil {
		t.Fatal("a claim without its claim_token column succeeded")
	}
	check("a failed claim")
	if _, err := b.db.ExecContext(ctx, "ALTER TABLE "+b.store.t.Quoted+" RENAME COLUMN claim_token_gone TO claim_token"); err != nil {
		t.Fatal(err)
	}
}

// A claim of one event by ID runs as one statement outside a transaction
// (oneIDClaim) only at READ COMMITTED. With a session default of
// repeatable read it claims nothing itself and the claim transaction,
// which pins READ COMMITTED, decides; either way the claim keeps order
// (an event behind an undelivered one of its aggregate is not claimed)
// and leaves the connection's synchronous_commit as it was.
func TestPostgresOneIDClaim(t *testing.T) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		t.Skipf("Postgres tests skipped: set %s", envPostgres)
	}
	for _, isolation := range []string{"read committed", "repeatable read"} {
		t.Run(isolation, func(t *testing.T) {
			var seen statements
			b := isolationBundle(t, dsn, isolation, &seen, 1)
			db := b.db
			events := b.run("A", 2)
			b.save(t, events...)
			var syncCommit string
			if err := db.QueryRowContext(t.Context(), "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
				t.Fatal(err)
			}

			seen.reset()
			if c := b.claimReq(t, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{events[1].ID}}); len(c.Events) != 0 {
				t.Fatalf("claimed %v behind the undelivered %s", ids(c.Events), events[0].ID)
			}
			seen.reset()
			c := b.claimReq(t, storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{events[0].ID}})
			equalIDs(t, "claimed", ids(c.Events), []string{events[0].ID})
			tx := seen.began()
			if isolation == "read committed" && tx {
				t.Error("the claim of one event opened a transaction; want the one statement alone")
			}
			if isolation == "repeatable read" && !tx {
				t.Error("under repeatable read the claim did not hand over to the claim transaction")
			}
			var after string
			if err := db.QueryRowContext(t.Context(), "SHOW synchronous_commit").Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != syncCommit {
				t.Errorf("synchronous_commit = %s on the connection after the claim, want %s", after, syncCommit)
			}
		})
	}
}

// statements records whether a transaction began since its last reset.
type statements struct {
	mu    sync.Mutex
	begin bool
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(data.SQL)), "begin") {
		s.mu.Lock()
		s.begin = true
		s.mu.Unlock()
	}
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) reset() { s.mu.Lock(); s.begin = false; s.mu.Unlock() }

func (s *statements) began() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.begin }

// isolationBundle opens a pool on dsn whose sessions default to
// isolation, traced by tracer (with at most maxConns connections if not
// 0), and a migrated store of its own on it with a test clock.
func isolationBundle(t *testing.T, dsn, isolation string, tracer pgx.QueryTracer, maxConns int) *bundle {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["default_transaction_isolation"] = isolation
	cfg.Tracer = tracer
	db := sqlx.NewDb(stdlib.OpenDB(*cfg), "pgx")
	t.Cleanup(func() { _ = db.Close() })
	if maxConns > 0 {
		db.SetMaxOpenConns(maxConns)
	}
	// These tests are of the row-lease claim's transaction.
	s := newStore(t, db, randomName("outbox_iso_"), WithRowLeases())
	clock := newTestClock()
	useClock(s, clock)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &bundle{store: s, db: db, clock: clock}
}
