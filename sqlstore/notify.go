package sqlstore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

var _ storage.Notifier = (*Store)(nil)

// Reconnect delays of Listen after a lost connection: the first, doubled
// up to the cap.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// Channel is the Postgres notification channel the table's insert trigger
// notifies and Listen listens on: "outbox." followed by the table's name
// without its schema (at most 55 bytes, under Postgres's limit of 63).
// Tables of the same name in two schemas share it, which only wakes their
// relays for nothing.
func (s *Store) Channel() string { return "outbox." + s.t.name }

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
	if s.d.name != Postgres {
		return nil
	}
	delay := listenRetryMin
	first := true
	for {
		err := s.listenOnce(ctx, wake, !first)
		if ctx.Err() != nil {
			return nil
		}
		if err == errNotPgx {
			return err
		}
		if err == nil { // connected and then lost: start the backoff afresh
			delay = listenRetryMin
		}
		first = false
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, listenRetryMax)
	}
}

var errNotPgx = fmt.Errorf("sqlstore: listen: needs the pgx driver (github.com/jackc/pgx/v5/stdlib): %w", outbox.ErrInvalidConfig)

// listenOnce listens on one connection until it is lost (nil: it was
// listening, a reconnect is worth trying at once) or cannot be set up (an
// error). With catchUp it calls wake once it listens again.
func (s *Store) listenOnce(ctx context.Context, wake func(), catchUp bool) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: listen: connect: %w", err)
	}
	defer conn.Close()
	listening := false
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			return errNotPgx
		}
		c := pc.Conn()
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()); err != nil {
			return driver.ErrBadConn
		}
		listening = true
		if catchUp {
			wake()
		}
		for {
			if _, err := c.WaitForNotification(ctx); err != nil {
				// The connection is LISTENing or broken: never hand it
				// back to the pool.
				return driver.ErrBadConn
			}
			wake()
		}
	})
	if err == errNotPgx {
		return err
	}
	if listening {
		return nil
	}
	return fmt.Errorf("sqlstore: listen: %w", err)
}
