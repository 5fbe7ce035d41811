// Package ent is the code that ent generates from ./schema (go generate
// rebuilds it). The sql/execquery feature gives Client and Tx an
// ExecContext, which is how the outbox writes in ent's transaction.
package ent

//go:generate go tool ent generate --feature sql/execquery ./schema
