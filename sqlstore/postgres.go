package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// postgresDialect: UPDATE ... RETURNING with FOR UPDATE SKIP LOCKED makes
// a claim one statement; times travel as time.Time into TIMESTAMPTZ; a
// list of IDs travels as one TEXT[] parameter; inserts notify Listen.
type postgresDialect struct{}

var postgresSyntax = &syntax{
	Syntax:    sqlschema.SyntaxOf(Postgres),
	maxParams: 65535,
	arrays:    true,
	timeCol:   sameExpr,
	castTime:  func(ph string) string { return "CAST(" + ph + " AS TIMESTAMPTZ)" },
	castText:  func(ph string) string { return "CAST(" + ph + " AS TEXT)" },
}

func (postgresDialect) syntax() *syntax { return postgresSyntax }

// claim tries a claim of one event by ID as one statement of its own
// first (oneIDClaim); any other claim, and that one when it claimed
// nothing, is one statement (orderedClaim or unorderedClaim) in a
// transaction of its own (claimTx).
func (pg postgresDialect) claim(ctx context.Context, s *Store, cr claimRun, limit int, ids []string) ([]eventRow, error) {
	if len(ids) == 1 {
		q := newQuery(s.sx)
		pg.oneIDClaim(s, q, cr, ids[0])
		rows, err := claimRows(ctx, s.db, q)
		if err != nil || len(rows) > 0 {
			return rows, err
		}
		// Not claimable, or a session whose isolation is not READ
		// COMMITTED: the claim below is the authority.
	}
	q := newQuery(s.sx)
	if cr.ordered {
		pg.orderedClaim(s, q, cr, limit, ids)
	} else {
		pg.unorderedClaim(s, q, cr, limit, ids)
	}
	return pg.claimTx(ctx, s, q, ids != nil)
}

// orderedClaim writes the ordered claim as one statement: the locking
// read of the candidates (cand), the aggregates among them that are not a
// gapless prefix of their undelivered events (broken: the count of the
// aggregate's undelivered events up to its last candidate differs from
// its number of candidates), and the lease of every candidate of the
// other aggregates. The count sees the rows that other relays hold locked
// and the locking read skipped, which is what makes the claim safe under
// SKIP LOCKED (see prefixCount). All of it reads one snapshot, taken
// before the lock: an event marked synced after it still counts, which
// can only drop a candidate, never admit one. claimTx runs it.
func (postgresDialect) orderedClaim(s *Store, q *query, cr claimRun, limit int, ids []string) {
	q.sql("WITH cand AS MATERIALIZED (SELECT c.seq, c.aggregate_id")
	s.candidates(q, cr, ids, "")
	claimOrder(q, limit)
	q.sql(" FOR UPDATE SKIP LOCKED),",
		" broken AS MATERIALIZED (SELECT a.aggregate_id FROM (SELECT aggregate_id, COUNT(*) AS k, MAX(seq) AS maxseq FROM cand",
		" WHERE aggregate_id <> '' GROUP BY aggregate_id) a WHERE a.k <> ", s.prefixCount(cr, "a.aggregate_id", "a.maxseq"), ") ")
	s.lease(q, " t", cr)
	q.sql(" FROM cand WHERE t.seq = cand.seq AND NOT EXISTS (SELECT 1 FROM broken WHERE broken.aggregate_id = cand.aggregate_id)",
		" RETURNING ", selectColumns(s.sx, "t."))
}

// oneIDClaim writes the claim of one event by ID, the common case of the
// publication right after a commit: a single UPDATE ... RETURNING run on
// its own, one round trip instead of the four of claimTx, and a statement
// simple enough to plan in a few microseconds (a one-event claim, p50:
// 0.27 ms against 0.61 ms through claimTx on the benchmark machine). Its
// conditions are those of the general claim for a lone candidate: due,
// and when ordered no earlier undelivered event of its aggregate at all
// (buried ones left out with cr.passDead), which is what the order check
// asks of an aggregate with one candidate. A row another claim holds
// locked is waited for, not skipped, and then read again: its new lease
// keeps it out.
//
// It claims only under READ COMMITTED, which a statement outside a
// transaction runs at only if that is the session's default, and it turns
// synchronous_commit off for its own implicit transaction (set_config's
// is_local) as claimTx does. When it claims nothing, the caller runs the
// general claim, which decides.
func (postgresDialect) oneIDClaim(s *Store, q *query, cr claimRun, id string) {
	now := s.sx.Time(cr.now)
	s.lease(q, " t", cr)
	q.sql(" WHERE t.id = ", q.arg(id), " AND t.synced_at IS NULL AND t.dead_at IS NULL AND t.next_attempt_at <= ", q.arg(now),
		" AND (t.locked_until IS NULL OR t.locked_until <= ", q.arg(now), ")")
	if cr.unowned != nil {
		cr.unowned(q, "t.partition_no")
	}
	if cr.ordered {
		q.sql(" AND (t.aggregate_id = '' OR NOT EXISTS (SELECT 1 ", s.undelivered("e", "t.aggregate_id", cr.passDead), " AND e.seq < t.seq))")
	}
	q.sql(" AND current_setting('transaction_isolation') = 'read committed'",
		" AND set_config('synchronous_commit', 'off', true) IS NOT NULL RETURNING ", selectColumns(s.sx, "t."))
}

// unorderedClaim writes the claim without order: one UPDATE ... RETURNING
// of the first due rows, found again by their physical address (ctid),
// not by a second walk of the primary key. Should a row's address have
// changed between the statement's snapshot and its lock (another
// transaction rewrote it), the UPDATE passes it over: it stays claimable,
// which an unordered claim may do. The ordered claim joins on seq, as a
// candidate left out there could let a later event of its aggregate go
// first.
//
// On a table partitioned by save time (WithTimePartitions) an address is
// unique only within its partition, so the claim matches the partition
// (tableoid) too.
func (postgresDialect) unorderedClaim(s *Store, q *query, cr claimRun, limit int, ids []string) {
	q.sql("WITH cand AS MATERIALIZED (SELECT c.ctid AS tid")
	if s.tp != nil {
		q.sql(", c.tableoid AS rel")
	}
	s.candidates(q, cr, ids, "")
	claimOrder(q, limit)
	q.sql(" FOR UPDATE SKIP LOCKED) ")
	s.lease(q, " t", cr)
	q.sql(" FROM cand WHERE t.ctid = cand.tid")
	if s.tp != nil {
		q.sql(" AND t.tableoid = cand.rel")
	}
	q.sql(" RETURNING ", selectColumns(s.sx, "t."))
}

// claimSettings are the transaction settings of a claim, and
// idClaimSettings those of a claim by IDs.
const (
	claimSettings   = "SELECT set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true)"
	idClaimSettings = claimSettings + ", set_config('plan_cache_mode', 'force_generic_plan', true)"
)

// claimTx runs the claim statement q (a claim by IDs if byIDs) in a
// transaction with three settings of its own:
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
//     check, with a bitmap heap scan per candidate aggregate, a thousand
//     per claim, each several times slower than the plain index scan it
//     takes without one (BENCHMARKS.md has the figures). No claim
//     statement gains from a bitmap: each reads a short index range or a
//     list of IDs.
//
// A claim by IDs (the immediate path after a commit of several events;
// one event goes through oneIDClaim first) also sets plan_cache_mode to
// force_generic_plan. Its statement text is the
// same for any list of IDs (one array parameter), so with a driver that
// caches prepared statements (pgx does) each connection keeps one plan
// (the ID index, then the order check) and runs it without planning
// again: planning its CTEs was most of the statement's time
// (BENCHMARKS.md has the figures). Other claims keep the server's choice
// (plan_cache_mode auto), which plans them for their parameters unless a
// generic plan proves as cheap: their best plan depends on the backlog.
//
// They are set for the transaction only (set_config's is_local, as SET
// LOCAL), so they end with it, committed or rolled back, and never reach
// the pooled connection's next user. That costs three short round trips
// (begin, settings, commit), far less than the flush they save.
func (postgresDialect) claimTx(ctx context.Context, s *Store, q *query, byIDs bool) ([]eventRow, error) {
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

func (postgresDialect) latency() string {
	return "(EXTRACT(EPOCH FROM synced_at - created_at) * 1000000)::float8"
}

func (postgresDialect) percentile(lat string) string {
	return "percentile_cont(0.99) WITHIN GROUP (ORDER BY " + lat + ")"
}

func (postgresDialect) purge(q *query, table string, cutoff any, limit int) {
	purgeBySeq(q, table, cutoff, limit)
}

// leftBehind: the table's <table>_notify() trigger function, which the
// insert trigger of migration 002 calls.
func (postgresDialect) leftBehind(t sqlschema.Table) []string {
	return []string{"DROP FUNCTION IF EXISTS " + t.Rename(DefaultTable+"_notify()")}
}

// Partition ownership (owner.go): the fence reads the partitions FOR
// SHARE, so a takeover's UPDATE waits for a write under the old token or
// the write sees the new owner (READ COMMITTED re-checks a locked row).
func (postgresDialect) shareLock() string  { return " FOR SHARE" }
func (postgresDialect) skipLocked() string { return " FOR UPDATE SKIP LOCKED" }
func (postgresDialect) dbNow() string      { return "now()" }
func (postgresDialect) dbLater(q *query, d time.Duration) string {
	return "now() + CAST(" + q.arg(strconv.FormatInt(d.Microseconds(), 10)+" microseconds") + " AS INTERVAL)"
}
func (postgresDialect) upsert(q *query, table, name, until string) {
	q.sql("INSERT INTO ", table, " (owner, seen_until) VALUES (", name, ", ", until, ") ON CONFLICT (owner) DO UPDATE SET seen_until = EXCLUDED.seen_until")
}
func (postgresDialect) idleBound(d time.Duration) string {
	return "SET LOCAL idle_in_transaction_session_timeout = " + strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}
func (postgresDialect) sessionBound(time.Duration) (string, string) { return "", "" }
func (postgresDialect) txOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// deadlock: SQLSTATE 40P01 (deadlock_detected), as a driver's error
// reports it (pgx's does, with SQLState).
func (postgresDialect) deadlock(err error) bool {
	var e interface{ SQLState() string }
	return errors.As(err, &e) && e.SQLState() == "40P01"
}
