package sqlstore

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventsync/outbox/internal/sqlschema"
	"github.com/eventsync/outbox/storage"
)

// Unit tests, on go-sqlmock, of the statements of partition ownership
// (owner.go) and of the owned paths of MarkSynced, Fail and Release, and
// of every database error path of them.

const (
	mockRelay = "relay-1"
	mockLease = time.Minute
	mockTTL   = mockLease + mockLease/4
	mockEvery = mockTTL / 3
)

// mockOwnerStore returns a store of dialect d over sqlmock that owns
// partitions as relay mockRelay, matching statements exactly, with its
// clock stopped at mockNow.
func mockOwnerStore(t *testing.T, d Dialect) (*Store, sqlmock.Sqlmock) {
	t.Helper()
	return newMockStore(t, d, WithRelayName(mockRelay), WithHeartbeat(mockEvery, mockTTL))
}

// ownSQL builds the statements of partition ownership as dialect d sends
// them.
type ownSQL struct{ d Dialect }

func (o ownSQL) parts() string {
	if o.d == MySQL {
		return "`outbox_events_partitions`"
	}
	return `"outbox_events_partitions"`
}

func (o ownSQL) relays() string {
	if o.d == MySQL {
		return "`outbox_events_relays`"
	}
	return `"outbox_events_relays"`
}

func (o ownSQL) now() string {
	switch o.d {
	case Postgres:
		return "now()"
	case MySQL:
		return "UTC_TIMESTAMP(6)"
	}
	return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
}

// later is dbLater with its placeholder, and laterArg its argument.
func (o ownSQL) later() string {
	switch o.d {
	case Postgres:
		return "now() + CAST(? AS INTERVAL)"
	case MySQL:
		return "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND"
	}
	return "strftime('%Y-%m-%d %H:%M:%f', 'now', ?)"
}

func (o ownSQL) laterArg(d time.Duration) driver.Value {
	switch o.d {
	case Postgres:
		return fmt.Sprintf("%d microseconds", d.Microseconds())
	case MySQL:
		return d.Microseconds()
	}
	return fmt.Sprintf("%+.3f seconds", d.Seconds())
}

func (o ownSQL) share() string {
	return map[Dialect]string{Postgres: " FOR SHARE", MySQL: " LOCK IN SHARE MODE"}[o.d]
}

func (o ownSQL) skipLocked() string {
	if o.d == SQLite {
		return ""
	}
	return " FOR UPDATE SKIP LOCKED"
}

func (o ownSQL) register() string {
	s := "INSERT INTO " + o.relays() + " (owner, seen_until) VALUES (?, " + o.later() + ") "
	switch o.d {
	case Postgres:
		s += "ON CONFLICT (owner) DO UPDATE SET seen_until = EXCLUDED.seen_until"
	case MySQL:
		s += "ON DUPLICATE KEY UPDATE seen_until = VALUES(seen_until)"
	default:
		s += "ON CONFLICT (owner) DO UPDATE SET seen_until = excluded.seen_until"
	}
	return ph(o.d, s)
}

func (o ownSQL) forget() string {
	return ph(o.d, "DELETE FROM "+o.relays()+" WHERE seen_until < "+o.later())
}

func (o ownSQL) countRelays() string {
	return "SELECT COUNT(*) FROM " + o.relays() + " WHERE seen_until > " + o.now()
}

func (o ownSQL) countParts() string { return "SELECT COUNT(*) FROM " + o.parts() }

func (o ownSQL) renew() string {
	return ph(o.d, "UPDATE "+o.parts()+" SET lease_until = "+o.later()+" WHERE owner = ?")
}

func (o ownSQL) readOwned() string {
	return ph(o.d, "SELECT partition_no, token FROM "+o.parts()+" WHERE owner = ?")
}

func (o ownSQL) giveBack(ps string) string {
	return ph(o.d, "UPDATE "+o.parts()+" SET owner = NULL, lease_until = "+o.now()+" WHERE owner = ? AND partition_no IN ("+ps+")")
}

func (o ownSQL) readFree() string {
	return ph(o.d, "SELECT partition_no FROM "+o.parts()+" WHERE lease_until <= "+o.now()+" ORDER BY partition_no LIMIT ?"+o.skipLocked())
}

func (o ownSQL) take(ps string) string {
	return ph(o.d, "UPDATE "+o.parts()+" SET owner = ?, token = token + 1, lease_until = "+o.later()+" WHERE partition_no IN ("+ps+")")
}

func (o ownSQL) deadAggs(ps string) string {
	return "SELECT DISTINCT partition_no, aggregate_id FROM " + quotedTable(o.d) +
		" WHERE synced_at IS NULL AND dead_at IS NOT NULL AND aggregate_id <> '' AND partition_no IN (" + ps + ")"
}

func (o ownSQL) leaveRelay() string {
	return ph(o.d, "DELETE FROM "+o.relays()+" WHERE owner = ?")
}

// cols is the select list of the rows as alias c.
func (o ownSQL) cols() string {
	cols := columnsSQL(o.d)
	for _, c := range strings.Split("seq, id, topic, event_type, aggregate_id, priority, payload, headers, attempts, last_error", ", ") {
		cols = strings.Replace(cols, c+",", "c."+c+",", 1)
	}
	for _, c := range []string{"created_at", "synced_at", "next_attempt_at", "dead_at"} {
		cols = strings.Replace(cols, "("+c+" ", "(c."+c+" ", 1)
		cols = strings.Replace(cols, " "+c+" AS", " c."+c+" AS", 1)
		if strings.HasPrefix(cols, c+" AS") {
			cols = "c." + cols
		}
	}
	return cols
}

// read is the bulk, ordered read of the owned partitions ps.
func (o ownSQL) read(ps string) string {
	tbl := quotedTable(o.d)
	cols := o.cols()
	return ph(o.d, "SELECT "+cols+", c.partition_no, CASE WHEN c.locked_until > ? THEN 1 ELSE 0 END AS leased FROM "+tbl+
		" c WHERE c.synced_at IS NULL AND c.dead_at IS NULL AND c.partition_no IN ("+ps+")"+
		" AND (c.aggregate_id <> '' OR ((c.attempts = 0 OR c.next_attempt_at <= ?) AND (c.locked_until IS NULL OR c.locked_until <= ?)))"+
		" AND (c.aggregate_id = '' OR c.priority = (SELECT m.priority FROM "+tbl+
		" m WHERE m.synced_at IS NULL AND m.dead_at IS NULL ORDER BY m.priority, m.seq DESC LIMIT 1) OR NOT EXISTS (SELECT 1 FROM "+tbl+
		" e WHERE e.aggregate_id = c.aggregate_id AND e.synced_at IS NULL AND e.seq < c.seq AND e.priority < c.priority))"+
		" ORDER BY c.priority DESC, c.seq LIMIT ?")
}

// fence is the condition of a write fenced by partitions 0 and 1.
func (o ownSQL) fence() string {
	return " AND partition_no IN (SELECT p.partition_no FROM " + o.parts() +
		" p WHERE p.owner = ? AND ((p.partition_no = 0 AND p.token = ?) OR (p.partition_no = 1 AND p.token = ?))" + o.share() + ")"
}

// mark is the fenced MarkSynced of seqs 1 and 2, and markArgs its
// arguments.
func (o ownSQL) mark() string {
	in := "seq IN (1,2)"
	if o.d == Postgres {
		in = "seq = ANY(CAST(? AS BIGINT[]))"
	}
	return ph(o.d, "UPDATE "+quotedTable(o.d)+" SET synced_at = ? WHERE "+in+" AND synced_at IS NULL"+o.fence())
}

func (o ownSQL) markArgs() []driver.Value {
	args := []driver.Value{mockTime(o.d, mockNow)}
	if o.d == Postgres {
		args = append(args, "{1,2}")
	}
	return append(args, mockRelay, int64(5), int64(7))
}

// fail is the fenced Fail of e1 (backing off 10 s) and e2 (dead).
func (o ownSQL) fail() string {
	castText, castTime := "?", "?"
	switch o.d {
	case Postgres:
		castText, castTime = "CAST(? AS TEXT)", "CAST(? AS TIMESTAMPTZ)"
	case MySQL:
		castTime = "CAST(? AS DATETIME(6))"
	}
	return ph(o.d, "UPDATE "+quotedTable(o.d)+" SET attempts = attempts + 1, "+
		"last_error = CASE id WHEN ? THEN "+castText+" WHEN ? THEN "+castText+" END, "+
		"next_attempt_at = CASE id WHEN ? THEN "+castTime+" ELSE next_attempt_at END, "+
		"dead_at = CASE WHEN "+inSQL(o.d, "id", 1, false)+" THEN "+castTime+" ELSE dead_at END"+
		" WHERE "+inSQL(o.d, "id", 2, false)+" AND synced_at IS NULL"+o.fence())
}

func (o ownSQL) failArgs() []driver.Value {
	return concat(
		[]driver.Value{"e1", "down", "e2", "poison", "e1", mockTime(o.d, mockNow.Add(10*time.Second))},
		idArgs(o.d, "e2"), []driver.Value{mockTime(o.d, mockNow)},
		idArgs(o.d, "e1", "e2"), []driver.Value{mockRelay, int64(5), int64(7)},
	)
}

var mockFailures = []storage.Failure{
	{ID: "e1", Err: "down", Delay: 10 * time.Second},
	{ID: "e2", Err: "poison", Dead: true},
}

// renewStep is one statement of a renewal: how to expect it succeeding,
// and failing with err.
type renewStep struct {
	name string
	ok   func(m sqlmock.Sqlmock)
	fail func(m sqlmock.Sqlmock, err error)
	inTx bool // a failure rolls the transaction back
}

func ownedRows(parts ...int64) *sqlmock.Rows {
	rows := sqlmock.NewRows([]string{"partition_no", "token"})
	for i := 0; i < len(parts); i += 2 {
		rows.AddRow(parts[i], parts[i+1])
	}
	return rows
}

// renewSteps are the statements of a renewal that finds live relays and
// owns before (partition, token pairs); with 2 partitions, one relay
// takes what it lacks (after: what it owns then), two give partition 1
// back.
func renewSteps(d Dialect, live int, before, after []int64) []renewStep {
	o := ownSQL{d}
	exec := func(name, stmt string, args ...driver.Value) renewStep {
		return renewStep{name: name, inTx: true,
			ok: func(m sqlmock.Sqlmock) {
				m.ExpectExec(stmt).WithArgs(args...).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			fail: func(m sqlmock.Sqlmock, err error) { m.ExpectExec(stmt).WithArgs(args...).WillReturnError(err) },
		}
	}
	query := func(name, stmt string, rows func() *sqlmock.Rows, args ...driver.Value) renewStep {
		return renewStep{name: name, inTx: true,
			ok: func(m sqlmock.Sqlmock) { m.ExpectQuery(stmt).WithArgs(args...).WillReturnRows(rows()) },
			fail: func(m sqlmock.Sqlmock, err error) {
				m.ExpectQuery(stmt).WithArgs(args...).WillReturnError(err)
			},
		}
	}
	count := func(n int) func() *sqlmock.Rows {
		return func() *sqlmock.Rows { return sqlmock.NewRows([]string{"n"}).AddRow(n) }
	}
	owned := func(ps []int64) func() *sqlmock.Rows { return func() *sqlmock.Rows { return ownedRows(ps...) } }
	steps := []renewStep{
		{name: "begin",
			ok:   func(m sqlmock.Sqlmock) { m.ExpectBegin() },
			fail: func(m sqlmock.Sqlmock, err error) { m.ExpectBegin().WillReturnError(err) }},
		exec("register", o.register(), mockRelay, o.laterArg(mockTTL)),
		exec("forget dead relays", o.forget(), o.laterArg(-24*time.Hour)),
		query("count relays", o.countRelays(), count(live)),
		query("count partitions", o.countParts(), count(2)),
		exec("renew", o.renew(), o.laterArg(mockTTL), mockRelay),
		query("read owned", o.readOwned(), owned(before), mockRelay),
	}
	mine := before
	switch share := (2 + live - 1) / live; {
	case len(before)/2 > share:
		steps = append(steps, exec("give back", o.giveBack("1"), mockRelay))
		mine = before[:2]
	case len(before)/2 < share:
		var free []int64
		for p := int64(0); p < 2; p++ {
			if !slices.Contains(before, p) || slices.Index(before, p)%2 != 0 {
				free = append(free, p)
			}
		}
		ps := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(free)), ","), "[]")
		steps = append(steps,
			query("read free partitions", o.readFree(), func() *sqlmock.Rows {
				rows := sqlmock.NewRows([]string{"partition_no"})
				for _, p := range free {
					rows.AddRow(p)
				}
				return rows
			}, int64(share-len(before)/2)),
			exec("take", o.take(ps), mockRelay, o.laterArg(mockTTL)),
			query("read owned again", o.readOwned(), owned(after), mockRelay))
		mine = after
	}
	steps = append(steps, renewStep{name: "commit",
		ok:   func(m sqlmock.Sqlmock) { m.ExpectCommit() },
		fail: func(m sqlmock.Sqlmock, err error) { m.ExpectCommit().WillReturnError(err) }})
	if len(mine) > 0 {
		var ps []string
		for i := 0; i < len(mine); i += 2 {
			ps = append(ps, fmt.Sprint(mine[i]))
		}
		slices.Sort(ps)
		steps = append(steps, renewStep{name: "read dead aggregates",
			ok: func(m sqlmock.Sqlmock) {
				m.ExpectQuery(o.deadAggs(strings.Join(ps, ","))).WithoutArgs().
					WillReturnRows(sqlmock.NewRows([]string{"partition_no", "aggregate_id"}))
			},
			fail: func(m sqlmock.Sqlmock, err error) {
				m.ExpectQuery(o.deadAggs(strings.Join(ps, ","))).WithoutArgs().WillReturnError(err)
			}})
	}
	return steps
}

// expectRenewal expects steps, all succeeding.
func expectRenewal(m sqlmock.Sqlmock, steps []renewStep) {
	for _, st := range steps {
		st.ok(m)
	}
}

// takeAll is the first renewal of a relay alone: it takes partitions 0
// (token 5) and 1 (token 7).
func takeAll(d Dialect) []renewStep { return renewSteps(d, 1, nil, []int64{0, 5, 1, 7}) }

// ownedTokens returns the partitions the store owns in memory with their
// tokens.
func ownedTokens(s *Store) map[int]int64 {
	l := ownerOf(s).l
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int]int64{}
	for p, l := range l.parts {
		out[p] = l.token
	}
	return out
}

// readRows are e1 (seq 1, partition 0, aggregate sku-1) and e2 (seq 2,
// partition 1, no aggregate) as the bulk read returns them.
func readRows(d Dialect) *sqlmock.Rows {
	tm := func(t time.Time) driver.Value {
		switch d {
		case Postgres:
			return t
		case MySQL:
			return []byte(t.Format(sqlschema.TimeLayout))
		}
		return t.Format(sqlschema.TimeLayout)
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return sqlmock.NewRows(append(slices.Clone(mockCols), "partition_no", "leased")).
		AddRow(1, "e1", "stock", "stock.updated", "sku-1", 0, []byte{0, 1}, nil, tm(created), nil, 0, nil, tm(mockNow), nil, 0, 0).
		AddRow(2, "e2", "stock", "stock.updated", "", 0, []byte{}, nil, tm(created), nil, 0, nil, tm(mockNow), nil, 1, 0)
}

func readArgs(d Dialect) []driver.Value {
	now := mockTime(d, mockNow)
	return []driver.Value{now, now, now, 10}
}

var ownReq = storage.ClaimRequest{Limit: 10, Lease: mockLease}

// ownClaim expects the first claim of a relay alone: the renewal that
// takes both partitions and the read of e1 and e2; it returns its token.
func ownClaim(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) string {
	t.Helper()
	expectRenewal(mock, takeAll(d))
	mock.ExpectQuery(ownSQL{d}.read("0,1")).WithArgs(readArgs(d)...).WillReturnRows(readRows(d))
	claim, err := s.Claim(t.Context(), ownReq)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	equalIDs(t, "claimed", ids(claim.Events), []string{"e1", "e2"})
	return claim.Token
}

func TestMockOwnerClaimAndMark(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockOwnerStore(t, d)
			tok := ownClaim(t, d, s, mock)
			if got := ownedTokens(s); !maps.Equal(got, map[int]int64{0: 5, 1: 7}) {
				t.Fatalf("owned %v, want partitions 0 and 1 under tokens 5 and 7", got)
			}
			if !slices.Equal(s.Owned(), []int{0, 1}) || s.Rebalancing() {
				t.Fatalf("Owned() = %v, Rebalancing() = %v", s.Owned(), s.Rebalancing())
			}
			mock.ExpectExec(ownSQL{d}.mark()).WithArgs(ownSQL{d}.markArgs()...).WillReturnResult(sqlmock.NewResult(0, 2))
			n, err := s.MarkSynced(t.Context(), tok, []string{"e1", "e2"})
			wantN(t, "MarkSynced", n, err, 2)
			if ownerOf(s).inFlight() != 0 {
				t.Fatal("marked events still in flight")
			}
			// The mark ended the claim: marking again changes no row (the
			// token is no flight any more, so the mark is the row-lease
			// one, for rows a claim by IDs leased under it).
			mock.ExpectExec(ph(d, "UPDATE "+quotedTable(d)+" SET synced_at = ?, claim_token = NULL, locked_until = NULL WHERE claim_token = ? AND "+
				inSQL(d, "id", 2, false))).WithArgs(concat([]driver.Value{mockTime(d, mockNow), tok}, idArgs(d, "e1", "e2"))...).
				WillReturnResult(sqlmock.NewResult(0, 0))
			n, err = s.MarkSynced(t.Context(), tok, []string{"e1", "e2"})
			wantN(t, "second MarkSynced", n, err, 0)
		})
	}
}

// inFlight counts the events in flight.
func (o *owner) inFlight() int {
	o.l.mu.Lock()
	defer o.l.mu.Unlock()
	n := 0
	for _, f := range o.l.flights {
		n += len(f.part)
	}
	return n
}

func TestMockOwnerFail(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockOwnerStore(t, d)
			tok := ownClaim(t, d, s, mock)
			o := ownSQL{d}
			mock.ExpectExec(o.fail()).WithArgs(o.failArgs()...).WillReturnError(errBoom)
			n, err := s.Fail(t.Context(), tok, mockFailures)
			if !errors.Is(err, errBoom) || n != 0 || !strings.HasPrefix(err.Error(), "sqlstore: fail") {
				t.Fatalf("failed Fail = %d, %v", n, err)
			}
			if ownerOf(s).inFlight() != 2 {
				t.Fatal("a failed Fail ended the claim")
			}
			mock.ExpectExec(o.fail()).WithArgs(o.failArgs()...).WillReturnResult(sqlmock.NewResult(0, 2))
			n, err = s.Fail(t.Context(), tok, mockFailures)
			wantN(t, "Fail", n, err, 2)
			if ownerOf(s).inFlight() != 0 {
				t.Fatal("failed events still in flight")
			}
			// e1 backs off: its aggregate is held until it is due.
			l := ownerOf(s).l
			l.mu.Lock()
			until, held := l.holds["sku-1"]
			l.mu.Unlock()
			if !held || !until.Equal(mockNow.Add(10*time.Second)) {
				t.Fatalf("sku-1 held %v until %v", held, until)
			}
		})
	}
}

// Releasing an owned claim writes nothing: the claim ends in memory.
func TestMockOwnerRelease(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockOwnerStore(t, d)
			tok := ownClaim(t, d, s, mock)
			n, err := s.Release(t.Context(), tok, []string{"e1", "e2", "unknown"})
			wantN(t, "Release", n, err, 2)
			if ownerOf(s).inFlight() != 0 {
				t.Fatal("released events still in flight")
			}
		})
	}
}

// A failed fenced mark keeps the events in flight, and a retry with the
// same claim token sends the same fence.
func TestMockOwnerMarkFails(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockOwnerStore(t, d)
			tok := ownClaim(t, d, s, mock)
			o := ownSQL{d}
			mock.ExpectExec(o.mark()).WithArgs(o.markArgs()...).WillReturnError(errBoom)
			n, err := s.MarkSynced(t.Context(), tok, []string{"e1", "e2"})
			if !errors.Is(err, errBoom) || n != 0 || !strings.HasPrefix(err.Error(), "sqlstore: mark synced") {
				t.Fatalf("failed MarkSynced = %d, %v", n, err)
			}
			if ownerOf(s).inFlight() != 2 {
				t.Fatal("a failed mark ended the claim")
			}
			mock.ExpectExec(o.mark()).WithArgs(o.markArgs()...).WillReturnResult(sqlmock.NewResult(0, 2))
			n, err = s.MarkSynced(t.Context(), tok, []string{"e1", "e2"})
			wantN(t, "retried MarkSynced", n, err, 2)
		})
	}
}

// deadlockErr is the driver's report of a deadlock that rolled the
// statement back, on dialect d.
func deadlockErr(d Dialect) error {
	if d == Postgres {
		return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
	}
	return &mysql.MySQLError{Number: 1213, SQLState: [5]byte{'4', '0', '0', '0', '1'}, Message: "Deadlock found when trying to get lock; try restarting transaction"}
}

// A fenced write or a renewal that the database rolled back to break a
// deadlock runs again, the same statements; any other error does not.
func TestMockOwnerDeadlockRetried(t *testing.T) {
	for _, d := range []Dialect{Postgres, MySQL} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			o := ownSQL{d}
			s, mock := mockOwnerStore(t, d)
			// The first renewal deadlocks at renew, and runs again.
			steps := takeAll(d)
			for _, st := range steps[:5] {
				st.ok(mock)
			}
			steps[5].fail(mock, deadlockErr(d))
			mock.ExpectRollback()
			expectRenewal(mock, steps)
			mock.ExpectQuery(o.read("0,1")).WithArgs(readArgs(d)...).WillReturnRows(readRows(d))
			claim, err := s.Claim(t.Context(), ownReq)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			for range 2 {
				mock.ExpectExec(o.mark()).WithArgs(o.markArgs()...).WillReturnError(deadlockErr(d))
			}
			mock.ExpectExec(o.mark()).WithArgs(o.markArgs()...).WillReturnResult(sqlmock.NewResult(0, 2))
			n, err := s.MarkSynced(t.Context(), claim.Token, []string{"e1", "e2"})
			wantN(t, "MarkSynced", n, err, 2)
		})
	}
	t.Run("mysql/gives up", func(t *testing.T) {
		o := ownSQL{MySQL}
		s, mock := mockOwnerStore(t, MySQL)
		tok := ownClaim(t, MySQL, s, mock)
		for range deadlockRetries + 1 {
			mock.ExpectExec(o.fail()).WithArgs(o.failArgs()...).WillReturnError(deadlockErr(MySQL))
		}
		if _, err := s.Fail(t.Context(), tok, mockFailures); !strings.Contains(err.Error(), "1213") {
			t.Fatalf("Fail: %v, want the deadlock", err)
		}
		if ownerOf(s).inFlight() != 2 {
			t.Fatal("a failed Fail ended the claim")
		}
	})
}

// Every failure of a renewal's statements is the claim's error, wrapping
// the driver's; the renewal is rolled back and the ownership in memory
// is what it was.
func TestMockOwnerRenewalErrors(t *testing.T) {
	type scenario struct {
		name          string
		live          int
		before, after []int64
	}
	for _, d := range allDialects {
		for _, sc := range []scenario{
			{"take", 1, nil, []int64{0, 5, 1, 7}},
			{"keep", 1, []int64{0, 5, 1, 7}, nil},
			{"give back", 2, []int64{0, 5, 1, 7}, nil},
		} {
			steps := renewSteps(d, sc.live, sc.before, sc.after)
			for i, st := range steps {
				t.Run(fmt.Sprintf("%s/%s/%s", d, sc.name, st.name), func(t *testing.T) {
					t.Parallel()
					s, mock := mockOwnerStore(t, d)
					var want map[int]int64
					if sc.before != nil {
						expectRenewal(mock, takeAll(d))
						if _, _, err := ownerOf(s).heartbeat(t.Context()); err != nil {
							t.Fatalf("first renewal: %v", err)
						}
						want = ownedTokens(s)
					}
					for _, st := range steps[:i] {
						st.ok(mock)
					}
					st.fail(mock, errBoom)
					if st.inTx {
						mock.ExpectRollback()
					}
					_, _, err := ownerOf(s).heartbeat(t.Context())
					if !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: heartbeat: ") {
						t.Fatalf("renewal: %v, want an error wrapping the driver's", err)
					}
					if got := ownedTokens(s); !maps.Equal(got, want) {
						t.Fatalf("owned %v after a failed renewal, want %v", got, want)
					}
				})
			}
			// A read of the owned partitions whose rows fail.
			t.Run(fmt.Sprintf("%s/%s/read owned rows", d, sc.name), func(t *testing.T) {
				t.Parallel()
				s, mock := mockOwnerStore(t, d)
				for _, st := range steps[:6] {
					st.ok(mock)
				}
				mock.ExpectQuery(ownSQL{d}.readOwned()).WithArgs(mockRelay).
					WillReturnRows(ownedRows(0, 5, 1, 7).RowError(1, errBoom))
				mock.ExpectRollback()
				if _, _, err := ownerOf(s).heartbeat(t.Context()); !errors.Is(err, errBoom) {
					t.Fatalf("renewal: %v, want the driver's error", err)
				}
				if len(ownedTokens(s)) != 0 {
					t.Fatal("a failed renewal took partitions")
				}
			})
		}
	}
	t.Run("no partitions", func(t *testing.T) {
		s, mock := mockOwnerStore(t, SQLite)
		steps := takeAll(SQLite)
		for _, st := range steps[:4] {
			st.ok(mock)
		}
		mock.ExpectQuery(ownSQL{SQLite}.countParts()).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(0))
		mock.ExpectRollback()
		if _, err := s.Claim(t.Context(), ownReq); !errors.Is(err, ErrNoPartitions) {
			t.Fatalf("Claim: %v, want ErrNoPartitions", err)
		}
	})
}

// A failed bulk read is the claim's error, and nothing is in flight.
func TestMockOwnerReadErrors(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockOwnerStore(t, d)
			expectRenewal(mock, takeAll(d))
			mock.ExpectQuery(ownSQL{d}.read("0,1")).WithArgs(readArgs(d)...).WillReturnError(errBoom)
			mock.ExpectQuery(ownSQL{d}.read("0,1")).WithArgs(readArgs(d)...).WillReturnRows(readRows(d).RowError(1, errBoom))
			for range 2 {
				if c, err := s.Claim(t.Context(), ownReq); !errors.Is(err, errBoom) || c != nil {
					t.Fatalf("Claim = %v, %v; want the driver's error", c, err)
				}
				if ownerOf(s).inFlight() != 0 {
					t.Fatal("a failed claim left events in flight")
				}
			}
		})
	}
}

// Leave gives back each partition once nothing of it is in flight,
// waiting for claims in flight until its context ends, and ends the
// relay's membership; its errors wrap the driver's.
func TestMockOwnerLeave(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			o := ownSQL{d}
			s, mock := mockOwnerStore(t, d)
			tok := ownClaim(t, d, s, mock)
			// e2 (partition 1) stays in flight: partition 0 goes back at
			// once, partition 1 once e2 is released.
			if _, err := s.Release(t.Context(), tok, []string{"e1"}); err != nil {
				t.Fatal(err)
			}
			mock.ExpectExec(o.giveBack("0")).WithArgs(mockRelay).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectExec(o.giveBack("1")).WithArgs(mockRelay).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectExec(o.leaveRelay()).WithArgs(mockRelay).WillReturnResult(sqlmock.NewResult(0, 1))
			done := make(chan error, 1)
			go func() { done <- s.Leave(t.Context()) }()
			select {
			case err := <-done:
				t.Fatalf("Leave returned %v with e2 in flight", err)
			case <-time.After(50 * time.Millisecond):
			}
			// Draining: no claim takes from the partitions any more.
			if c, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: mockLease, IDs: []string{}}); err != nil || len(c.Events) != 0 {
				t.Fatalf("claim while leaving: %v, %v", c, err)
			}
			if _, err := s.Release(t.Context(), tok, []string{"e2"}); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Leave: %v", err)
			}
			if len(s.Owned()) != 0 || s.Rebalancing() {
				t.Fatalf("after Leave: Owned() = %v, Rebalancing() = %v", s.Owned(), s.Rebalancing())
			}
			// Both statements fail: both errors are reported.
			l := ownerOf(s).l
			l.mu.Lock()
			l.parts[0] = partLease{token: 5, until: time.Now().Add(time.Minute)}
			l.mu.Unlock()
			mock.ExpectExec(o.giveBack("0")).WithArgs(mockRelay).WillReturnError(errBoom)
			mock.ExpectExec(o.leaveRelay()).WithArgs(mockRelay).WillReturnError(errBoom)
			err := s.Leave(t.Context())
			if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "give back partitions") || !strings.Contains(err.Error(), "leave") {
				t.Fatalf("failed Leave: %v", err)
			}
		})
	}
}

// A claim by IDs on a store that does not relay takes no partitions: it
// leases rows, only those of partitions with no live owner.
func TestMockOwnerClaimIDsUnowned(t *testing.T) {
	unowned := func(d Dialect, col string) string {
		return " AND " + col + " IN (SELECT p.partition_no FROM " + ownSQL{d}.parts() + " p WHERE p.lease_until <= " +
			ownSQL{d}.now() + ownSQL{d}.share() + ")"
	}
	idRead := func(d Dialect, n int) string {
		return ph(d, "SELECT "+ownSQL{d}.cols()+", c.partition_no"+claimSQL{d: d, ordered: true, ids: n}.candidates()+
			" ORDER BY c.priority DESC, c.seq LIMIT ?")
	}
	partRows := func(d Dialect, ids ...string) *sqlmock.Rows {
		rows := sqlmock.NewRows(append(slices.Clone(mockCols), "partition_no"))
		for i, id := range ids {
			rows.AddRow(i+1, id, "stock", "stock.updated", "", 0, []byte{}, nil, mockTime(d, mockNow), nil, 0, nil, mockTime(d, mockNow), nil, i)
		}
		return rows
	}
	t.Run("sqlite", func(t *testing.T) {
		s, mock := mockOwnerStore(t, SQLite)
		c := claimSQL{d: SQLite, ordered: true, ids: 2}
		mock.ExpectQuery(idRead(SQLite, 2)).WillReturnRows(partRows(SQLite, "e1", "e2"))
		stmt := strings.Replace(c.single(), inSQL(SQLite, "c.id", 2, false), inSQL(SQLite, "c.id", 2, false)+unowned(SQLite, "c.partition_no"), 1)
		mock.ExpectQuery(stmt).WillReturnRows(mockRows(SQLite))
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 10, Lease: time.Minute, IDs: []string{"e1", "e2"}})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1", "e2"})
		if s.Owned() != nil || ownerOf(s).l.relaying() {
			t.Fatal("a claim by IDs joined the relays")
		}
	})
	t.Run("postgres", func(t *testing.T) {
		s, mock := mockOwnerStore(t, Postgres)
		mock.ExpectQuery(idRead(Postgres, 1)).WillReturnRows(partRows(Postgres, "e1"))
		one := claimSQL{d: Postgres, ordered: true}.oneID()
		one = strings.Replace(one, "(t.locked_until IS NULL OR t.locked_until <= $5)", "(t.locked_until IS NULL OR t.locked_until <= $5)"+unowned(Postgres, "t.partition_no"), 1)
		mock.ExpectQuery(one).WillReturnRows(sqlmock.NewRows(mockCols).
			AddRow(1, "e1", "stock", "stock.updated", "", 0, []byte{}, nil, mockNow, nil, 0, nil, mockNow, nil))
		claim, err := s.Claim(t.Context(), storage.ClaimRequest{Limit: 1, Lease: time.Minute, IDs: []string{"e1"}})
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		equalIDs(t, "claimed", ids(claim.Events), []string{"e1"})
	})
}
