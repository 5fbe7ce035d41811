package sqlstore

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
	"github.com/eventsync/outbox/storage"
)

// mockRows returns the rows of e2 (seq 2) and e1 (seq 1), in that order,
// as dialect d's driver hands them over.
func mockRows(d Dialect) *sqlmock.Rows {
	tm := func(t time.Time) driver.Value {
		switch d {
		case Postgres:
			return t.In(time.FixedZone("CET", 3600)) // pgx returns local times
		case MySQL:
			return []byte(t.Format(sqlschema.TimeLayout))
		}
		return t.Format(sqlschema.TimeLayout)
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return sqlmock.NewRows(mockCols).
		AddRow(2, "e2", "stock", "stock.updated", "", 5, []byte{}, nil, tm(created), nil, 3, "last", tm(mockNow), nil).
		AddRow(1, "e1", "stock", "stock.updated", "sku-1", 0, []byte{0, 1}, `{"a":"1"}`, tm(created), nil, 0, nil, tm(mockNow), nil)
}

// mockHeadRows are mockRows as the ordered lock read of MySQL returns
// them, each with the head of its aggregate: e2 has none, and sku-1's
// head is head (e1 is seq 1).
func mockHeadRows(head int64) *sqlmock.Rows {
	tm := func(t time.Time) driver.Value { return []byte(t.Format(sqlschema.TimeLayout)) }
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return sqlmock.NewRows(append(slices.Clone(mockCols), "head")).
		AddRow(2, "e2", "stock", "stock.updated", "", 5, []byte{}, nil, tm(created), nil, 3, "last", tm(mockNow), nil, nil).
		AddRow(1, "e1", "stock", "stock.updated", "sku-1", 0, []byte{0, 1}, `{"a":"1"}`, tm(created), nil, 0, nil, tm(mockNow), nil, head)
}

// claimSQL builds the statements of a claim as dialect d sends them; ids
// is how many IDs the claim names (0: none).
type claimSQL struct {
	d                 Dialect
	ids               int
	ordered, passDead bool
}

func (c claimSQL) candidates() string {
	tbl := quotedTable(c.d)
	s := " FROM " + tbl + " c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND c.next_attempt_at <= ? AND (c.locked_until IS NULL OR c.locked_until <= ?)"
	if c.ids > 0 {
		s += " AND " + inSQL(c.d, "c.id", c.ids, false)
	}
	if !c.ordered {
		return s
	}
	s += " AND (c.aggregate_id = '' OR "
	if c.d == MySQL {
		s += c.head() + " = c.seq OR "
	}
	s += "NOT EXISTS (SELECT 1 FROM " + tbl + " e WHERE e.aggregate_id = c.aggregate_id AND e.synced_at IS NULL AND e.seq < c.seq AND ("
	if c.passDead {
		s += "e.dead_at IS NULL AND ("
	} else {
		s += "e.dead_at IS NOT NULL OR "
	}
	s += "e.next_attempt_at > ? OR e.locked_until > ? OR e.priority <> c.priority"
	if c.ids > 0 {
		s += " OR " + inSQL(c.d, "e.id", c.ids, true)
	}
	if c.passDead {
		s += ")"
	}
	return s + ")))"
}

// single is the one-statement claim (SQLite; Postgres unordered, which
// finds the locked rows again by ctid).
func (c claimSQL) single() string {
	if c.d == Postgres {
		return ph(c.d, "WITH cand AS MATERIALIZED (SELECT c.ctid AS tid"+c.candidates()+
			" ORDER BY c.priority DESC, c.seq LIMIT ? FOR UPDATE SKIP LOCKED) UPDATE "+quotedTable(c.d)+
			" t SET claim_token = ?, locked_until = ? FROM cand WHERE t.ctid = cand.tid RETURNING "+pgClaimColumns)
	}
	s := "UPDATE " + quotedTable(c.d) + " SET claim_token = ?, locked_until = ? WHERE seq IN (SELECT c.seq" + c.candidates() +
		" ORDER BY c.priority DESC, c.seq LIMIT ?"
	return ph(c.d, s+") RETURNING "+columnsSQL(c.d))
}

// orderedStmt is the ordered claim of Postgres, one statement: lock the
// candidates (cand), find the aggregates whose candidates are not the
// first of their undelivered events (broken), lease the other candidates.
func (c claimSQL) orderedStmt() string {
	tbl := quotedTable(c.d)
	s := "WITH cand AS MATERIALIZED (SELECT c.seq, c.aggregate_id" + c.candidates() +
		" ORDER BY c.priority DESC, c.seq LIMIT ? FOR UPDATE SKIP LOCKED)," +
		" broken AS MATERIALIZED (SELECT a.aggregate_id FROM (SELECT aggregate_id, COUNT(*) AS k, MAX(seq) AS maxseq FROM cand" +
		" WHERE aggregate_id <> '' GROUP BY aggregate_id) a WHERE a.k <> (SELECT COUNT(*) FROM " + tbl +
		" e WHERE e.aggregate_id = a.aggregate_id AND e.synced_at IS NULL"
	if c.passDead {
		s += " AND e.dead_at IS NULL"
	}
	s += " AND e.seq <= a.maxseq))" +
		" UPDATE " + tbl + " t SET claim_token = ?, locked_until = ? FROM cand WHERE t.seq = cand.seq" +
		" AND NOT EXISTS (SELECT 1 FROM broken WHERE broken.aggregate_id = cand.aggregate_id) RETURNING " + pgClaimColumns
	return ph(c.d, s)
}

// stmt is the claim's one statement (every claim but MySQL's): the
// ordered claim of Postgres, or single.
func (c claimSQL) stmt() string {
	if c.d == Postgres && c.ordered {
		return c.orderedStmt()
	}
	return c.single()
}

// stmtArgs are the arguments of stmt, given those of the candidates (and
// the limit): single leases first, orderedStmt selects first.
func (c claimSQL) stmtArgs(candArgs []driver.Value) []driver.Value {
	lease := []driver.Value{sqlmock.AnyArg(), mockTime(c.d, mockNow.Add(time.Minute))}
	if c.d == Postgres {
		return concat(candArgs, lease) // the candidates come first, in a WITH
	}
	return concat(lease, candArgs)
}

// settingsTx reports whether stmt runs in a transaction that first sets
// claimSettings (every claim on Postgres).
func (c claimSQL) settingsTx() bool { return c.d == Postgres }

// settings is the statement of those settings: a claim by IDs also keeps
// its generic plan.
func (c claimSQL) settings() string {
	s := "SELECT set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true)"
	if c.ids > 0 {
		s += ", set_config('plan_cache_mode', 'force_generic_plan', true)"
	}
	return s
}

// head is the subquery of the first undelivered event of c's aggregate
// (MySQL).
func (c claimSQL) head() string {
	s := "(SELECT h.seq FROM " + quotedTable(c.d) + " h WHERE h.aggregate_id = c.aggregate_id AND h.synced_at IS NULL"
	if c.passDead {
		s += " AND h.dead_at IS NULL"
	}
	return s + " ORDER BY h.seq LIMIT 1)"
}

// oneID is the one-statement claim of a single event by ID (Postgres).
func (c claimSQL) oneID() string {
	tbl := quotedTable(c.d)
	s := "UPDATE " + tbl + " t SET claim_token = ?, locked_until = ? WHERE t.id = ? AND t.synced_at IS NULL AND t.dead_at IS NULL" +
		" AND t.next_attempt_at <= ? AND (t.locked_until IS NULL OR t.locked_until <= ?)"
	if c.ordered {
		s += " AND (t.aggregate_id = '' OR NOT EXISTS (SELECT 1 FROM " + tbl + " e WHERE e.aggregate_id = t.aggregate_id AND e.synced_at IS NULL"
		if c.passDead {
			s += " AND e.dead_at IS NULL"
		}
		s += " AND e.seq < t.seq))"
	}
	return ph(c.d, s+" AND current_setting('transaction_isolation') = 'read committed'"+
		" AND set_config('synchronous_commit', 'off', true) IS NOT NULL RETURNING "+pgClaimColumns)
}

// lock, check and update are the statements of the claim transaction;
// the ordered lock read also reads each row's head.
func (c claimSQL) lock() string {
	cols := columnsSQL(c.d)
	if c.ordered {
		cols += ", " + c.head() + " AS head"
	}
	return ph(c.d, "SELECT "+cols+c.candidates()+" ORDER BY c.priority DESC, c.seq LIMIT ? FOR UPDATE SKIP LOCKED")
}

// check counts the undelivered events of aggregates with several
// candidates, each given with its last candidate seq (a literal).
func (c claimSQL) check(maxSeqs ...int64) string {
	s := "SELECT c.agg, (SELECT COUNT(*) FROM " + quotedTable(c.d) + " e WHERE e.aggregate_id = c.agg AND e.synced_at IS NULL"
	if c.passDead {
		s += " AND e.dead_at IS NULL"
	}
	s += " AND e.seq <= c.maxseq) FROM ("
	for i, m := range maxSeqs {
		if i > 0 {
			s += " UNION ALL "
		}
		s += fmt.Sprintf("SELECT ? AS agg, %d AS maxseq", m)
	}
	return ph(c.d, s+") c")
}

// update leases the rows of seqs, written as literals.
func (c claimSQL) update(seqs ...int64) string {
	list := make([]string, len(seqs))
	for i, seq := range seqs {
		list[i] = fmt.Sprint(seq)
	}
	return ph(c.d, "UPDATE "+quotedTable(c.d)+" SET claim_token = ?, locked_until = ? WHERE seq IN ("+strings.Join(list, ", ")+")")
}

// lockTx reports whether the claim is the transaction of lock, check
// and update (MySQL) rather than one statement.
func (c claimSQL) lockTx() bool { return c.d == MySQL }

func countRows(pairs ...any) *sqlmock.Rows {
	r := sqlmock.NewRows([]string{"aggregate_id", "count"})
	for i := 0; i < len(pairs); i += 2 {
		r.AddRow(pairs[i], pairs[i+1])
	}
	return r
}

// expectClaim sets up a claim of mockRows with the candidates' arguments
// lockArgs. A one-statement claim returns mockRows as leased; in the
// transaction of MySQL an ordered lock read finds sku-1's head at seq
// head (e1, its one candidate, is seq 1), and the rows of seqs are
// leased.
func expectClaim(mock sqlmock.Sqlmock, c claimSQL, lockArgs []driver.Value, head int64, seqs ...int64) {
	until := mockTime(c.d, mockNow.Add(time.Minute))
	if !c.lockTx() {
		if c.settingsTx() {
			mock.ExpectBegin()
			mock.ExpectExec(c.settings()).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
		}
		mock.ExpectQuery(c.stmt()).WithArgs(c.stmtArgs(lockArgs)...).WillReturnRows(mockRows(c.d))
		if c.settingsTx() {
			mock.ExpectCommit()
		}
		return
	}
	mock.ExpectBegin()
	rows := mockRows(c.d)
	if c.ordered {
		rows = mockHeadRows(head)
	}
	mock.ExpectQuery(c.lock()).WithArgs(lockArgs...).WillReturnRows(rows)
	if len(seqs) > 0 {
		mock.ExpectExec(c.update(seqs...)).WithArgs(sqlmock.AnyArg(), until).
			WillReturnResult(sqlmock.NewResult(0, int64(len(seqs))))
	}
	mock.ExpectCommit()
}

func TestMockClaim(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		now := mockTime(d, mockNow)
		c := claimSQL{d: d, ordered: true}
		args := []driver.Value{now, now, now, now, 10}
		expectClaim(mock, c, args, 1, 2, 1)
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		if len(claim.Token) != 36 {
			t.Fatalf("token %q is not a fresh UUID", claim.Token)
		}
		equalIDs(t, "claimed, in save order", ids(claim.Events), []string{"e1", "e2"})
		e1, e2 := claim.Events[0], claim.Events[1]
		if e1.Headers["a"] != "1" || string(e1.Payload) != "\x00\x01" || e1.AggregateID != "sku-1" {
			t.Errorf("e1 = %+v", e1)
		}
		wantCreated := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		if !e1.CreatedAt.Equal(wantCreated) || e1.CreatedAt.Location() != time.UTC {
			t.Errorf("CreatedAt = %v, want %v in UTC", e1.CreatedAt, wantCreated)
		}
		if e2.Delivery.Attempts != 3 || e2.Delivery.LastError != "last" || !e2.Delivery.NextAttemptAt.Equal(mockNow) ||
			e2.Headers != nil || e2.Delivery.Status() != outbox.StatusPending || e2.Priority != 5 {
			t.Errorf("e2 = %+v", e2)
		}
	})
}

func TestMockClaimUnordered(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		now := mockTime(d, mockNow)
		expectClaim(mock, claimSQL{d: d}, []driver.Value{now, now, 10}, 0, 2, 1)
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute, Unordered: true})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1", "e2"})
	})
}

// An aggregate whose candidates are not its first undelivered events (here
// sku-1's head is an earlier event than e1, its only locked candidate) is
// dropped whole; events without an aggregate are kept. With SkipDead the
// head and the count leave buried events out.
func TestMockClaimDropsAggregateBehindOthers(t *testing.T) {
	t.Run("mysql", func(t *testing.T) {
		s, mock := mockStore(t, MySQL)
		now := mockTime(MySQL, mockNow)
		c := claimSQL{d: MySQL, ordered: true, passDead: true}
		expectClaim(mock, c, []driver.Value{now, now, now, now, 10}, 0, 2)
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute, SkipDead: true})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e2"})
	})
	// On Postgres the count and the drop are inside the statement, which
	// the mock cannot run: check the statement, with the count passing
	// buried events only with SkipDead.
	const count = `(SELECT COUNT(*) FROM "outbox_events" e WHERE e.aggregate_id = a.aggregate_id AND e.synced_at IS NULL ` +
		`AND e.dead_at IS NULL AND e.seq <= a.maxseq)`
	for _, passDead := range []bool{true, false} {
		t.Run(fmt.Sprintf("postgres/passDead=%v", passDead), func(t *testing.T) {
			c := claimSQL{d: Postgres, ordered: true, passDead: passDead}
			if got := strings.Contains(c.orderedStmt(), count); got != passDead {
				t.Fatalf("statement has the count without buried events: %v, want %v\n%s", got, passDead, c.orderedStmt())
			}
			s, mock := mockStore(t, Postgres)
			now := mockTime(Postgres, mockNow)
			mock.ExpectBegin()
			mock.ExpectExec(c.settings()).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
			mock.ExpectQuery(c.orderedStmt()).WithArgs(c.stmtArgs([]driver.Value{now, now, now, now, 10})...).
				WillReturnRows(sqlmock.NewRows(mockCols).
					AddRow(2, "e2", "stock", "stock.updated", "", 5, []byte{}, nil, mockNow, nil, 0, nil, mockNow, nil))
			mock.ExpectCommit()
			claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute, SkipDead: passDead})
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			equalIDs(t, "claimed", ids(claim.Events), []string{"e2"})
		})
	}
}

func TestMockClaimByIDs(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		now := mockTime(d, mockNow)
		c := claimSQL{d: d, ids: 2, ordered: true}
		// On Postgres the ordered claim by IDs is one statement, without
		// a transaction, the IDs one array parameter.
		in := idArgs(d, "e1", "e2")
		expectClaim(mock, c, concat([]driver.Value{now, now}, in, []driver.Value{now, now}, in, []driver.Value{2}), 1, 2, 1)
		// Duplicates are dropped; the limit is the caller's.
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 2, Lease: time.Minute, IDs: []string{"e1", "e2", "e1"}})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1", "e2"})
	})
}

// severalRows is what the ordered lock read of MySQL returns for e1 and
// e3 of aggregate a (head e1) and e2 of aggregate b (head e2).
func severalRows() *sqlmock.Rows {
	tm := []byte(mockNow.Format(sqlschema.TimeLayout))
	rows := sqlmock.NewRows(append(slices.Clone(mockCols), "head"))
	for _, r := range []struct {
		seq  int64
		agg  string
		head int64
	}{{1, "a", 1}, {2, "b", 2}, {3, "a", 1}} {
		rows.AddRow(r.seq, fmt.Sprintf("e%d", r.seq), "stock", "stock.updated", r.agg, 0, []byte{}, nil, tm, nil, 0, nil, tm, nil, r.head)
	}
	return rows
}

// On MySQL an aggregate with several candidates is kept only if its
// undelivered events up to the last of them number as many as its
// candidates, counted in one statement for such aggregates alone; a lone
// candidate is judged by its head, without a count.
func TestMockClaimCountsAggregatesWithSeveralCandidates(t *testing.T) {
	for _, tc := range []struct {
		count int
		want  []string
	}{
		{2, []string{"e1", "e2", "e3"}}, // a and b kept
		{5, []string{"e2"}},             // a has other undelivered events before e3: dropped
	} {
		t.Run(fmt.Sprintf("count=%d", tc.count), func(t *testing.T) {
			s, mock := mockStore(t, MySQL)
			now := mockTime(MySQL, mockNow)
			c := claimSQL{d: MySQL, ordered: true}
			mock.ExpectBegin()
			mock.ExpectQuery(c.lock()).WithArgs(now, now, now, now, 10).WillReturnRows(severalRows())
			mock.ExpectQuery(c.check(3)).WithArgs("a").WillReturnRows(countRows("a", tc.count))
			var seqs []int64
			for _, id := range tc.want {
				var seq int64
				fmt.Sscanf(id, "e%d", &seq)
				seqs = append(seqs, seq)
			}
			mock.ExpectExec(c.update(seqs...)).WithArgs(sqlmock.AnyArg(), mockTime(MySQL, mockNow.Add(time.Minute))).
				WillReturnResult(sqlmock.NewResult(0, int64(len(seqs))))
			mock.ExpectCommit()
			claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute})
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			equalIDs(t, "claimed", ids(claim.Events), tc.want)
		})
	}
}

// A claim of one event by ID on Postgres is first one UPDATE outside any
// transaction (oneIDClaim). What it returns is the claim; an error is the
// claim's error; no row (not claimable, or a session not at READ
// COMMITTED) hands over to the claim transaction, which decides.
func TestMockClaimOneID(t *testing.T) {
	now := mockTime(Postgres, mockNow)
	until := mockTime(Postgres, mockNow.Add(time.Minute))
	req := storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{"e1"}}
	one := claimSQL{d: Postgres, ordered: true}
	oneArgs := []driver.Value{sqlmock.AnyArg(), until, "e1", now, now}
	row := func() *sqlmock.Rows {
		return sqlmock.NewRows(mockCols).AddRow(1, "e1", "stock", "stock.updated", "sku-1", 0, []byte{}, nil, mockNow, nil, 0, nil, mockNow, nil)
	}
	t.Run("claimed", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		mock.ExpectQuery(one.oneID()).WithArgs(oneArgs...).WillReturnRows(row())
		claim, err := s.Claim(t.Context(), req)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1"})
	})
	t.Run("unordered, passing buried events", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		c := claimSQL{d: Postgres, passDead: true}
		if strings.Contains(c.oneID(), "NOT EXISTS") {
			t.Fatalf("unordered claim checks order: %s", c.oneID())
		}
		mock.ExpectQuery(c.oneID()).WithArgs(oneArgs...).WillReturnRows(row())
		if _, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{"e1"}, Unordered: true, SkipDead: true}); err != nil {
			t.Fatalf("Claim: %v", err)
		}
	})
	t.Run("error", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		mock.ExpectQuery(one.oneID()).WillReturnError(errBoom)
		if c, err := s.Claim(t.Context(), req); !errors.Is(err, errBoom) || c != nil {
			t.Fatalf("Claim = %v, %v; want the driver's error", c, err)
		}
	})
	t.Run("nothing, then the claim transaction", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		mock.ExpectQuery(one.oneID()).WithArgs(oneArgs...).WillReturnRows(sqlmock.NewRows(mockCols))
		c := claimSQL{d: Postgres, ordered: true, ids: 1}
		mock.ExpectBegin()
		mock.ExpectExec(c.settings()).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
		mock.ExpectQuery(c.stmt()).WillReturnRows(row())
		mock.ExpectCommit()
		claim, err := s.Claim(t.Context(), req)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1"})
	})
}
