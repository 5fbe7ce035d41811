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

// EventRef says which event a change emitted and what became of it right
// after the commit: Published is true when the broker acknowledged it;
// Outcome says so in words ("acknowledged", "handed to the relay:
// another relay owns its partition", "waiting for a retry"), as the logs
// do. When it is not acknowledged the event is safe in the table and
// a relay delivers it.
type EventRef struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Published bool   `json:"published"`
	Outcome   string `json:"outcome"`
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
	o, ok := res.Outcome(ev.ID)
	switch {
	case !ok: // Publish reports every event it is given
		ref.Outcome = "unknown"
		log.Warn("event not published at once", "err", err)
	case o.Fate == outbox.Acknowledged:
		ref.Published, ref.Outcome = true, o.String()
		log.Info("event acknowledged")
	case o.Fate == outbox.HandedToRelay:
		ref.Outcome = o.String()
		log.Info("event handed to the relay", "why", o.Handoff.String())
	default: // waiting for a retry, or dead: the error goes to the log
		ref.Outcome = o.Fate.String()
		log.Warn("event "+o.Fate.String(), "err", o.Err)
	}
	return ref, nil
}

// aggregateID names the stock item an event is about: a product in a
// store. Events of one stock item reach the broker in the order they were
// committed.
func aggregateID(storeID, productID string) string { return storeID + "/" + productID }

// isNoRows reports whether err says a query found no row.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
