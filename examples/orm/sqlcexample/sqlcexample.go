// Package sqlcexample saves outbox events in the pgx transaction that
// sqlc-generated queries run in.
//
// sqlc's pgx/v5 code (package stockdb, from schema.sql and query.sql)
// runs on a pgx.Tx through Queries.WithTx or New(tx). outbox.Save takes
// database/sql's ExecContext, which pgx.Tx does not have: outboxpgx.Exec
// adapts it, with pgx's own protocol.
package sqlcexample

//go:generate go run github.com/sqlc-dev/sqlc/cmd/sqlc@v1.31.1 generate

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/examples/orm/internal/stock"
	"github.com/eventsync/outbox/examples/orm/sqlcexample/stockdb"
	"github.com/eventsync/outbox/outboxpgx"
)

// Inventory changes stock rows with sqlc's queries on pgx and emits their
// events through the outbox.
type Inventory struct {
	Pool   *pgxpool.Pool  // the pgx pool of the database with the stocks and outbox tables
	Outbox *outbox.Outbox // saves the events in the transaction and publishes them after it
	Logger *slog.Logger   // logs a publication left to the relay; nil is slog.Default()
}

// SetQty sets the quantity of sku and saves a stock.updated event in the
// same pgx transaction; after the commit it publishes the event.
func (inv *Inventory) SetQty(ctx context.Context, sku string, qty int32) error {
	var ev *outbox.Event
	err := pgx.BeginFunc(ctx, inv.Pool, func(tx pgx.Tx) error {
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

// SetQtyTx is the part of SetQty that runs in tx, the caller's pgx
// transaction: the update and the Save. It returns the saved event, for
// Publish after the caller commits.
func (inv *Inventory) SetQtyTx(ctx context.Context, tx pgx.Tx, sku string, qty int32) (*outbox.Event, error) {
	n, err := stockdb.New(tx).SetStockQty(ctx, stockdb.SetStockQtyParams{Sku: sku, Qty: qty})
	if err != nil {
		return nil, fmt.Errorf("sqlcexample: update stock: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("sqlcexample: %w: %q", stock.ErrUnknownSKU, sku)
	}
	ev := stock.Updated(sku, int(qty))
	if err := inv.Outbox.Save(ctx, outboxpgx.Exec(tx), ev); err != nil {
		return nil, fmt.Errorf("sqlcexample: %w", err)
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
