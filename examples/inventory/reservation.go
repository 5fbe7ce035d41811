package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/eventsync/outbox"
	"github.com/jmoiron/sqlx"
)

// Reservation holds units of a product in a store for a customer.
type Reservation struct {
	ID        string    `json:"id"`
	StoreID   string    `json:"store_id"`
	ProductID string    `json:"product_id"`
	Quantity  int64     `json:"quantity"`
	CreatedAt time.Time `json:"created_at"`
}

// ReservationService reserves stock.
type ReservationService struct{ w *writer }

// reservationEvent is the payload of reservation.created.
type reservationEvent struct {
	ReservationID string    `json:"reservation_id"`
	StoreID       string    `json:"store_id"`
	ProductID     string    `json:"product_id"`
	Quantity      int64     `json:"quantity"`
	Remaining     int64     `json:"remaining"` // stock left after the reservation
	CreatedAt     time.Time `json:"created_at"`
}

// CreateReservation takes quantity units off the stock of a product in a
// store and records the reservation; in the same transaction it saves a
// reservation.created event, then publishes it. The stock row stays locked
// until the transaction ends, so two reservations cannot both take the
// last units, and the events of one stock item are saved in the order of
// their changes. When the stock is short it returns an error wrapping
// ErrInsufficientStock, and nothing is written.
func (s *ReservationService) CreateReservation(ctx context.Context, storeID, productID string, quantity int64) (Reservation, int64, EventRef, error) {
	r := Reservation{ID: outbox.NewID(), StoreID: storeID, ProductID: productID, Quantity: quantity, CreatedAt: time.Now().UTC()}
	var remaining int64
	db := s.w.db
	ref, err := s.w.write(ctx, func(ctx context.Context, tx *sqlx.Tx) (*outbox.Event, error) {
		var have int64
		err := tx.GetContext(ctx, &have, db.q("SELECT quantity FROM {stock} WHERE store_id = ? AND product_id = ?"+db.forUpdate()), storeID, productID)
		switch {
		case isNoRows(err):
			have = 0
		case err != nil:
			return nil, fmt.Errorf("read stock: %w", err)
		}
		if have < quantity {
			return nil, fmt.Errorf("%w: %d requested, %d available", ErrInsufficientStock, quantity, have)
		}
		remaining = have - quantity
		if _, err := tx.ExecContext(ctx, db.q("UPDATE {stock} SET quantity = ?, updated_at = ? WHERE store_id = ? AND product_id = ?"), remaining, r.CreatedAt, storeID, productID); err != nil {
			return nil, fmt.Errorf("update stock: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO {reservations} (id, store_id, product_id, quantity, created_at) VALUES (?, ?, ?, ?, ?)"), r.ID, storeID, productID, quantity, r.CreatedAt); err != nil {
			return nil, fmt.Errorf("insert reservation: %w", err)
		}
		body, err := json.Marshal(reservationEvent{
			ReservationID: r.ID, StoreID: storeID, ProductID: productID,
			Quantity: quantity, Remaining: remaining, CreatedAt: r.CreatedAt,
		})
		if err != nil {
			return nil, err
		}
		return &outbox.Event{Type: typeReservationCreated, AggregateID: aggregateID(storeID, productID), Payload: body}, nil
	})
	if err != nil {
		return Reservation{}, 0, EventRef{}, fmt.Errorf("create reservation: %w", err)
	}
	return r, remaining, ref, nil
}
