package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/eventsync/outbox"
	"github.com/jmoiron/sqlx"
)

// Event types the service emits.
const (
	typeStockCreated       = "stock.created"
	typeStockUpdated       = "stock.updated"
	typeReservationCreated = "reservation.created"
)

// ErrInsufficientStock is returned by CreateReservation when the store
// holds fewer units than asked for; nothing is written.
var ErrInsufficientStock = errors.New("insufficient stock")

// EventRef says which event a change emitted and whether it reached the
// broker at once; when it did not, the relay delivers it later.
type EventRef struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Published bool   `json:"published"`
}

// writer runs a business change and its event in one transaction, then
// publishes the event at once. It is what StockService and
// ReservationService share.
type writer struct {
	db    *database
	ob    *outbox.Outbox
	topic string
	log   *slog.Logger
	// get reads an event back with its delivery state.
	get func(ctx context.Context, id string) (*outbox.Event, error)
}

// change writes the business rows through tx and returns the event that
// describes them (Topic is filled in by writer).
type change func(ctx context.Context, tx *sqlx.Tx) (*outbox.Event, error)

// write runs fn and saves its event in one transaction, commits, and then
// publishes the event. An error from fn or from the commit means nothing
// was written. A failed publication is not an error: the event is saved and
// the outbox's relay retries it.
func (w *writer) write(ctx context.Context, fn change) (EventRef, error) {
	tx, err := w.db.BeginTxx(ctx, nil)
	if err != nil {
		return EventRef{}, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	ev, err := fn(ctx, tx)
	if err != nil {
		return EventRef{}, err
	}
	ev.Topic = w.topic
	if err := w.ob.Save(ctx, tx, ev); err != nil {
		return EventRef{}, err
	}
	if err := tx.Commit(); err != nil {
		return EventRef{}, fmt.Errorf("commit: %w", err)
	}
	log := w.log.With("event_id", ev.ID, "type", ev.Type, "aggregate_id", ev.AggregateID)
	log.Info("event saved")

	ref := EventRef{ID: ev.ID, Type: ev.Type}
	res, err := w.ob.Publish(ctx, ev)
	if err != nil {
		log.Warn("event publish failed (will retry)", "err", err)
		return ref, nil
	}
	if res.Synced == 0 {
		// Not claimed: the relay had taken it, or an earlier event of the
		// same stock item is still on its way; the relay delivers it.
		log.Info("event handed to the relay")
		return ref, nil
	}
	ref.Published = true
	log.Info("event published")
	return ref, nil
}

// aggregateID names the stock item an event is about: a product in a
// store. Events of one stock item reach the broker in the order they were
// committed.
func aggregateID(storeID, productID string) string { return storeID + "/" + productID }

// isNoRows reports whether err says a query found no row.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
