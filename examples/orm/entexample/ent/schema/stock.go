// Package schema holds the ent schema of the example: one entity, Stock.
package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// Stock is the quantity on hand of one SKU.
type Stock struct {
	ent.Schema
}

// Fields of Stock.
func (Stock) Fields() []ent.Field {
	return []ent.Field{
		field.String("sku").Unique().NotEmpty(),
		field.Int("qty"),
	}
}
