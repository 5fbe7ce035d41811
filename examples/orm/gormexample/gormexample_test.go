package gormexample_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/gormexample"
	"github.com/eventsync/outbox/examples/orm/internal/ormtest"
)

// TestMain fails the run if a goroutine is left behind, but for the one
// that GORM's prepared-statement cache (PrepareStmt) starts to expire
// entries: GORM never stops it, by design, even when the pool is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"))
}

type bundle struct {
	db  *gorm.DB
	env *ormtest.Env
	inv *gormexample.Inventory
}

// setup opens GORM on a schema of the test's own with one stock row,
// sku-1 at 10.
func setup(t *testing.T, cfg *gorm.Config) bundle {
	t.Helper()
	dsn, schema := ormtest.Postgres(t)
	cfg.Logger = logger.Discard
	db, err := gorm.Open(postgres.Open(dsn), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	if err := db.AutoMigrate(&gormexample.Stock{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Create(&gormexample.Stock{SKU: "sku-1", Qty: 10}).Error; err != nil {
		t.Fatal(err)
	}
	env := ormtest.NewEnv(t, sqlDB, schema)
	return bundle{db: db, env: env, inv: &gormexample.Inventory{DB: db, Outbox: env.Outbox}}
}

func (b bundle) qty(t testing.TB, sku string) int {
	t.Helper()
	var s gormexample.Stock
	if err := b.db.First(&s, "sku = ?", sku).Error; err != nil {
		t.Fatal(err)
	}
	return s.Qty
}

// shared is the example under the checks every ORM example runs.
func (b bundle) shared() ormtest.Case[int] {
	return ormtest.Case[int]{Env: b.env, SetQty: b.inv.SetQty, Qty: b.qty}
}

// TestSetQtyCommitsAndDelivers checks, with and without PrepareStmt, that
// SetQty updates the row and that its event reaches the stream and is
// marked synced.
func TestSetQtyCommitsAndDelivers(t *testing.T) {
	for name, cfg := range map[string]gorm.Config{
		"default":     {},
		"PrepareStmt": {PrepareStmt: true}, // ConnPool is GORM's wrapper of the *sql.Tx
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, &cfg)
			ormtest.CommitsAndDelivers(t, b.shared())
		})
	}
}

// TestRollbackLeavesNoEvent checks that a rolled-back transaction keeps
// neither the update nor the event SetQtyTx saved in it.
func TestRollbackLeavesNoEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, &gorm.Config{})
	ctx := context.Background()
	errAbort := errors.New("abort")
	var ev *outbox.Event
	err := b.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if ev, err = b.inv.SetQtyTx(ctx, tx, "sku-1", 3); err != nil {
			return err
		}
		return errAbort // a later step of the business operation fails
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("Transaction: %v, want errAbort", err)
	}
	ormtest.RolledBack(t, b.shared(), ev)
}

// TestUnknownSKUSavesNothing checks that SetQty on a missing SKU returns
// stock.ErrUnknownSKU and leaves no event for the relay to deliver.
func TestUnknownSKUSavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, &gorm.Config{})
	ormtest.UnknownSKUSavesNothing(t, b.shared())
}

// TestExecutorRefusesADBOutsideATransaction checks that Executor refuses a
// *gorm.DB outside a transaction and returns the transaction of one inside.
func TestExecutorRefusesADBOutsideATransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, &gorm.Config{})
	if _, err := gormexample.Executor(b.db); !errors.Is(err, gormexample.ErrNotInTransaction) {
		t.Fatalf("Executor(db): %v, want ErrNotInTransaction", err)
	}
	tx := b.db.Begin()
	defer tx.Rollback()
	exec, err := gormexample.Executor(tx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := exec.(interface{ Commit() error }); !ok {
		t.Fatalf("Executor(tx) is a %T, not a transaction", exec)
	}
}
