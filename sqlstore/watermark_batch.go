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
	var raw string
	var ref, age int64
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
		err := readBatch(br, &rows, &raw, &ref, &age)
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
	snap, err = widenSnapshot(raw, ref+age)
	return rows, snap, err
}

// readBatch reads the results of markedReadBatch's batch.
func readBatch(br pgx.BatchResults, rows *[]eventRow, snap *string, ref, age *int64) error {
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	r, err := br.Query()
	if err != nil {
		return err
	}
	if *rows, err = scanPgxRows(r); err != nil {
		return err
	}
	if err := br.QueryRow().Scan(snap, ref, age); err != nil {
		return err
	}
	_, err = br.Exec()
	return err
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
