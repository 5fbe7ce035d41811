// Package gormexample saves outbox events in a GORM transaction.
//
// Inside db.Transaction, tx.Statement.ConnPool is the transaction GORM
// opened: a *sql.Tx (or GORM's prepared-statement wrapper of one with
// PrepareStmt), and every gorm.ConnPool has the ExecContext that
// outbox.Save needs. No wrapper is needed; Executor only refuses a *gorm.DB
// that is not in a transaction, where Save would commit on its own.
package gormexample

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"gorm.io/gorm"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
)

// Stock is the business row, in table "stocks".
type Stock struct {
	SKU string `gorm:"primaryKey"` // stock-keeping unit, the primary key
	Qty int    // quantity on hand
}

// ErrNotInTransaction is returned by Executor for a *gorm.DB outside a
// transaction.
var ErrNotInTransaction = errors.New("gormexample: the *gorm.DB is not in a transaction")

// Executor returns the transaction of tx, a *gorm.DB inside
// db.Transaction (or from db.Begin), for outbox.Save.
func Executor(tx *gorm.DB) (outbox.Executor, error) {
	if _, ok := tx.Statement.ConnPool.(gorm.TxCommitter); !ok {
		return nil, ErrNotInTransaction
	}
	return tx.Statement.ConnPool, nil
}

// Inventory changes stock rows with GORM and emits their events through
// the outbox.
type Inventory struct {
	DB     *gorm.DB       // the database of the stocks table and the outbox table
	Outbox *outbox.Outbox // saves the events in the transaction and publishes them after it
	Logger *slog.Logger   // logs a publication left to the relay; nil is slog.Default()
}

// SetQty sets the quantity of sku and saves a stock.updated event in the
// same GORM transaction; after the commit it publishes the event.
func (inv *Inventory) SetQty(ctx context.Context, sku string, qty int) error {
	var ev *outbox.Event
	err := inv.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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

// SetQtyTx is the part of SetQty that runs in tx, the caller's GORM
// transaction: the update and the Save. It returns the saved event, for
// Publish after the caller commits.
func (inv *Inventory) SetQtyTx(ctx context.Context, tx *gorm.DB, sku string, qty int) (*outbox.Event, error) {
	res := tx.WithContext(ctx).Model(&Stock{}).Where("sku = ?", sku).Update("qty", qty)
	if res.Error != nil {
		return nil, fmt.Errorf("gormexample: update stock: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return nil, fmt.Errorf("gormexample: %w: %q", stock.ErrUnknownSKU, sku)
	}
	exec, err := Executor(tx)
	if err != nil {
		return nil, err
	}
	ev := stock.Updated(sku, qty)
	if err := inv.Outbox.Save(ctx, exec, ev); err != nil {
		return nil, fmt.Errorf("gormexample: %w", err)
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
