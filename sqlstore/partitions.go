package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// PartitionStatus is one partition of the table, as Partitions reads it:
// who owns it and how far behind its events are.
type PartitionStatus struct {
	// Partition is the partition's number, from 0 (SQLite has only 0).
	Partition int
	// Owner is the relay that holds the partition's lease or, once the
	// lease has ended without a new owner, the last one that held it; ""
	// when the partition was given back or never owned.
	Owner string
	// Live reports whether Owner's lease still holds on the database's
	// clock: only then does a relay read the partition's events.
	Live bool
	// Token is the partition's fencing token, raised each time it
	// changes hands.
	Token int64
	// LeaseLeft is how long the lease holds for, on the database's clock;
	// 0 when the partition is free or its lease has ended.
	LeaseLeft time.Duration
	// Pending counts the partition's pending events: not synced, not
	// dead (those backing off included).
	Pending int64
	// OldestPendingAge is the age of the oldest of them, measured as
	// Stats measures it (against the store's clock); 0 with none.
	OldestPendingAge time.Duration
}

// RelayStatus is one live relay of the table, as Relays reads it.
type RelayStatus struct {
	// Name is the relay's name: sqlstore.WithRelayName, or the host,
	// process and a random suffix.
	Name string
	// SeenLeft is how long the relay counts as live without another
	// heartbeat, on the database's clock.
	SeenLeft time.Duration
	// Partitions counts the partitions whose live lease it holds.
	Partitions int
}

// Partitions reads, in one statement, every partition of the table in
// order: its owner and lease (the lease's end compared with the
// database's clock in the same statement, so the clock of this process
// plays no part) and its pending events, their count and the age of the
// oldest, grouped by partition over the pending rows only (with
// watermarks, read per partition from its mark, as Stats reads them). It
// writes nothing and takes no part in ownership: any Store may call it,
// a Store made WithRowLeases included.
func (s *Store) Partitions(ctx context.Context) ([]PartitionStatus, error) {
	d := s.d
	now := d.dbNow()
	pending := "(SELECT partition_no, COUNT(*) AS n, MIN(created_at) AS oldest FROM " + s.t.Quoted +
		" WHERE synced_at IS NULL AND dead_at IS NULL GROUP BY partition_no)"
	if s.marks {
		u := newQuery(s.sx).sql("(SELECT c.partition_no, COUNT(*) AS n, MIN(c.created_at) AS oldest FROM (")
		s.pendingUnion(u, markedRead{cols: func(string) string { return "c.partition_no, c.created_at" }})
		pending = u.sql(") c GROUP BY c.partition_no)").String()
	}
	q := "SELECT p.partition_no, p.owner, p.token, " +
		s.sx.timeCol("CASE WHEN p.lease_until > "+now+" THEN p.lease_until END") + ", " +
		s.sx.timeCol(now) + ", COALESCE(l.n, 0), " + s.sx.timeCol("l.oldest") +
		" FROM " + s.t.Sibling(partitionsSuffix) + " p LEFT JOIN " + pending + " l ON l.partition_no = p.partition_no" +
		" ORDER BY p.partition_no"
	var out []PartitionStatus
	if s.marks {
		err := s.markedTx(ctx, false, func(tx *sqlx.Tx) error {
			var err error
			out, err = s.readPartitions(ctx, tx, q)
			return err
		})
		return out, err
	}
	return s.readPartitions(ctx, s.db, q)
}

func (s *Store) readPartitions(ctx context.Context, db queryer, q string) ([]PartitionStatus, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: partitions: %w", err)
	}
	defer rows.Close()
	clock := s.now()
	var out []PartitionStatus
	for rows.Next() {
		var p PartitionStatus
		var owner sql.NullString
		var until, dbNow, oldest dbTime
		if err := rows.Scan(&p.Partition, &owner, &p.Token, &until, &dbNow, &p.Pending, &oldest); err != nil {
			return nil, fmt.Errorf("sqlstore: partitions: %w", err)
		}
		p.Owner = owner.String
		if !until.IsZero() {
			p.Live = true
			p.LeaseLeft = max(until.Sub(dbNow.Time), 0)
		}
		if !oldest.IsZero() {
			p.OldestPendingAge = max(clock.Sub(oldest.Time), 0)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: partitions: %w", err)
	}
	return out, nil
}

// Relays reads, in one statement, the live relays of the table (those
// seen until a time still ahead of the database's clock) by name, each
// with the partitions whose live lease it holds. A relay joins at its
// first heartbeat (or bulk claim) and leaves with Leave, or when its
// heartbeats stop for its time to live.
func (s *Store) Relays(ctx context.Context) ([]RelayStatus, error) {
	d := s.d
	now := d.dbNow()
	q := "SELECT r.owner, " + s.sx.timeCol("r.seen_until") + ", " + s.sx.timeCol(now) +
		", (SELECT COUNT(*) FROM " + s.t.Sibling(partitionsSuffix) + " p WHERE p.owner = r.owner AND p.lease_until > " + now + ")" +
		" FROM " + s.t.Sibling(relaysSuffix) + " r WHERE r.seen_until > " + now + " ORDER BY r.owner"
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: relays: %w", err)
	}
	defer rows.Close()
	var out []RelayStatus
	for rows.Next() {
		var r RelayStatus
		var seen, dbNow dbTime
		if err := rows.Scan(&r.Name, &seen, &dbNow, &r.Partitions); err != nil {
			return nil, fmt.Errorf("sqlstore: relays: %w", err)
		}
		r.SeenLeft = max(seen.Sub(dbNow.Time), 0)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: relays: %w", err)
	}
	return out, nil
}
