package outboxpgx

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
	"github.com/eventsync/outbox/sqlstore"
)

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listeners returns the backends of application app LISTENing on s's
// channel.
func listeners(t *testing.T, pool *pgxpool.Pool, s *Store, app string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2",
		app, "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize())
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return pids
}

func withApp(app string) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["application_name"] = app }
}

// A service's pgx transaction carries its business row and its event:
// rolled back, neither exists; committed, both do, and a relay that only
// a Postgres notification can wake (its interval is an hour) publishes the
// event. Save on the ended transaction then fails as on database/sql.
func TestSaveJoinsPgxTx(t *testing.T) {
	t.Parallel()
	app := randomName("outboxpgx_")
	pool := newPool(t, pgx.QueryExecModeCacheStatement, 4, withApp(app))
	s := newStore(t, pool)
	ctx := t.Context()
	stock := pgx.Identifier{s.Table() + "_stock"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+stock+" (sku TEXT PRIMARY KEY, qty INT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE "+stock) })

	pub := outboxtest.NewPublisher()
	ob, err := outbox.New(s, pub, outbox.WithInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = ob.Run(rctx) })
	defer wg.Wait()
	defer stop()
	waitFor(t, 5*time.Second, "the relay to LISTEN", func() bool { return len(listeners(t, pool, s, app)) == 1 })

	save := func(sku string, commit bool) *outbox.Event {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, "INSERT INTO "+stock+" (sku, qty) VALUES ($1, 7)", sku); err != nil {
			t.Fatal(err)
		}
		e := &outbox.Event{Topic: "stock", Type: "stock.updated", AggregateID: sku, Payload: []byte(`{"qty":7}`),
			Headers: map[string]string{"source": "pgx"}}
		if err := ob.Save(ctx, Exec(tx), e); err != nil {
			t.Fatalf("Save: %v", err)
		}
		if commit {
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
			err := ob.Save(ctx, Exec(tx), events(1, sku)...)
			if !errors.Is(err, sql.ErrTxDone) || !errors.Is(err, pgx.ErrTxClosed) {
				t.Errorf("Save on a committed pgx.Tx: %v, want an error wrapping sql.ErrTxDone and pgx.ErrTxClosed", err)
			}
		}
		return e
	}
	count := func(sku string) int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+stock+" WHERE sku = $1", sku).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	rolled := save("sku-1", false)
	if _, err := s.Get(ctx, rolled.ID); !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("Get of the rolled-back event: %v, want ErrNotFound", err)
	}
	if count("sku-1") != 0 {
		t.Fatal("the rolled-back business row exists")
	}

	committed := save("sku-2", true)
	if count("sku-2") != 1 {
		t.Fatal("the committed business row is missing")
	}
	waitFor(t, 5*time.Second, "the relay to publish the committed event", func() bool { return len(pub.Published()) > 0 })
	got := pub.Published()
	if len(got) != 1 || got[0].ID != committed.ID || got[0].Headers["source"] != "pgx" {
		t.Fatalf("published %v, want only the committed event %s with its headers", got, committed.ID)
	}
	waitFor(t, 5*time.Second, "the event to be marked synced", func() bool {
		e, err := s.Get(ctx, committed.ID)
		return err == nil && e.Delivery.Status() == outbox.StatusSynced
	})
}

// Listen keeps its connection out of the pool: the pool, of one
// connection, still serves queries while it listens, and once Listen ends
// no connection of the pool is left LISTENing.
func TestListenReleasesItsConnection(t *testing.T) {
	t.Parallel()
	app := randomName("outboxpgx_")
	pool := newPool(t, pgx.QueryExecModeCacheStatement, 1, withApp(app))
	s := newStore(t, pool)
	ctx, cancel := context.WithCancel(t.Context())
	woken := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func() { woken <- struct{}{} }) }()
	waitFor(t, 5*time.Second, "Listen to LISTEN", func() bool { return len(listeners(t, pool, s, app)) == 1 })

	ob, err := outbox.New(s, outbox.Noop{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(ctx, Exec(pool), events(2, "a")...); err != nil { // autocommit: one statement
		t.Fatalf("Save through the pool: %v", err)
	}
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not wake on a committed insert")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Listen returned %v after its context ended, want nil", err)
	}
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_listening_channels()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the pool's connection listens on %d channels after Listen ended", n)
	}
	waitFor(t, 5*time.Second, "the listening backend to end", func() bool { return len(listeners(t, pool, s, app)) == 0 })
}

// A listener whose backend is killed reconnects, LISTENs on a new
// backend, and wakes the relay once for what it may have missed.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	app := randomName("outboxpgx_")
	pool := newPool(t, pgx.QueryExecModeCacheStatement, 2, withApp(app))
	s := newStore(t, pool)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	woken := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func() { woken <- struct{}{} }) }()
	defer func() { cancel(); <-done }()
	var first []int
	waitFor(t, 5*time.Second, "Listen to LISTEN", func() bool { first = listeners(t, pool, s, app); return len(first) == 1 })
	if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", first[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not wake after reconnecting")
	}
	waitFor(t, 5*time.Second, "Listen to LISTEN on a new backend", func() bool {
		pids := listeners(t, pool, s, app)
		return len(pids) == 1 && pids[0] != first[0]
	})
}

func TestNilArguments(t *testing.T) {
	t.Parallel()
	if _, err := New(nil); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("New(nil): %v, want ErrInvalidConfig", err)
	}
	var pool *pgxpool.Pool
	var tx pgx.Tx
	for _, e := range []outbox.Executor{Exec(nil), Exec(pool), Exec(tx)} {
		if e != nil {
			t.Errorf("Exec of a nil value is %#v, want nil", e)
		}
	}
}
