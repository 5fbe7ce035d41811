package outboxpgx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventsync/outbox"
)

// Execer is pgx's shape of a statement runner: pgx.Tx, *pgx.Conn,
// *pgxpool.Pool, *pgxpool.Conn and *pgxpool.Tx all have it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Exec turns e, typically the caller's pgx.Tx, into the outbox.Executor
// that Save writes through, so that
//
//	err := ob.Save(ctx, outboxpgx.Exec(tx), events...)
//
// inserts the events in the caller's pgx transaction, with pgx's own
// protocol (no database/sql in between). Like Save, it never commits or
// rolls back. A statement on a transaction that already ended fails with
// an error that wraps both pgx.ErrTxClosed and sql.ErrTxDone. A nil e
// (or a nil pointer in it) gives a nil Executor, which Save rejects with
// outbox.ErrNilExecutor.
func Exec(e Execer) outbox.Executor {
	if e == nil {
		return nil
	}
	if v := reflect.ValueOf(e); v.Kind() == reflect.Pointer && v.IsNil() {
		return nil
	}
	return executor{e}
}

type executor struct{ e Execer }

func (x executor) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if c, ok := x.e.(copier); ok {
		if table, columns, ok := plainInsert(query, len(args)); ok {
			n, err := c.CopyFrom(ctx, table, columns, copyRows(args, len(columns)))
			if err != nil {
				return nil, x.wrap(err)
			}
			return result(pgconn.NewCommandTag("INSERT 0 " + strconv.FormatInt(n, 10))), nil
		}
	}
	tag, err := x.e.Exec(ctx, query, args...)
	if err != nil {
		return nil, x.wrap(err)
	}
	return result(tag), nil
}

// wrap makes an ended transaction's error wrap sql.ErrTxDone too, as on
// database/sql.
func (executor) wrap(err error) error {
	if errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("outboxpgx: %w (%w)", sql.ErrTxDone, err)
	}
	return err
}

// result is a sql.Result from pgx's command tag.
type result pgconn.CommandTag

func (r result) RowsAffected() (int64, error) { return pgconn.CommandTag(r).RowsAffected(), nil }

func (result) LastInsertId() (int64, error) {
	return 0, errors.New("outboxpgx: LastInsertId is not supported by Postgres")
}
