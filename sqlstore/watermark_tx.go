package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// markedRead runs the bulk read q of a Store with watermarks in a
// read-only, repeatable-read transaction with settings (see readMarks)
// and returns its rows and the transaction's snapshot: the one the read
// saw, which the fronts move to even when it returned nothing, widened
// to list every transaction that was in progress (widenSnapshot). With
// the pgx driver the transaction travels as one batch
// (markedReadBatch); with another its statements run one at a time.
func (s *Store) markedRead(ctx context.Context, settings string, q *query) (rows []eventRow, snap string, err error) {
	rows, snap, err = s.markedReadBatch(ctx, settings, q)
	if !errors.Is(err, errNotPgx) {
		return rows, snap, err
	}
	opts := &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	err = s.markedTxOpts(ctx, opts, settings, func(tx *sqlx.Tx) error {
		var err error
		if rows, err = claimRows(ctx, tx, q); err != nil {
			return err
		}
		snap, err = scanSnapshot(tx.QueryRowContext(ctx, snapshotQuery).Scan)
		return err
	})
	return rows, snap, err
}

// scanSnapshot reads the row of snapshotQuery through scan and returns
// the snapshot widened (widenSnapshot).
func scanSnapshot(scan func(dest ...any) error) (string, error) {
	var raw string
	var ref, age int64
	if err := scan(&raw, &ref, &age); err != nil {
		return "", err
	}
	return widenSnapshot(raw, ref+age)
}

// snapshotQuery reads the transaction's snapshot, and a bound on the
// transaction IDs assigned when it was taken: age(x) is the distance from
// x to the next transaction ID to be assigned, read when the transaction
// first calls it (after the snapshot), for a transaction without an ID of
// its own. x is the snapshot's xmax as a 32-bit xid (or 3 past it where
// that would be a special xid, below 3): the bound is x + age(x).
const snapshotQuery = "SELECT s::text, x, age((x % 4294967296)::text::xid) FROM (SELECT txid_current_snapshot() AS s) y " +
	"CROSS JOIN LATERAL (SELECT CASE WHEN txid_snapshot_xmax(s) % 4294967296 >= 3 THEN txid_snapshot_xmax(s) ELSE txid_snapshot_xmax(s) + 3 END AS x) z"

// widenSnapshot returns the snapshot raw (txid_snapshot text) with every
// transaction ID from its xmax up to next (excluded) listed as in
// progress, and next as its xmax: the same snapshot (those transactions
// were invisible to it either way), but one whose in-progress list holds
// every transaction that had its ID when it was taken.
//
// Postgres sets a snapshot's xmax one past the latest transaction to
// end, not to the next ID to be assigned: a transaction that had its ID,
// and its event a seq, before the snapshot, and was still in progress,
// is at or above xmax and not listed. The late read looks up the events
// of the front's in-progress transactions by ID (lateralBranches); an
// event whose transaction was left out that way was never read, and the
// next front whose snapshot saw it committed covered it: the long chaos
// run lost events so (TestWatermarkReadSnapshotListsRunningTransactions).
func widenSnapshot(raw string, next int64) (string, error) {
	sn, err := parseSnapshot(raw)
	if err != nil {
		return "", err
	}
	if next <= sn.xmax {
		return raw, nil
	}
	if next-sn.xmax > maxWiden {
		return "", fmt.Errorf("sqlstore: snapshot %s: %d transaction IDs assigned above its xmax (next %d): more than %d", raw, next-sn.xmax, next, maxWiden)
	}
	xip := slices.Clone(sn.xip)
	for x := sn.xmax; x < next; x++ {
		xip = append(xip, x)
	}
	return strconv.FormatInt(sn.xmin, 10) + ":" + strconv.FormatInt(next, 10) + ":" + intList(xip), nil
}

// maxWiden bounds how many transaction IDs widenSnapshot lists: each is
// a lookup of the late read. A read that finds more (thousands of
// transactions began between the latest to end and the read) fails, and
// the claim is tried again.
const maxWiden = 100_000
