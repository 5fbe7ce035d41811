package bunexample_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"go.uber.org/goleak"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/bunexample"
	"github.com/eventsync/outbox/examples/orm/internal/ormtest"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
)

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	db  *bun.DB
	env *ormtest.Env
	inv *bunexample.Inventory
}

// setup opens bun on a schema of the test's own with one stock row, sku-1
// at 10.
func setup(t *testing.T) bundle {
	t.Helper()
	dsn, schema := ormtest.Postgres(t)
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := bun.NewDB(sqlDB, pgdialect.New())
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	if _, err := db.NewCreateTable().Model((*bunexample.Stock)(nil)).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.NewInsert().Model(&bunexample.Stock{SKU: "sku-1", Qty: 10}).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	env := ormtest.NewEnv(t, sqlDB, schema)
	return bundle{db: db, env: env, inv: &bunexample.Inventory{DB: db, Outbox: env.Outbox}}
}

func (b bundle) qty(t testing.TB, sku string) int {
	t.Helper()
	var s bunexample.Stock
	if err := b.db.NewSelect().Model(&s).Where("sku = ?", sku).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s.Qty
}

// shared is the example under the checks every ORM example runs.
func (b bundle) shared() ormtest.Case[int] {
	return ormtest.Case[int]{Env: b.env, SetQty: b.inv.SetQty, Qty: b.qty}
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
	err := b.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if ev, err = b.inv.SetQtyTx(ctx, tx, "sku-1", 3); err != nil {
			return err
		}
		return errAbort // a later step of the business operation fails
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("RunInTx: %v, want errAbort", err)
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

// TestBunTxItselfCannotSave checks the package doc's reason for tx.Tx:
// Save through the bun.Tx itself fails, because bun drops the arguments of
// a query it formats.
func TestBunTxItselfCannotSave(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	err = b.env.Outbox.Save(ctx, tx, stock.Updated("sku-1", 1))
	if err == nil {
		t.Fatal("Save through bun.Tx succeeded; if bun now passes arguments on, the package doc is out of date")
	}
	t.Logf("Save through bun.Tx: %v", err)
}
