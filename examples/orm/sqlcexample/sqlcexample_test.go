package sqlcexample_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/internal/ormtest"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
	"github.com/eventsync/outbox/examples/orm/sqlcexample"
	"github.com/eventsync/outbox/examples/orm/sqlcexample/stockdb"
	"github.com/eventsync/outbox/outboxpgx"
)

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	pool *pgxpool.Pool
	env  *ormtest.Env
	inv  *sqlcexample.Inventory
}

// setup opens a pgx pool on a schema of the test's own, applies sqlc's
// schema.sql and adds one stock row, sku-1 at 10. The outbox's store runs
// on the same pool, through database/sql.
func setup(t *testing.T) bundle {
	t.Helper()
	dsn, schema := ormtest.Postgres(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ddl, err := os.ReadFile("schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}
	if err := stockdb.New(pool).CreateStock(ctx, stockdb.CreateStockParams{Sku: "sku-1", Qty: 10}); err != nil {
		t.Fatal(err)
	}
	sqlDB := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = sqlDB.Close() })
	env := ormtest.NewEnv(t, sqlDB, schema)
	return bundle{pool: pool, env: env, inv: &sqlcexample.Inventory{Pool: pool, Outbox: env.Outbox}}
}

func (b bundle) qty(t testing.TB, sku string) int32 {
	t.Helper()
	s, err := stockdb.New(b.pool).GetStock(context.Background(), sku)
	if err != nil {
		t.Fatal(err)
	}
	return s.Qty
}

// shared is the example under the checks every ORM example runs.
func (b bundle) shared() ormtest.Case[int32] {
	return ormtest.Case[int32]{Env: b.env, SetQty: b.inv.SetQty, Qty: b.qty}
}

// TestSetQtyCommitsAndDelivers checks that SetQty updates the row and that
// its event reaches the stream and is marked synced.
func TestSetQtyCommitsAndDelivers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ormtest.CommitsAndDelivers(t, b.shared())
}

// TestRollbackLeavesNoEvent checks that a rolled-back transaction keeps
// neither the update nor the event SetQtyTx saved in it.
func TestRollbackLeavesNoEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	errAbort := errors.New("abort")
	var ev *outbox.Event
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		if ev, err = b.inv.SetQtyTx(ctx, tx, "sku-1", 3); err != nil {
			return err
		}
		return errAbort // a later step of the business operation fails
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("BeginFunc: %v, want errAbort", err)
	}
	ormtest.RolledBack(t, b.shared(), ev)
}

// TestUnknownSKUSavesNothing checks that SetQty on a missing SKU returns
// stock.ErrUnknownSKU and leaves no event for the relay to deliver.
func TestUnknownSKUSavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ormtest.UnknownSKUSavesNothing(t, b.shared())
}

// TestExecutorWritesEveryField checks that every column Save writes goes
// through pgx's own encoding, not database/sql's: headers, priority,
// payload and times read back as saved.
func TestExecutorWritesEveryField(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 678901000, time.UTC)
	ev := &outbox.Event{
		Topic: stock.Topic, Type: "stock.counted", AggregateID: "sku-1",
		Payload:   []byte{0, 1, 2, 0xff},
		Headers:   map[string]string{"tenant": "acme", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		Priority:  5,
		CreatedAt: created,
	}
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		return b.env.Outbox.Save(ctx, outboxpgx.Exec(tx), ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.env.Store.Get(ctx, ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != ev.Type || string(got.Payload) != string(ev.Payload) || got.Priority != 5 ||
		!got.CreatedAt.Equal(created) || len(got.Headers) != 2 || got.Headers["tenant"] != "acme" ||
		got.Headers["traceparent"] != ev.Headers["traceparent"] {
		t.Fatalf("read back %+v, want %+v", got, ev)
	}
}

// TestExecutorOnAnEndedTransaction checks that Save through outboxpgx.Exec
// on a rolled-back pgx.Tx fails with both sql.ErrTxDone and pgx.ErrTxClosed.
func TestExecutorOnAnEndedTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	exec := outboxpgx.Exec(tx)
	err = b.env.Outbox.Save(ctx, exec, stock.Updated("sku-1", 1))
	if !errors.Is(err, sql.ErrTxDone) || !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("Save on an ended tx: %v, want sql.ErrTxDone and pgx.ErrTxClosed", err)
	}
}

// TestExecutorReportsRowsAffected checks that the result of outboxpgx.Exec
// reports RowsAffected and refuses LastInsertId, which Postgres lacks.
func TestExecutorReportsRowsAffected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		res, err := outboxpgx.Exec(tx).ExecContext(ctx, `UPDATE stocks SET qty = qty + $1`, 1)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			t.Errorf("RowsAffected: %d, %v; want 1", n, err)
		}
		if _, err := res.LastInsertId(); err == nil {
			t.Error("LastInsertId: no error, want one")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
