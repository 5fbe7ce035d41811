// Package bunexample saves outbox events in a bun transaction.
//
// Hand outbox.Save the *sql.Tx that bun.Tx embeds (tx.Tx), not the bun.Tx
// itself: bun.Tx's own ExecContext formats the query with bun's "?"
// placeholders and sends it without its arguments, so the outbox's
// statement, which uses the driver's placeholders ($1 on Postgres), fails.
// The *sql.Tx is the same transaction, so no wrapper is needed.
package bunexample

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/uptrace/bun"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
)

// Stock is the business row, in table "stocks".
type Stock struct {
	bun.BaseModel `bun:"table:stocks"` // maps Stock to table "stocks"

	SKU string `bun:",pk"`      // stock-keeping unit, the primary key
	Qty int    `bun:",notnull"` // quantity on hand
}

// Inventory changes stock rows with bun and emits their events through
// the outbox.
type Inventory struct {
	DB     *bun.DB        // the database of the stocks table and the outbox table
	Outbox *outbox.Outbox // saves the events in the transaction and publishes them after it
	Logger *slog.Logger   // logs a publication left to the relay; nil is slog.Default()
}

// SetQty sets the quantity of sku and saves a stock.updated event in the
// same bun transaction; after the commit it publishes the event.
func (inv *Inventory) SetQty(ctx context.Context, sku string, qty int) error {
	var ev *outbox.Event
	err := inv.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		ev, err = inv.SetQtyTx(ctx, tx, sku, qty)
		return err
	})
	if err != nil {
		return err
	}
	// Committed. A failed publication is no failure of SetQty: the event
	// is in the table and the relay (Outbox.Run) delivers it.
	if _, err := inv.Outbox.Publish(ctx, ev); err != nil {
		inv.logger().WarnContext(ctx, "stock event left to the relay", "event_id", ev.ID, "err", err)
	}
	return nil
}

// SetQtyTx is the part of SetQty that runs in tx, the caller's bun
// transaction: the update and the Save. It returns the saved event, for
// Publish after the caller commits.
func (inv *Inventory) SetQtyTx(ctx context.Context, tx bun.Tx, sku string, qty int) (*outbox.Event, error) {
	res, err := tx.NewUpdate().Model((*Stock)(nil)).Set("qty = ?", qty).Where("sku = ?", sku).Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("bunexample: update stock: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("bunexample: update stock: %w", err)
	} else if n == 0 {
		return nil, fmt.Errorf("bunexample: %w: %q", stock.ErrUnknownSKU, sku)
	}
	ev := stock.Updated(sku, qty)
	if err := inv.Outbox.Save(ctx, tx.Tx, ev); err != nil { // tx.Tx: the *sql.Tx, see the package doc
		return nil, fmt.Errorf("bunexample: %w", err)
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
