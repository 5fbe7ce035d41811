package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
	"github.com/eventsync/outbox/storage"
)

// Retention of a table partitioned by save time: whole partitions are
// detached and dropped, no row is deleted.

// purgeTimePartitions is Purge on a Store WithTimePartitions: it drops
// the oldest partition that ended more than olderThan ago (by the store's
// clock) and whose events were all delivered (timePartDelivered), and
// returns how many events it held; 0 when there is none. One partition a
// call: the relay's retention calls again while a call returns at least
// its batch size.
//
// The partition is detached and dropped in one short transaction that
// waits at most timePartsLockTimeout for its locks. Postgres refuses
// DETACH PARTITION ... CONCURRENTLY on a table with a DEFAULT partition,
// so the DETACH takes an ACCESS EXCLUSIVE lock on the table: for the
// index probes that check the partition again (delivery cannot have
// changed unseen), a few milliseconds; while it waits for the lock, the
// statements behind it wait too, at most that timeout.
func (s *Store) purgeTimePartitions(ctx context.Context, olderThan time.Duration) (int, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	parts, _, err := s.listTimeParts(ctx, conn)
	if err != nil {
		return 0, err
	}
	cutoff := s.now().Add(-olderThan)
	for _, p := range parts {
		if p.unbounded || p.to.After(cutoff) {
			continue
		}
		ok, err := s.timePartDelivered(ctx, conn, p.quotedName)
		if err != nil || !ok {
			if err != nil {
				return 0, err
			}
			continue // pending or dead events keep it
		}
		var n int
		if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+p.quotedName).Scan(&n); err != nil {
			return 0, err
		}
		dropped, err := s.dropTimePart(ctx, conn, p)
		switch {
		case err != nil:
			return 0, err
		case dropped:
			return n, nil
		}
	}
	return 0, nil
}

// dropTimePart detaches and drops p if its events are still all
// delivered once it is detached, and reports whether it did.
func (s *Store) dropTimePart(ctx context.Context, conn *sql.Conn, p timePart) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit: nothing to undo
	var got bool
	if err := tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", s.timePartsLock()).Scan(&got); err != nil {
		return false, err
	}
	if !got {
		return false, nil // another relay changes the partitions now
	}
	for _, stmt := range []string{
		"SET LOCAL lock_timeout = '" + timePartsLockTimeout + "'",
		"ALTER TABLE " + s.t.Quoted + " DETACH PARTITION " + p.quotedName,
	} {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("detach %s: %w", p.name, err)
		}
	}
	ok, err := s.timePartDelivered(ctx, tx, p.quotedName)
	if err != nil || !ok {
		return false, err // rolled back: attached as it was
	}
	if _, err := tx.ExecContext(ctx, "DROP TABLE "+p.quotedName); err != nil {
		return false, fmt.Errorf("drop %s: %w", p.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("drop %s: %w", p.name, err)
	}
	return true, nil
}

// timePartDelivered reports whether every event of the partition part
// was delivered and none is dead: each has synced_at, or its
// partition's mark covers it (WithWatermarks: seq at most the mark's and
// its transaction committed in the mark's snapshot). It reads, in order,
// what settles most partitions with a few index probes:
//
//  1. a dead event keeps the partition (the dead index);
//  2. no event without synced_at: delivered (the pending index);
//  3. no mark on any partition of ownership: those events are pending;
//  4. in each partition of ownership the newest such event by seq and by
//     transaction ID is at most the mark's seq and below the oldest
//     transaction its snapshot saw running (xmin): every one is covered;
//  5. otherwise, the events themselves, up to the first one neither
//     synced nor covered.
func (s *Store) timePartDelivered(ctx context.Context, q sqlschema.Querier, part string) (bool, error) {
	marks := s.t.Sibling(partitionsSuffix)
	pending := " e.synced_at IS NULL AND e.dead_at IS NULL"
	steps := []struct {
		sql  string
		want bool // the answer that settles it: delivered if true
	}{
		{"SELECT NOT EXISTS (SELECT 1 FROM " + part + " e WHERE e.synced_at IS NULL AND e.dead_at IS NOT NULL)", false},
		{"SELECT NOT EXISTS (SELECT 1 FROM " + part + " e WHERE" + pending + ")", true},
		{"SELECT EXISTS (SELECT 1 FROM " + marks + " m WHERE m.mark_snap IS NOT NULL)", false},
		{"SELECT NOT EXISTS (SELECT 1 FROM " + part + " e WHERE e.xid IS NULL AND" + pending + ") AND NOT EXISTS (SELECT 1 FROM " + marks + " m" +
			" CROSS JOIN LATERAL (SELECT e.seq FROM " + part + " e WHERE e.partition_no = m.partition_no AND e.xid IS NOT NULL AND" + pending + " ORDER BY e.seq DESC LIMIT 1) hs" +
			" CROSS JOIN LATERAL (SELECT e.xid FROM " + part + " e WHERE e.partition_no = m.partition_no AND e.xid IS NOT NULL AND" + pending + " ORDER BY e.xid DESC LIMIT 1) hx" +
			" WHERE m.mark_snap IS NULL OR hs.seq > m.mark_seq OR hx.xid >= txid_snapshot_xmin(m.mark_snap))", true},
		{"SELECT NOT EXISTS (SELECT 1 FROM " + part + " e WHERE" + pending + " AND NOT EXISTS (SELECT 1 FROM " + marks + " m" +
			" WHERE m.partition_no = e.partition_no AND e.xid IS NOT NULL AND e.seq <= m.mark_seq AND txid_visible_in_snapshot(e.xid, m.mark_snap)))", true},
	}
	for i, st := range steps {
		var got bool
		if err := q.QueryRowContext(ctx, st.sql).Scan(&got); err != nil {
			return false, fmt.Errorf("sqlstore: time partitions: delivery of %s: %w", part, err)
		}
		switch {
		case i == len(steps)-1:
			return got, nil
		case got == st.want:
			return st.want, nil
		}
	}
	return false, nil
}

var (
	_ storage.Maintainer   = (*Store)(nil)
	_ storage.RunwayReader = (*Store)(nil)
)

// Runway implements storage.RunwayReader: on a Store WithTimePartitions
// it reads TimePartitions and returns its runway and the rows of its
// DEFAULT partition; any other Store returns ok false and reads nothing.
func (s *Store) Runway(ctx context.Context) (r storage.Runway, ok bool, err error) {
	if s.tp == nil {
		return storage.Runway{}, false, nil
	}
	st, err := s.TimePartitions(ctx)
	if err != nil || !st.Partitioned {
		return storage.Runway{}, false, err
	}
	return storage.Runway{Ahead: st.Runway, DefaultRows: st.DefaultRows}, true, nil
}
