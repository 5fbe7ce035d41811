package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The tables of partition ownership (migration 006 on Postgres, 005 on
// MySQL and SQLite), named after the outbox table.
const (
	partitionsSuffix = "_partitions"
	relaysSuffix     = "_relays"
	// deliveriesSuffix names the table of what relays with watermarks
	// delivered (Postgres migration 008).
	deliveriesSuffix = "_deliveries"
)

// ErrNoPartitions is wrapped by Claim and Heartbeat when the table has no
// partition table (the schema predates partition ownership): run
// Migrate, or use WithRowLeases.
var ErrNoPartitions = errors.New("sqlstore: the partitions table is missing or empty; run Migrate, or use WithRowLeases")

// deadlockRetries is how many times a fenced write, a heartbeat or a
// give-back runs again after the database rolled it back to break a
// deadlock. Such deadlocks are expected on MySQL: a fenced write
// share-locks the rows of its partitions in the order of its events'
// rows, while a heartbeat locks those it owns in partition order, so a
// write and a heartbeat of the same Store can each wait for the other.
// The database rolls one back whole, so running it again is safe, and
// the other has gone on by then.
const deadlockRetries = 5

// retryDeadlock runs fn, and again while it fails with a deadlock (see
// deadlockRetries), after a short pause growing with each try.
func (o *owner) retryDeadlock(ctx context.Context, fn func() error) error {
	for try := 1; ; try++ {
		err := fn()
		if err == nil || try > deadlockRetries || !o.s.d.deadlock(err) {
			return err
		}
		if !sleep(ctx, time.Duration(try)*time.Millisecond) {
			return err
		}
	}
}

// sleep waits for d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// heartbeat proves the Store's relay alive and rebalances, in one short
// transaction on the database's clock (beatTx), then reads the dead
// aggregates of what it owns and hands both to the ledger at once.
func (o *owner) heartbeat(ctx context.Context) (next time.Duration, took bool, err error) {
	o.l.join()
	o.beatMu.Lock()
	defer o.beatMu.Unlock()
	if err := o.guardMarks(ctx); err != nil {
		return o.every, false, err
	}
	var b beat
	err = o.retryDeadlock(ctx, func() error {
		var err error
		b, err = o.beatTx(ctx)
		return err
	})
	if err != nil {
		return o.every, false, o.tooOld(ctx, err)
	}
	// The beat committed: the ledger must learn what it owns now even if
	// ctx ended meanwhile (the relay stopping), or Leave would not give
	// back what it just took. Without the dead aggregates, the next
	// claim reads them.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ttl)
	dead, derr := o.deadAggregates(dctx, b.mine)
	cancel()
	o.l.parked(parkSeqs(b.recs))
	o.l.recorded(b.recs, b.tokens)
	took = o.l.adopt(b.mine, b.marks, dead, b.count, b.share, b.sent, o.ttl)
	if derr != nil {
		return o.every, took, derr
	}
	next = b.next(o.every)
	if o.l.hurried(o.clock()) {
		next = min(next, max(o.every/20, MinHeartbeat))
	}
	return next, took, nil
}

// guardMarks keeps a Store built without WithWatermarks from relaying a
// table whose relays record marks (ErrWatermarksInUse), checked before
// its first heartbeat and then once a minute: a relay that joins is
// refused before it takes anything. An error reading the table is left
// to the heartbeat to report; the check runs again at the next one.
// o.beatMu held.
func (o *owner) guardMarks(ctx context.Context) error {
	if o.l.marks != nil || o.s.Dialect() == MySQL || (!o.guardedAt.IsZero() && o.clock().Sub(o.guardedAt) < time.Minute) {
		return nil
	}
	used, err := o.s.WatermarksInUse(ctx)
	if err != nil {
		return nil
	}
	if used {
		return fmt.Errorf("%w (table %s)", ErrWatermarksInUse, o.s.Table())
	}
	o.guardedAt = o.clock()
	return nil
}

// beat is what a committed heartbeat found: the partitions owned with
// their tokens, the partition count, the fair share, when (local clock)
// the transaction began, and how long until the first other relay
// stops counting as live unless it beats again (0: no other relay).
type beat struct {
	mine         map[int]int64
	count, share int
	sent         time.Time
	lapse        time.Duration
	// With watermarks: what it recorded, under the ledger's tokens at
	// its start, and the marks the table holds for mine.
	recs   map[int]record
	tokens map[int]int64
	marks  map[int]mark
}

// next is when to beat again after b: every, or just after another
// relay's membership lapses if that comes first, so that a dead relay's
// partitions are taken over as soon as they are free, not up to a
// heartbeat later.
func (b beat) next(every time.Duration) time.Duration {
	if b.lapse <= 0 || b.lapse+lapseSlack >= every {
		return every
	}
	return b.lapse + lapseSlack
}

// lapseSlack is how long after another relay's membership lapses a
// relay beats to take over from it.
const lapseSlack = 20 * time.Millisecond

// beatTx runs the transaction of a heartbeat, its steps named as in the
// model (relay.pml):
//
//  1. register: the relay is seen until now + ttl;
//  2. share: the partition count over the live relays, rounded up (and
//     when the first other relay's membership lapses: see beat.next);
//  3. renew: the leases of its partitions that still hold run until
//     now + ttl (one that ran out is free, and taken again in step 5
//     under a raised token);
//  4. decide (ledger, under the lock claims take under): beyond the share
//     it drains partitions, and gives back those with nothing in flight;
//  5. take: below the share, free partitions (given back, or whose
//     owner's lease ran out) are taken under a raised token.
//
// o.beatMu held.
func (o *owner) beatTx(ctx context.Context) (beat, error) {
	s := o.s
	d := s.d
	parts, relays := s.t.Sibling(partitionsSuffix), s.t.Sibling(relaysSuffix)
	sent := o.clock()
	// A relay paused in the middle of its heartbeat would hold its
	// partitions' row locks, and other relays could not take them over:
	// the server ends such a transaction after the time to live instead
	// (on Postgres a bound on the transaction, on MySQL on its
	// connection, put back before the connection goes back to the pool).
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return beat{}, beatErr("connect", err)
	}
	defer conn.Close()
	if set, reset := d.sessionBound(o.ttl); set != "" {
		if _, err := conn.ExecContext(ctx, set); err != nil {
			return beat{}, beatErr("bound", err)
		}
		defer func() {
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), reset); err != nil {
				// Never hand a connection with the bound to the pool.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	tx, err := conn.BeginTxx(ctx, d.txOptions())
	if err != nil {
		return beat{}, beatErr("begin", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	exec := func(step string, q *query) error {
		if _, err := tx.ExecContext(ctx, q.String(), q.args...); err != nil {
			return beatErr(step, err)
		}
		return nil
	}
	if bound := d.idleBound(o.ttl); bound != "" {
		if err := exec("bound", newQuery(s.sx).sql(bound)); err != nil {
			return beat{}, err
		}
	}

	q := newQuery(s.sx)
	d.upsert(q, relays, q.arg(o.name), d.dbLater(q, o.ttl))
	if err := exec("register", q); err != nil {
		return beat{}, err
	}
	// Relays that died without leaving are forgotten once they have not
	// been seen for a day (until then `outbox status` can tell of them).
	q = newQuery(s.sx)
	q.sql("DELETE FROM ", relays, " WHERE seen_until < ", d.dbLater(q, -24*time.Hour))
	if err := exec("forget dead relays", q); err != nil {
		return beat{}, err
	}
	// The live relays, and when the first of the others stops counting
	// as live unless it beats again: a relay that died then, and this one
	// beats right after to take over its partitions.
	var live, count int
	var lapse, now dbTime
	q = newQuery(s.sx)
	q.sql("SELECT COUNT(*), ", s.sx.timeCol("MIN(CASE WHEN owner <> "+q.arg(o.name)+" THEN seen_until END)"), ", ", s.sx.timeCol(d.dbNow()),
		" FROM ", relays, " WHERE seen_until > ", d.dbNow())
	if err := tx.QueryRowxContext(ctx, q.String(), q.args...).Scan(&live, &lapse, &now); err != nil {
		return beat{}, beatErr("count relays", err)
	}
	if err := tx.QueryRowxContext(ctx, "SELECT COUNT(*) FROM "+parts).Scan(&count); err != nil {
		return beat{}, beatErr("count partitions", err)
	}
	if count == 0 {
		return beat{}, ErrNoPartitions
	}
	share := (count + max(live, 1) - 1) / max(live, 1)
	// With watermarks, what the relay delivered since the last heartbeat:
	// the events its segments leave undelivered are made per-row, then
	// the renewal records the marks.
	var recs map[int]record
	var dv deliveries
	committed := false
	defer func() {
		if !committed {
			o.l.putBackDeliveries(dv) // written by a later heartbeat
		}
	}()
	tokens := o.l.tokens()
	if o.l.marks != nil {
		recs = o.l.recordable()
		if err := o.park(ctx, tx, recs, tokens); err != nil {
			return beat{}, err
		}
		dv = o.l.takeDeliveries()
		if err := o.writeDeliveries(ctx, tx, dv); err != nil {
			return beat{}, err
		}
	}
	q = newQuery(s.sx)
	// Only leases that still hold: a partition of this relay whose lease
	// ran out (its heartbeats stopped: paused, or cut off from the
	// database) may have changed hands and back, or had its events
	// leased by a claim by IDs meanwhile. It is free, and taken again
	// below under a raised token, so that nothing this relay read or
	// claimed before is written or taken under the old one.
	q.sql("UPDATE ", parts, " SET lease_until = ", d.dbLater(q, o.ttl))
	s.setMarks(q, recs, tokens)
	q.sql(" WHERE owner = ", q.arg(o.name), " AND lease_until > ", d.dbNow())
	if err := exec("renew", q); err != nil {
		return beat{}, err
	}
	mine, err := o.ownedIn(ctx, tx, parts)
	if err != nil {
		return beat{}, err
	}
	if give, ahead := o.l.decide(mine, share, recs); len(give) > 0 {
		if err := o.flushAhead(ctx, tx, ahead, give, tokens); err != nil {
			return beat{}, err
		}
		q = newQuery(s.sx)
		q.sql("UPDATE ", parts, " SET owner = NULL, lease_until = ", d.dbNow(), " WHERE owner = ", q.arg(o.name), " AND ", partIn("partition_no", toSet(give)))
		if err := exec("give back", q); err != nil {
			return beat{}, err
		}
		for _, p := range give {
			delete(mine, p)
		}
	} else if len(mine) < share && !o.l.leaving() {
		q = newQuery(s.sx)
		q.sql("SELECT partition_no FROM ", parts, " WHERE lease_until <= ", d.dbNow(), " ORDER BY partition_no LIMIT ", q.arg(share-len(mine)), d.skipLocked())
		var free []int
		if err := tx.SelectContext(ctx, &free, q.String(), q.args...); err != nil {
			return beat{}, beatErr("read free partitions", err)
		}
		if len(free) > 0 {
			q = newQuery(s.sx)
			q.sql("UPDATE ", parts, " SET owner = ", q.arg(o.name), ", token = token + 1, lease_until = ", d.dbLater(q, o.ttl), " WHERE ", partIn("partition_no", toSet(free)))
			if err := exec("take", q); err != nil {
				return beat{}, err
			}
			if mine, err = o.ownedIn(ctx, tx, parts); err != nil {
				return beat{}, err
			}
		}
	}
	marks, err := o.ownedMarks(ctx, tx, parts, mine)
	if err != nil {
		return beat{}, err
	}
	if err := tx.Commit(); err != nil {
		return beat{}, beatErr("commit", err)
	}
	committed = true
	b := beat{mine: mine, count: count, share: share, sent: sent, recs: recs, tokens: tokens, marks: marks}
	if !lapse.IsZero() && !now.IsZero() {
		b.lapse = lapse.Sub(now.Time)
	}
	return b, nil
}

// leave gives back every partition the Store owns as soon as nothing of
// it is in flight, and ends its relay's membership, so that the other
// relays take them at their next heartbeat without waiting for leases to
// end. From the call on, no claim of this Store takes from them (they
// drain): a claim in flight (a publication right after commit, say) is
// waited for until it ends, its lease runs out or ctx ends, the leases
// of what it holds kept renewed meanwhile. A later bulk claim or heartbeat joins again.
func (o *owner) leave(ctx context.Context) error {
	o.beatMu.Lock()
	defer o.beatMu.Unlock()
	s := o.s
	var errs []error
	renewed := o.clock()
	for {
		recs := o.l.recordable()
		give, ahead, waiting := o.l.leave(recs)
		if len(give) > 0 {
			if err := o.retryDeadlock(ctx, func() error {
				return o.handBack(ctx, give, ahead, recs)
			}); err != nil {
				errs = append(errs, fmt.Errorf("sqlstore: give back partitions: %w", err))
				break
			}
			o.l.given(give)
		}
		if !waiting {
			break
		}
		o.l.expire(o.clock()) // a claim whose lease ran out holds nothing
		if o.clock().Sub(renewed) >= o.every {
			q := newQuery(s.sx)
			q.sql("UPDATE ", s.t.Sibling(partitionsSuffix), " SET lease_until = ", s.d.dbLater(q, o.ttl), " WHERE owner = ", q.arg(o.name))
			if _, err := s.db.ExecContext(ctx, q.String(), q.args...); err == nil {
				renewed = o.clock()
			}
		}
		if !sleep(ctx, 10*time.Millisecond) {
			errs = append(errs, fmt.Errorf("sqlstore: leave: claims still in flight: %w", ctx.Err()))
			break
		}
	}
	q := newQuery(s.sx)
	q.sql("DELETE FROM ", s.t.Sibling(relaysSuffix), " WHERE owner = ", q.arg(o.name))
	if _, err := s.db.ExecContext(context.WithoutCancel(ctx), q.String(), q.args...); err != nil {
		errs = append(errs, fmt.Errorf("sqlstore: leave: %w", err))
	}
	return errors.Join(errs...)
}

// tooOld returns err, or, when the table's recorded schema predates the
// partitions migration (the package was upgraded, Migrate not run), an
// error wrapping ErrNoPartitions that says so: the statements of a
// heartbeat fail on such a table, and the driver's message alone does
// not tell why.
func (o *owner) tooOld(ctx context.Context, err error) error {
	if errors.Is(err, ErrNoPartitions) || ctx.Err() != nil {
		return err
	}
	ms, merr := ddl.Migrations(o.s.Dialect())
	if merr != nil {
		return err
	}
	need := 0
	for _, m := range ms {
		if strings.Contains(m.Name, "_partitions") {
			need = m.Version
		}
	}
	v, verr := o.s.Version(ctx)
	if verr != nil || need == 0 || v >= need {
		return err
	}
	return fmt.Errorf("%w: table %s is at schema version %d, partitions come with version %d (%v)", ErrNoPartitions, o.s.Table(), v, need, err)
}

func beatErr(step string, err error) error {
	return fmt.Errorf("sqlstore: heartbeat: %s: %w", step, err)
}

func toSet(ps []int) map[int]int64 {
	m := make(map[int]int64, len(ps))
	for _, p := range slices.Compact(slices.Sorted(slices.Values(ps))) {
		m[p] = 0
	}
	return m
}
