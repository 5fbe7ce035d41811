package ormtest

import (
	"context"
	"errors"
	"testing"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
)

// Case is one ORM example under the checks every example shares. Its
// fixture is the one each example's setup makes: one stock row, sku-1 at
// 10. Q is the quantity's type in that ORM's code.
type Case[Q int | int32] struct {
	Env    *Env                                               // the example's outbox and stream
	SetQty func(ctx context.Context, sku string, qty Q) error // the example's business operation
	Qty    func(t testing.TB, sku string) Q                   // reads a SKU's quantity back
}

// CommitsAndDelivers checks that SetQty updates the row and that its event
// reaches the stream and is marked synced.
func CommitsAndDelivers[Q int | int32](t *testing.T, c Case[Q]) {
	t.Helper()
	if err := c.SetQty(context.Background(), "sku-1", 7); err != nil {
		t.Fatal(err)
	}
	if got := c.Qty(t, "sku-1"); got != 7 {
		t.Fatalf("qty %d, want 7", got)
	}
	c.Env.RequireDelivered(t, stock.Updated("sku-1", 7))
}

// RolledBack checks what a rolled-back transaction that saved ev leaves:
// neither ev nor the update, and nothing for a relay pass to deliver.
func RolledBack[Q int | int32](t *testing.T, c Case[Q], ev *outbox.Event) {
	t.Helper()
	c.Env.RequireAbsent(t, ev)
	if got := c.Qty(t, "sku-1"); got != 10 {
		t.Fatalf("qty %d after rollback, want 10", got)
	}
	c.Env.RequireNothingToDeliver(t)
}

// UnknownSKUSavesNothing checks that SetQty on a missing SKU returns
// stock.ErrUnknownSKU and leaves no event for the relay to deliver.
func UnknownSKUSavesNothing[Q int | int32](t *testing.T, c Case[Q]) {
	t.Helper()
	if err := c.SetQty(context.Background(), "nope", 1); !errors.Is(err, stock.ErrUnknownSKU) {
		t.Fatalf("SetQty: %v, want stock.ErrUnknownSKU", err)
	}
	c.Env.RequireNothingToDeliver(t)
}

// RequireNothingToDeliver runs one relay pass and fails the test if
// anything then reached the test's stream.
func (e *Env) RequireNothingToDeliver(t testing.TB) {
	t.Helper()
	if _, err := e.Outbox.SyncPending(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	e.RequireStreamEmpty(t)
}
