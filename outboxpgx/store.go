package outboxpgx

import (
	"database/sql"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// Store is the outbox.Store on a *pgxpool.Pool: a *sqlstore.Store on
// Postgres whose connections come from the pool, with every method of
// sqlstore.Store (Migrate, Requeue, Stats, Purge, ...), and a Listen that
// holds a connection taken out of the pool. It is safe for concurrent use.
type Store struct {
	*sqlstore.Store
	pool *pgxpool.Pool
	db   *sql.DB
}

var (
	_ outbox.Store     = (*Store)(nil)
	_ storage.Notifier = (*Store)(nil)
	_ storage.Purger   = (*Store)(nil)
)

// New returns a Store on pool, which it never closes. It does no I/O:
// call Migrate to create the table. opts are sqlstore's (WithTable); the
// dialect is always Postgres.
//
// Statements run through the pool's connections with the pool's settings,
// its DefaultQueryExecMode included (QueryExecModeSimpleProtocol behind a
// transaction-mode PgBouncer works). Each statement borrows a connection
// for its own duration only: the store keeps no idle connection of its
// own, and the pool's MaxConns bounds it with the rest of the service.
// Call Close when done.
func New(pool *pgxpool.Pool, opts ...sqlstore.Option) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("outboxpgx: %w: nil pool", outbox.ErrInvalidConfig)
	}
	db := stdlib.OpenDBFromPool(pool)
	st, err := sqlstore.New(sqlx.NewDb(db, "pgx"), append(slices.Clip(opts), sqlstore.WithDialect(sqlstore.Postgres))...)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("outboxpgx: %w", err)
	}
	return &Store{Store: st, pool: pool, db: db}, nil
}

// Pool returns the pool the store runs on.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close releases the database/sql handle the store runs sqlstore on. It
// does not close the pool. Call it once the relays on the store have
// stopped.
func (s *Store) Close() error { return s.db.Close() }
