package sqlstore

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
)

// A store on a pgxpool (through stdlib.OpenDBFromPool, as services that
// share their pgx pool do) leaves no connection LISTENing in the pool
// once Listen ends: the pool's one connection serves queries with no
// channel left over.
func TestListenOnAPgxPoolLeavesNoListeningConnection(t *testing.T) {
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		t.Skipf("Postgres tests skipped: set %s", envPostgres)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := sqlx.NewDb(stdlib.OpenDBFromPool(pool), "pgx")
	t.Cleanup(func() { db.Close() })
	s := newStore(t, db, randomName("outbox_test_"))
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func() {}) }()
	waitUntil(t, "the listener to take the pool's connection", func() bool { return pool.Stat().AcquiredConns() == 1 })
	time.Sleep(50 * time.Millisecond) // let it reach LISTEN
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Listen = %v after its context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return after its context ended")
	}
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM pg_listening_channels()").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the pool's connection listens on %d channels after Listen ended", n)
	}
}
