package sqlstore

import (
	"database/sql/driver"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

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
	col := func(c string) string {
		if o.d == MySQL {
			return "CAST(" + c + " AS CHAR)"
		}
		return c
	}
	return ph(o.d, "SELECT COUNT(*), "+col("MIN(CASE WHEN owner <> ? THEN seen_until END)")+", "+col(o.now())+
		" FROM "+o.relays()+" WHERE seen_until > "+o.now())
}

func (o ownSQL) countParts() string { return "SELECT COUNT(*) FROM " + o.parts() }

func (o ownSQL) renew() string {
	return ph(o.d, "UPDATE "+o.parts()+" SET lease_until = "+o.later()+" WHERE owner = ? AND lease_until > "+o.now())
}

func (o ownSQL) readOwned() string {
	return ph(o.d, "SELECT partition_no, token FROM "+o.parts()+" WHERE owner = ? AND lease_until > "+o.now())
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
	var steps []renewStep
	if d == MySQL {
		steps = append(steps, renewStep{name: "bound",
			ok: func(m sqlmock.Sqlmock) {
				m.ExpectExec(mysqlBound).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
			},
			fail: func(m sqlmock.Sqlmock, err error) { m.ExpectExec(mysqlBound).WithoutArgs().WillReturnError(err) }})
	}
	steps = append(steps, []renewStep{
		{name: "begin",
			ok:   func(m sqlmock.Sqlmock) { m.ExpectBegin() },
			fail: func(m sqlmock.Sqlmock, err error) { m.ExpectBegin().WillReturnError(err) }},
	}...)
	if d == Postgres {
		steps = append(steps, exec("bound", "SET LOCAL idle_in_transaction_session_timeout = "+fmt.Sprint(mockTTL.Milliseconds())))
	}
	steps = append(steps,
		exec("register", o.register(), mockRelay, o.laterArg(mockTTL)),
		exec("forget dead relays", o.forget(), o.laterArg(-24*time.Hour)),
		query("count relays", o.countRelays(), func() *sqlmock.Rows {
			return sqlmock.NewRows([]string{"n", "lapse", "now"}).AddRow(live, nil, mockTime(d, mockNow))
		}, mockRelay),
		query("count partitions", o.countParts(), count(2)),
		exec("renew", o.renew(), o.laterArg(mockTTL), mockRelay),
		query("read owned", o.readOwned(), owned(before), mockRelay),
	)
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
	if d == MySQL {
		steps = append(steps, renewStep{name: "reset", ok: expectReset, fail: func(m sqlmock.Sqlmock, _ error) { expectReset(m) }})
	}
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

// stepIndex returns the index of the step named name.
func stepIndex(steps []renewStep, name string) int {
	for i, st := range steps {
		if st.name == name {
			return i
		}
	}
	panic("no step " + name)
}

// The statements that bound a MySQL heartbeat's connection and put the
// session's default back.
const (
	mysqlBound = "SET SESSION wait_timeout = 75" // mockTTL
	mysqlReset = "SET SESSION wait_timeout = DEFAULT"
)

func expectReset(m sqlmock.Sqlmock) {
	m.ExpectExec(mysqlReset).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
}

// expectAfterFailure expects what a heartbeat runs after its step failed:
// the rollback of its transaction, and on MySQL the reset of the bound.
func expectAfterFailure(m sqlmock.Sqlmock, d Dialect, st renewStep) {
	if st.inTx {
		m.ExpectRollback()
	}
	if d == MySQL && st.name != "bound" && st.name != "read dead aggregates" {
		expectReset(m)
	}
}
