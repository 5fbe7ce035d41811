package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// Claim leases up to req.Limit due events for req.Lease under a fresh
// token and returns them in save (seq) order with their Delivery state.
// Due means pending, not dead, next_attempt_at reached and no live lease.
// With req.IDs set only those events are considered. No transaction
// outlives the call.
//
// Which due events it takes: higher Event.Priority first, then lower seq.
// With req.Unordered that is all; by default (ordered) it also keeps
// per-aggregate order: an event with a non-empty aggregate ID is claimed
// only as part of a gapless prefix of its aggregate's undelivered events,
// that is, together with or after every event of the aggregate with a
// lower seq that is not yet synced, and never while such an event is
// leased elsewhere, backing off, or buried (buried ones are passed over
// when req.SkipDead is set). A run claimed together has one priority: an
// event whose earlier undelivered events have another priority waits
// until they are delivered. Events with an empty aggregate ID are
// unordered.
//
// Order is by seq among committed events. A transaction that took a lower
// seq may commit after one that took a higher seq, so an event can become
// visible after a later event of its aggregate was already claimed. Events
// of one aggregate written by concurrent transactions are therefore
// delivered in seq order only if the business transactions serialise on
// the aggregate (for example by locking its row, as any update of it
// does); otherwise they are delivered in commit order as the relays see
// it, each still exactly once, and neither can be said to come first.
//
// How: on Postgres one statement locks candidate rows (FOR UPDATE SKIP
// LOCKED, skipping rows that visibly wait behind an earlier event),
// counts, per candidate aggregate, its undelivered events up to its last
// candidate, and leases the candidates of the aggregates whose count
// equals their number of candidates (rows that other relays are claiming
// at that moment are invisible to the lock but not to the count). MySQL
// and MariaDB, without UPDATE ... RETURNING, run the same steps as one
// short READ COMMITTED transaction: the locking read also reads each
// candidate's aggregate head, which settles a lone candidate (most of a
// drain's), and only aggregates with several candidates are counted. Dropped candidates stay
// claimable. Without order, Postgres claims in one UPDATE ... RETURNING.
// SQLite has one writer at a time, so one UPDATE ... RETURNING, whose
// subquery takes only rows with no earlier blocking event, is exact.
func (s *Store) Claim(ctx context.Context, req storage.ClaimRequest) (*outbox.Claim, error) {
	if req.Limit <= 0 {
		return nil, fmt.Errorf("sqlstore: claim: limit %d is not positive", req.Limit)
	}
	if req.Lease <= 0 {
		return nil, fmt.Errorf("sqlstore: claim: lease %v is not positive", req.Lease)
	}
	claim := &outbox.Claim{Token: outbox.NewID()}
	cr := claimRun{
		token:    claim.Token,
		now:      s.now(),
		ordered:  !req.Unordered,
		passDead: req.SkipDead,
	}
	cr.until = cr.now.Add(req.Lease).Truncate(time.Microsecond)

	var rows []eventRow
	if req.IDs == nil {
		r, err := s.claim(ctx, cr, req.Limit, nil)
		if err != nil {
			return nil, err
		}
		rows = r
	} else {
		ids := dedupe(req.IDs)
		// The IDs appear twice in an ordered claim (candidates and the
		// rows that may precede them).
		for _, chunk := range chunks(ids, (s.d.maxParams-16)/2) {
			if len(rows) >= req.Limit {
				break
			}
			r, err := s.claim(ctx, cr, req.Limit-len(rows), chunk)
			if err != nil {
				if len(rows) > 0 {
					// Give back what earlier chunks took; the caller sees
					// only the error.
					s.releaseRows(ctx, claim.Token, rows)
				}
				return nil, err
			}
			rows = append(rows, r...)
		}
	}
	slices.SortFunc(rows, func(a, b eventRow) int { return cmpInt64(a.Seq, b.Seq) })
	events, err := s.decodeClaimed(ctx, cr, rows)
	if err != nil {
		return nil, err
	}
	claim.Events = events
	return claim, nil
}

// decodeClaimed turns the claimed rows (in seq order) into events. A row
// that cannot be decoded (headers that are not a JSON object of strings,
// written by hand or by another producer) would fail every claim that
// meets it, so it is buried at once under the claim's token, with the
// reason as its last error, and left out. When the claim keeps order
// without passing buried events, the later events of its aggregate in
// this claim are released, not returned: they wait behind it as behind
// any buried event. If burying fails, the whole claim is released and
// the error returned.
func (s *Store) decodeClaimed(ctx context.Context, cr claimRun, rows []eventRow) ([]*outbox.Event, error) {
	events := make([]*outbox.Event, 0, len(rows))
	var buried []storage.Failure
	var held []eventRow
	blocked := map[string]bool{}
	for i := range rows {
		if cr.ordered && !cr.passDead && blocked[rows[i].AggregateID] {
			held = append(held, rows[i])
			continue
		}
		e, err := rows[i].event()
		if err != nil {
			buried = append(buried, storage.Failure{ID: rows[i].ID, Err: err.Error(), Dead: true})
			if rows[i].AggregateID != "" {
				blocked[rows[i].AggregateID] = true
			}
			continue
		}
		events = append(events, e)
	}
	if len(buried) == 0 {
		return events, nil
	}
	if _, err := s.Fail(context.WithoutCancel(ctx), cr.token, buried); err != nil {
		s.releaseRows(ctx, cr.token, rows)
		return nil, fmt.Errorf("sqlstore: claim: bury %d events that cannot be decoded: %w", len(buried), err)
	}
	if len(held) > 0 {
		s.releaseRows(ctx, cr.token, held)
	}
	return events, nil
}

// claimRun is what one Claim call's statements share.
type claimRun struct {
	token      string
	now, until time.Time
	ordered    bool
	passDead   bool
}

// seqList writes the rows' seqs as a comma-separated list of literals.
func seqList(rows []eventRow) string {
	b := make([]byte, 0, len(rows)*8)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, r.Seq, 10)
	}
	return string(b)
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// releaseRows gives back rows claimed by a Claim that then failed.
func (s *Store) releaseRows(ctx context.Context, token string, rows []eventRow) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	_, _ = s.Release(context.WithoutCancel(ctx), token, ids)
}

// candidates appends the FROM and WHERE of the rows a claim may take, as
// table c: due, of ids if not nil, and when ordered not visibly waiting
// behind an earlier event of their aggregate.
func (s *Store) candidates(q *query, cr claimRun, ids []string) {
	now := s.d.timeArg(cr.now)
	q.sql(" FROM ", s.t.quoted, " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND c.next_attempt_at <= ", q.arg(now),
		" AND (c.locked_until IS NULL OR c.locked_until <= ", q.arg(now), ")")
	if ids != nil {
		q.sql(" AND ", q.in("c.id", ids, false))
	}
	if !cr.ordered {
		return
	}
	// An earlier undelivered event e of the aggregate blocks c unless it
	// could be claimed with c: due, not leased, not dead (unless passed),
	// of c's priority and, for a claim by IDs, one of them.
	q.sql(" AND (c.aggregate_id = '' OR ")
	if !s.d.returning {
		// MySQL reads a dependent subquery's index by aggregate only, not
		// by the seq bound, so NOT EXISTS walks the aggregate's whole
		// undelivered tail; the head of an aggregate (most candidates of
		// a drain) is told by one index entry instead.
		q.sql(s.headOf(cr), " = c.seq OR ")
	}
	q.sql("NOT EXISTS (SELECT 1 FROM ", s.t.quoted,
		" e WHERE e.aggregate_id = c.aggregate_id AND e.synced_at IS NULL AND e.seq < c.seq AND (")
	if cr.passDead {
		q.sql("e.dead_at IS NULL AND (")
	} else {
		q.sql("e.dead_at IS NOT NULL OR ")
	}
	q.sql("e.next_attempt_at > ", q.arg(now), " OR e.locked_until > ", q.arg(now), " OR e.priority <> c.priority")
	if ids != nil {
		q.sql(" OR ", q.in("e.id", ids, true))
	}
	if cr.passDead {
		q.sql(")")
	}
	q.sql(")))")
}

// headOf is a subquery for the seq of the first undelivered event of c's
// aggregate (buried ones left out with cr.passDead): the first entry of
// the aggregate in the undelivered index.
func (s *Store) headOf(cr claimRun) string {
	h := "(SELECT h.seq FROM " + s.t.quoted + " h WHERE h.aggregate_id = c.aggregate_id AND h.synced_at IS NULL"
	if cr.passDead {
		h += " AND h.dead_at IS NULL"
	}
	return h + " ORDER BY h.seq LIMIT 1)"
}

// claim runs one claim statement (or transaction) for at most limit
// events, of ids if ids is not nil.
func (s *Store) claim(ctx context.Context, cr claimRun, limit int, ids []string) ([]eventRow, error) {
	if s.d.name == Postgres && len(ids) == 1 {
		q := newQuery(s.d)
		s.oneIDClaim(q, cr, ids[0])
		rows, err := claimRows(ctx, s.db, q)
		if err != nil || len(rows) > 0 {
			return rows, err
		}
		// Not claimable, or a session whose isolation is not READ
		// COMMITTED: the claim below is the authority.
	}
	if s.d.returning {
		q := newQuery(s.d)
		if cr.ordered && s.d.skipLocked {
			s.orderedClaim(q, cr, limit, ids)
		} else {
			s.unorderedClaim(q, cr, limit, ids)
		}
		if s.d.name == Postgres {
			return s.claimTx(ctx, q, ids != nil)
		}
		return claimRows(ctx, s.db, q)
	}

	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	q := newQuery(s.d).sql("SELECT ", selectColumns(s.d, ""))
	if cr.ordered {
		q.sql(", ", s.headOf(cr), " AS head")
	}
	s.candidates(q, cr, ids)
	q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit), " FOR UPDATE SKIP LOCKED")
	rows, err := claimRows(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	if cr.ordered {
		if rows, err = s.keepPrefixes(ctx, tx, cr, rows); err != nil {
			return nil, err
		}
	}
	if len(rows) == 0 {
		return nil, tx.Commit() // nothing is changed; ending the transaction releases the locks
	}
	// The seqs are the store's own integers, written as literals: a
	// thousand placeholders cost the driver's server-side prepare more
	// than the update itself.
	u := newQuery(s.d)
	u.sql("UPDATE ", s.t.quoted, " SET claim_token = ", u.arg(cr.token), ", locked_until = ", u.arg(s.d.timeArg(cr.until)),
		" WHERE seq IN (", seqList(rows), ")")
	if _, err := tx.ExecContext(ctx, u.String(), u.args...); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: commit: %w", err)
	}
	return rows, nil
}

// orderedClaim writes the ordered claim of Postgres as one statement: the
// locking read of the candidates (cand), the aggregates among them that
// are not a gapless prefix of their undelivered events (broken: the count
// of the aggregate's undelivered events up to its last candidate differs
// from its number of candidates), and the lease of every candidate of the
// other aggregates. The count sees the rows that other relays hold locked
// and the locking read skipped, which is what makes the claim safe under
// SKIP LOCKED (see keepPrefixes, the same check as a separate statement).
// All of it reads one snapshot, taken before the lock: an event marked
// synced after it still counts, which can only drop a candidate, never
// admit one. claimTx runs it.
func (s *Store) orderedClaim(q *query, cr claimRun, limit int, ids []string) {
	q.sql("WITH cand AS MATERIALIZED (SELECT c.seq, c.aggregate_id")
	s.candidates(q, cr, ids)
	q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit), " FOR UPDATE SKIP LOCKED),",
		" broken AS MATERIALIZED (SELECT a.aggregate_id FROM (SELECT aggregate_id, COUNT(*) AS k, MAX(seq) AS maxseq FROM cand",
		" WHERE aggregate_id <> '' GROUP BY aggregate_id) a WHERE a.k <> (SELECT COUNT(*) FROM ", s.t.quoted,
		" e WHERE e.aggregate_id = a.aggregate_id AND e.synced_at IS NULL")
	if cr.passDead {
		q.sql(" AND e.dead_at IS NULL")
	}
	q.sql(" AND e.seq <= a.maxseq))",
		" UPDATE ", s.t.quoted, " t SET claim_token = ", q.arg(cr.token), ", locked_until = ", q.arg(s.d.timeArg(cr.until)),
		" FROM cand WHERE t.seq = cand.seq AND NOT EXISTS (SELECT 1 FROM broken WHERE broken.aggregate_id = cand.aggregate_id)",
		" RETURNING ", selectColumns(s.d, "t."))
}

// oneIDClaim writes the claim of one event by ID on Postgres, the common
// case of the publication right after a commit: a single UPDATE ...
// RETURNING run on its own, one round trip instead of the four of
// claimTx, and a statement simple enough to plan in a few microseconds
// (a one-event claim, p50: 0.27 ms against 0.61 ms through claimTx on the
// benchmark machine). Its conditions are those of the general claim for
// a lone candidate: due, and when ordered no earlier undelivered event of
// its aggregate at all (buried ones left out with cr.passDead), which is
// what the order check asks of an aggregate with one candidate. A row
// another claim holds locked is waited for, not skipped, and then read
// again: its new lease keeps it out.
//
// It claims only under READ COMMITTED, which a statement outside a
// transaction runs at only if that is the session's default, and it turns
// synchronous_commit off for its own implicit transaction (set_config's
// is_local) as claimTx does. When it claims nothing, the caller runs the
// general claim, which decides.
func (s *Store) oneIDClaim(q *query, cr claimRun, id string) {
	now := s.d.timeArg(cr.now)
	q.sql("UPDATE ", s.t.quoted, " t SET claim_token = ", q.arg(cr.token), ", locked_until = ", q.arg(s.d.timeArg(cr.until)),
		" WHERE t.id = ", q.arg(id), " AND t.synced_at IS NULL AND t.dead_at IS NULL AND t.next_attempt_at <= ", q.arg(now),
		" AND (t.locked_until IS NULL OR t.locked_until <= ", q.arg(now), ")")
	if cr.ordered {
		q.sql(" AND (t.aggregate_id = '' OR NOT EXISTS (SELECT 1 FROM ", s.t.quoted,
			" e WHERE e.aggregate_id = t.aggregate_id AND e.synced_at IS NULL")
		if cr.passDead {
			q.sql(" AND e.dead_at IS NULL")
		}
		q.sql(" AND e.seq < t.seq))")
	}
	q.sql(" AND current_setting('transaction_isolation') = 'read committed'",
		" AND set_config('synchronous_commit', 'off', true) IS NOT NULL RETURNING ", selectColumns(s.d, "t."))
}

// unorderedClaim writes the claim statement of SQLite, and of Postgres
// without order: one UPDATE ... RETURNING of the first due rows. On
// Postgres the locked rows are found again by their physical address
// (ctid), not by a second walk of the primary key. Should a row's address
// have changed between the statement's snapshot and its lock (another
// transaction rewrote it), the UPDATE passes it over: it stays claimable,
// which an unordered claim may do. The ordered claim joins on seq, as a
// candidate left out there could let a later event of its aggregate go
// first.
func (s *Store) unorderedClaim(q *query, cr claimRun, limit int, ids []string) {
	set := func(alias string) {
		q.sql("UPDATE ", s.t.quoted, alias, " SET claim_token = ", q.arg(cr.token), ", locked_until = ", q.arg(s.d.timeArg(cr.until)))
	}
	if !s.d.skipLocked {
		// SQLite, where the statement runs alone.
		set("")
		q.sql(" WHERE seq IN (SELECT c.seq")
		s.candidates(q, cr, ids)
		q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit), ") RETURNING ", selectColumns(s.d, ""))
		return
	}
	q.sql("WITH cand AS MATERIALIZED (SELECT c.ctid AS tid")
	s.candidates(q, cr, ids)
	q.sql(" ORDER BY c.priority DESC, c.seq LIMIT ", q.arg(limit), " FOR UPDATE SKIP LOCKED) ")
	set(" t")
	q.sql(" FROM cand WHERE t.ctid = cand.tid RETURNING ", selectColumns(s.d, "t."))
}

// claimSettings are the transaction settings of a Postgres claim, and
// idClaimSettings those of a claim by IDs.
const (
	claimSettings   = "SELECT set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true)"
	idClaimSettings = claimSettings + ", set_config('plan_cache_mode', 'force_generic_plan', true)"
)

// claimTx runs the claim statement q of Postgres (a claim by IDs if
// byIDs) in a transaction with three settings of its own:
//
//   - synchronous_commit off: the claim's commit returns without waiting
//     for its WAL to reach the disk, a large part of a small claim's time
//     (a one-event claim, p50: 0.92 ms with the wait, 0.65 ms without,
//     on the benchmark machine). A lease lost in a
//     server crash only makes its events claimable again, as if it had
//     expired: at worst a duplicate, never a loss. Marks stay synchronous.
//
//   - jit off: the planner prices an ordered claim's order check (it
//     cannot know the scan stops at the limit) above the thresholds at
//     which Postgres compiles, optimises and inlines a plan: tens of
//     milliseconds to seconds of compiling, every claim, for a statement
//     that runs in a few.
//
//   - enable_bitmapscan off: the planner expects several undelivered
//     events per aggregate and counts them, in the ordered claim's order
//     check, with a bitmap heap scan per candidate aggregate (about 20 µs
//     each, a thousand per claim); the plain index scan it takes without
//     one costs about 4 µs. No claim statement gains from a bitmap: each
//     reads a short index range or a list of IDs.
//
// A claim by IDs (the immediate path after a commit of several events;
// one event goes through oneIDClaim first) also sets plan_cache_mode to
// force_generic_plan. Its statement text is the
// same for any list of IDs (one array parameter), so with a driver that
// caches prepared statements (pgx does) each connection keeps one plan
// (the ID index, then the order check) and runs it without planning
// again: planning its CTEs took about 0.45 ms of a 0.55 ms statement, the
// generic plan then 0.05 ms. Other claims keep the server's choice
// (plan_cache_mode auto), which plans them for their parameters unless a
// generic plan proves as cheap: their best plan depends on the backlog.
//
// They are set for the transaction only (set_config's is_local, as SET
// LOCAL), so they end with it, committed or rolled back, and never reach
// the pooled connection's next user. That costs three short round trips
// (begin, settings, commit), far less than the flush they save.
func (s *Store) claimTx(ctx context.Context, q *query, byIDs bool) ([]eventRow, error) {
	// READ COMMITTED whatever the server's default: the claim statement
	// takes its own snapshot, and SKIP LOCKED passes over a row another
	// relay leased meanwhile instead of failing to serialize.
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	settings := claimSettings
	if byIDs {
		settings = idClaimSettings
	}
	if _, err := tx.ExecContext(ctx, settings); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	rows, err := claimRows(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlstore: claim: commit: %w", err)
	}
	return rows, nil
}

// keepPrefixes (MySQL) returns the locked candidate rows that may be claimed
// together: those without an aggregate, and an aggregate's k candidates
// only if they are exactly its first k undelivered events. For a lone
// candidate that is whether it is its aggregate's head (read with it, in
// the locking statement); for k > 1, whether the aggregate's undelivered
// events up to the last candidate number k, counted in one more
// statement for those aggregates only. Both see rows that other relays
// hold locked (their claims are not committed yet), which the locking
// read skipped; that is what makes the claim safe under SKIP LOCKED.
func (s *Store) keepPrefixes(ctx context.Context, tx *sqlx.Tx, cr claimRun, rows []eventRow) ([]eventRow, error) {
	type agg struct {
		k      int64
		maxSeq int64
		ok     bool
	}
	aggs := map[string]*agg{}
	var several []string
	for _, r := range rows {
		if r.AggregateID == "" {
			continue
		}
		a := aggs[r.AggregateID]
		if a == nil {
			a = &agg{ok: r.Head.Valid && r.Head.Int64 == r.Seq}
			aggs[r.AggregateID] = a
		}
		a.k++
		a.maxSeq = max(a.maxSeq, r.Seq)
		if a.k == 2 {
			a.ok = false // only its count can tell
			several = append(several, r.AggregateID)
		}
	}
	if len(several) > 0 {
		// One row per such aggregate (its ID and last candidate seq, the
		// seq as a literal) with its count: one short index range scan
		// each, where a WHERE of one OR term per aggregate made the
		// planner scan far more.
		q := newQuery(s.d)
		q.sql("SELECT c.agg, (SELECT COUNT(*) FROM ", s.t.quoted, " e WHERE e.aggregate_id = c.agg AND e.synced_at IS NULL")
		if cr.passDead {
			q.sql(" AND e.dead_at IS NULL")
		}
		q.sql(" AND e.seq <= c.maxseq) FROM (")
		for i, id := range several {
			if i > 0 {
				q.sql(" UNION ALL ")
			}
			q.sql("SELECT ", q.arg(id), " AS agg, ", strconv.FormatInt(aggs[id].maxSeq, 10), " AS maxseq")
		}
		q.sql(") c")
		r, err := tx.QueryContext(ctx, q.String(), q.args...)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
		defer r.Close()
		for r.Next() {
			var id string
			var n int64
			if err := r.Scan(&id, &n); err != nil {
				return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
			}
			if a := aggs[id]; a != nil {
				a.ok = a.k == n
			}
		}
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
		if err := r.Close(); err != nil {
			return nil, fmt.Errorf("sqlstore: claim: check order: %w", err)
		}
	}
	kept := rows[:0:0]
	for _, row := range rows {
		if row.AggregateID == "" || aggs[row.AggregateID].ok {
			kept = append(kept, row)
		}
	}
	return kept, nil
}

// claimRows runs the claim statement q on db (the pool or the claim's
// transaction) and reads the rows it returns.
func claimRows(ctx context.Context, db sqlx.QueryerContext, q *query) ([]eventRow, error) {
	r, err := db.QueryxContext(ctx, q.String(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	rows, err := scanRows(r)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: claim: %w", err)
	}
	return rows, nil
}

func scanRows(r *sqlx.Rows) ([]eventRow, error) {
	defer r.Close()
	var rows []eventRow
	for r.Next() {
		var row eventRow
		if err := r.StructScan(&row); err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return rows, r.Close()
}
