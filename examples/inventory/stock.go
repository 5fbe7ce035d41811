package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eventsync/outbox"
	"github.com/jmoiron/sqlx"
)

// Stock is how many units of a product a store holds for reservations.
type Stock struct {
	StoreID   string    `json:"store_id"`
	ProductID string    `json:"product_id"`
	Quantity  int64     `json:"quantity"`
	UpdatedAt time.Time `json:"updated_at"`
}

// StockService sets stock levels.
type StockService struct{ w *writer }

// stockEvent is the payload of stock.created and stock.updated.
type stockEvent struct {
	StoreID          string    `json:"store_id"`
	ProductID        string    `json:"product_id"`
	Quantity         int64     `json:"quantity"`
	PreviousQuantity *int64    `json:"previous_quantity,omitempty"` // stock.updated only
	UpdatedAt        time.Time `json:"updated_at"`
}

// UpdateStock sets the stock of a product in a store to quantity, creating
// the row the first time. In the same transaction it saves a stock.created
// event (first time) or a stock.updated event (after), then publishes it.
func (s *StockService) UpdateStock(ctx context.Context, storeID, productID string, quantity int64) (Stock, EventRef, error) {
	st := Stock{StoreID: storeID, ProductID: productID, Quantity: quantity, UpdatedAt: time.Now().UTC()}
	db := s.w.db
	ref, err := s.w.write(ctx, func(ctx context.Context, tx *sqlx.Tx) (*outbox.Event, error) {
		res, err := tx.ExecContext(ctx, db.insertStockIfAbsent(), storeID, productID, quantity, st.UpdatedAt)
		if err != nil {
			return nil, fmt.Errorf("insert stock: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("insert stock: %w", err)
		}
		payload := stockEvent{StoreID: storeID, ProductID: productID, Quantity: quantity, UpdatedAt: st.UpdatedAt}
		typ := typeStockCreated
		if n == 0 { // the row exists: lock it, then change it
			var prev int64
			if err := tx.GetContext(ctx, &prev, db.q("SELECT quantity FROM {stock} WHERE store_id = ? AND product_id = ?"+db.forUpdate()), storeID, productID); err != nil {
				return nil, fmt.Errorf("read stock: %w", err)
			}
			if _, err := tx.ExecContext(ctx, db.q("UPDATE {stock} SET quantity = ?, updated_at = ? WHERE store_id = ? AND product_id = ?"), quantity, st.UpdatedAt, storeID, productID); err != nil {
				return nil, fmt.Errorf("update stock: %w", err)
			}
			typ = typeStockUpdated
			payload.PreviousQuantity = &prev
		}
		body, err := json.Marshal(payload)
		if err != nil {
			return nil, err
		}
		return &outbox.Event{Type: typ, AggregateID: aggregateID(storeID, productID), Payload: body}, nil
	})
	if err != nil {
		return Stock{}, EventRef{}, fmt.Errorf("update stock: %w", err)
	}
	return st, ref, nil
}
