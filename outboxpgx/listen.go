package outboxpgx

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsync/outbox/internal/relisten"
	"github.com/jackc/pgx/v5"
)

// Listen implements storage.Notifier: it calls wake each time a transaction
// that inserted events commits (the trigger of sqlstore's migration 002
// notifies Channel at commit), until ctx ends, then returns nil and leaves
// no goroutine behind.
//
// It holds one connection of the pool, taken out of the pool for good
// (Hijack: it no longer counts against the pool's MaxConns, only against
// the server's connections) and closed when it ends, so a connection that
// is LISTENing, or that a cancelled wait left in doubt, never serves
// another query. (sqlstore.Store.Listen, through database/sql, closes its
// connection too, but holds one of the pool's MaxConns while it listens.)
// After a lost
// connection it reconnects with backoff (100ms doubling up to 5s) and
// calls wake once, since notifications sent meanwhile are lost.
func (s *Store) Listen(ctx context.Context, wake func()) error {
	return relisten.Run(ctx, func(catchUp bool) (bool, error) {
		listened, _ := s.listenOnce(ctx, wake, catchUp)
		return listened, nil
	})
}

// listenOnce listens on one connection until it is lost or ctx ends, and
// reports whether it was listening. With catchUp it calls wake once it
// listens.
func (s *Store) listenOnce(ctx context.Context, wake func(), catchUp bool) (bool, error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("outboxpgx: listen: connect: %w", err)
	}
	c := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.Close(cctx)
	}()
	if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()); err != nil {
		return false, fmt.Errorf("outboxpgx: listen: %w", err)
	}
	if catchUp {
		wake()
	}
	for {
		if _, err := c.WaitForNotification(ctx); err != nil {
			return true, fmt.Errorf("outboxpgx: listen: %w", err)
		}
		wake()
	}
}
