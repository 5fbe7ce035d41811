package sqlstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// markedReadBatch is markedRead (watermark_tx.go) as one pgx batch,
// one round trip: begin, the settings, the read, the snapshot, commit. A
// relay that keeps up reads one event in about the time of the statement
// alone, where five round trips cost three times that. errNotPgx with
// another driver.
//
// A batch that fails leaves its connection in the transaction,
// and the pool discards such a connection; it is rolled back first where
// the connection still answers.
func (s *Store) markedReadBatch(ctx context.Context, settings string, q *query) (rows []eventRow, snap string, err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			return errNotPgx
		}
		c := pc.Conn()
		b := &pgx.Batch{}
		b.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
		b.Queue(noJIT + settings)
		b.Queue(q.String(), q.args...)
		b.Queue(snapshotQuery)
		b.Queue("COMMIT")
		br := c.SendBatch(ctx, b)
		var err error
		rows, snap, err = readBatch(br)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil && c.PgConn().TxStatus() != 'I' && !c.IsClosed() {
			_, _ = c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return rows, snap, nil
}

// readBatch reads the results of markedReadBatch's batch.
func readBatch(br pgx.BatchResults) ([]eventRow, string, error) {
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return nil, "", err
		}
	}
	r, err := br.Query()
	if err != nil {
		return nil, "", err
	}
	rows, err := scanPgxRows(r)
	if err != nil {
		return nil, "", err
	}
	snap, err := scanSnapshot(br.QueryRow().Scan)
	if err != nil {
		return nil, "", err
	}
	_, err = br.Exec()
	return rows, snap, err
}

// scanPgxRows is scanRows for rows read through pgx itself.
func scanPgxRows(r pgx.Rows) ([]eventRow, error) {
	defer r.Close()
	fds := r.FieldDescriptions()
	var rows []eventRow
	dest := make([]any, len(fds))
	for r.Next() {
		rows = append(rows, eventRow{})
		row := &rows[len(rows)-1]
		for i, fd := range fds {
			if dest[i] = row.field(fd.Name); dest[i] == nil {
				return nil, fmt.Errorf("unexpected column %q", fd.Name)
			}
		}
		if err := r.Scan(dest...); err != nil {
			return nil, err
		}
	}
	return rows, r.Err()
}
