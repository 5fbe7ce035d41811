package outboxpgx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// envPostgres points the tests at a Postgres server; unset, they skip.
const envPostgres = "OUTBOX_TEST_POSTGRES" // postgres://user@127.0.0.1:5432/db?sslmode=disable

// newPool connects a pool of at most maxConns connections in the given
// exec mode to the test database, closed at cleanup, or skips the test
// when the variable is unset. A configured but unreachable server fails.
func newPool(t *testing.T, mode pgx.QueryExecMode, maxConns int32, change ...func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		t.Skipf("Postgres tests skipped: set %s, e.g. %s='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'", envPostgres, envPostgres)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", envPostgres, err)
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.DefaultQueryExecMode = mode
	for _, f := range change {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("connect to the Postgres test database: %v", err)
	}
	return pool
}

// newStore returns a Store on pool over a new, migrated table of its own,
// dropped and closed at cleanup.
func newStore(t *testing.T, pool *pgxpool.Pool) *Store {
	t.Helper()
	s, err := New(pool, sqlstore.WithTable(randomName("outboxpgx_test_")))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", s.Table(), err)
		}
	})
	return s
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// pgxTx is a pgx.Tx as the conformance suite's outboxtest.Tx: Insert
// writes through Exec(tx), as a service's Save does.
type pgxTx struct {
	outbox.Executor
	tx pgx.Tx
}

func beginTx(ctx context.Context, pool *pgxpool.Pool) (*pgxTx, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgxTx{Executor: Exec(tx), tx: tx}, nil
}

func (t *pgxTx) Commit() error   { return t.tx.Commit(context.Background()) }
func (t *pgxTx) Rollback() error { return t.tx.Rollback(context.Background()) }

// events returns n valid events of aggregate agg on topic.
func events(n int, agg string) []*outbox.Event {
	out := make([]*outbox.Event, n)
	for i := range out {
		out[i] = &outbox.Event{Topic: "stock", Type: "stock.updated", AggregateID: agg, Payload: []byte(`{"qty":1}`)}
	}
	return out
}
