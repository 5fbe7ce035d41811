package sqlstore

import (
	"context"

	"github.com/eventsync/outbox/storage"
)

var _ storage.Notifier = (*Store)(nil)

// Channel is the Postgres notification channel the table's insert trigger
// notifies and Listen listens on: "outbox." followed by the table's name
// without its schema (at most 55 bytes, under Postgres's limit of 63).
// Tables of the same name in two schemas share it, which only wakes their
// relays for nothing.
func (s *Store) Channel() string { return "outbox." + s.t.Name }

// Listen implements storage.Notifier: it calls wake each time a transaction
// that inserted events commits, until ctx ends, then returns nil and
// leaves no goroutine behind.
//
// On Postgres it holds one connection of db's pool, on which it LISTENs
// to Channel; migration 002 installs the trigger that notifies it (at
// commit, never for a rolled-back insert). After a lost connection it
// reconnects with backoff (100ms doubling up to 5s) and calls wake once,
// since notifications sent meanwhile are lost. It needs the pgx driver
// (github.com/jackc/pgx/v5/stdlib); with another driver it returns an
// error at once and the relay relies on its interval.
//
// MySQL/MariaDB and SQLite have no notifications: Listen returns nil at
// once, and the relay's interval and the in-process kick after commit
// cover them.
func (s *Store) Listen(ctx context.Context, wake func()) error {
	return s.d.listen(ctx, s, wake)
}
