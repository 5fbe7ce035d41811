// Package stock is the business side the ORM examples share: the event a
// stock change emits and the error for an unknown SKU. Each example writes
// the stock row with its own ORM.
package stock

import (
	"errors"
	"fmt"

	"github.com/eventsync/outbox"
)

// Topic is where stock events go (the Redis stream, unless the publisher
// maps topics to other keys).
const Topic = "inventory"

// ErrUnknownSKU is returned when no stock row has the SKU.
var ErrUnknownSKU = errors.New("stock: unknown SKU")

// Updated is the event of a stock row set to qty.
func Updated(sku string, qty int) *outbox.Event {
	return &outbox.Event{
		Topic:       Topic,
		Type:        "stock.updated",
		AggregateID: sku,
		Payload:     fmt.Appendf(nil, `{"sku":%q,"qty":%d}`, sku, qty),
	}
}
