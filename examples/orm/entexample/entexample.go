// Package entexample saves outbox events in an ent transaction.
//
// The generated *ent.Tx is itself an outbox.Executor when the code is
// generated with the sql/execquery feature (see ent/generate.go): it then
// has an ExecContext that runs on the transaction's *sql.Tx. No wrapper is
// needed. Without that feature, the generated code has no ExecContext.
//
// The *ent.Client has that ExecContext too, but outside a transaction:
// Save through it would commit on its own. SetQtyTx takes an *ent.Tx, so
// the compiler keeps the two apart.
package entexample

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/entexample/ent"
	entstock "github.com/eventsync/outbox/examples/orm/entexample/ent/stock"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
)

// The generated *ent.Tx must stay an outbox.Executor (see the package doc).
var _ outbox.Executor = (*ent.Tx)(nil)

// Inventory changes stock rows with ent and emits their events through
// the outbox.
type Inventory struct {
	Client *ent.Client    // the ent client of the database with the stocks and outbox tables
	Outbox *outbox.Outbox // saves the events in the transaction and publishes them after it
	Logger *slog.Logger   // logs a publication left to the relay; nil is slog.Default()
}

// SetQty sets the quantity of sku and saves a stock.updated event in the
// same ent transaction; after the commit it publishes the event.
func (inv *Inventory) SetQty(ctx context.Context, sku string, qty int) error {
	tx, err := inv.Client.Tx(ctx)
	if err != nil {
		return fmt.Errorf("entexample: begin: %w", err)
	}
	ev, err := inv.SetQtyTx(ctx, tx, sku, qty)
	if err != nil {
		if rbErr := tx.Rollback(); rbErr != nil {
			return errors.Join(err, fmt.Errorf("entexample: rollback: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("entexample: commit: %w", err)
	}
	// Committed. A failed publication is no failure of SetQty: the event
	// is in the table and the relay (Outbox.Run) delivers it.
	if _, err := inv.Outbox.Publish(ctx, ev); err != nil {
		inv.logger().WarnContext(ctx, "stock event left to the relay", "event_id", ev.ID, "err", err)
	}
	return nil
}

// SetQtyTx is the part of SetQty that runs in tx, the caller's ent
// transaction: the update and the Save. It returns the saved event, for
// Publish after the caller commits.
func (inv *Inventory) SetQtyTx(ctx context.Context, tx *ent.Tx, sku string, qty int) (*outbox.Event, error) {
	n, err := tx.Stock.Update().Where(entstock.Sku(sku)).SetQty(qty).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("entexample: update stock: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("entexample: %w: %q", stock.ErrUnknownSKU, sku)
	}
	ev := stock.Updated(sku, qty)
	if err := inv.Outbox.Save(ctx, tx, ev); err != nil {
		return nil, fmt.Errorf("entexample: %w", err)
	}
	return ev, nil
}

// logger returns inv.Logger, or slog.Default() when it is nil.
func (inv *Inventory) logger() *slog.Logger {
	if inv.Logger != nil {
		return inv.Logger
	}
	return slog.Default()
}
