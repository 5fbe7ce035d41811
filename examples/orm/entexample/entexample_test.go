package entexample_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/goleak"

	"github.com/eventsync/outbox/examples/orm/entexample"
	"github.com/eventsync/outbox/examples/orm/entexample/ent"
	entstock "github.com/eventsync/outbox/examples/orm/entexample/ent/stock"
	"github.com/eventsync/outbox/examples/orm/internal/ormtest"
)

// TestMain fails the package's tests if they leave goroutines running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// migrateMu serializes ent's Schema.Create: it writes to the generated
// package-level table definitions (migrate.Tables), so parallel tests
// would race on them.
var migrateMu sync.Mutex

type bundle struct {
	client *ent.Client
	env    *ormtest.Env
	inv    *entexample.Inventory
}

// setup opens ent on a schema of the test's own (created by ent's own
// migration) with one stock row, sku-1 at 10.
func setup(t *testing.T) bundle {
	t.Helper()
	dsn, schema := ormtest.Postgres(t)
	sqlDB, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	client := ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, sqlDB)))
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	migrateMu.Lock()
	err = client.Schema.Create(ctx)
	migrateMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Stock.Create().SetSku("sku-1").SetQty(10).Save(ctx); err != nil {
		t.Fatal(err)
	}
	env := ormtest.NewEnv(t, sqlDB, schema)
	return bundle{client: client, env: env, inv: &entexample.Inventory{Client: client, Outbox: env.Outbox}}
}

func (b bundle) qty(t testing.TB, sku string) int {
	t.Helper()
	s, err := b.client.Stock.Query().Where(entstock.Sku(sku)).Only(context.Background())
	if err != nil {
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
	tx, err := b.client.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := b.inv.SetQtyTx(ctx, tx, "sku-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil { // a later step of the business operation failed
		t.Fatal(err)
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
