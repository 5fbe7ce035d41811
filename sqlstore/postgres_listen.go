package sqlstore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/relisten"
)

// listen LISTENs on one connection of the pool at a time, reconnecting
// with backoff after a lost connection (see Store.Listen).
func (pg postgresDialect) listen(ctx context.Context, s *Store, wake func()) error {
	return relisten.Run(ctx, func(catchUp bool) (bool, error) {
		err := pg.listenOnce(ctx, s, wake, catchUp)
		if err == errNotPgx {
			return false, err
		}
		return err == nil, nil // nil: connected and then lost
	})
}

var errNotPgx = fmt.Errorf("sqlstore: listen: needs the pgx driver (github.com/jackc/pgx/v5/stdlib): %w", outbox.ErrInvalidConfig)

// listenOnce listens on one connection until it is lost (nil: it was
// listening, a reconnect is worth trying at once) or cannot be set up (an
// error). With catchUp it calls wake once it listens again.
func (postgresDialect) listenOnce(ctx context.Context, s *Store, wake func(), catchUp bool) error {
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
		// The connection is LISTENing, broken, or left in doubt by the
		// cancelled wait: close it, so that neither database/sql nor a
		// pgxpool under it (stdlib.OpenDBFromPool) hands it out again.
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = c.Close(cctx)
		}()
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()); err != nil {
			return driver.ErrBadConn
		}
		listening = true
		if catchUp {
			wake()
		}
		for {
			if _, err := c.WaitForNotification(ctx); err != nil {
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
