package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
)

// Unit tests of the exact statements each dialect sends, and of every
// database error path, on go-sqlmock.

var (
	errBoom  = errors.New("boom")
	mockNow  = time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC)
	mockCols = []string{"seq", "id", "topic", "event_type", "aggregate_id", "priority", "payload", "headers",
		"created_at", "synced_at", "attempts", "last_error", "next_attempt_at", "dead_at"}
)

// mockStore returns a store of dialect d over sqlmock that leases rows
// (WithRowLeases), matching statements exactly, with its clock stopped at
// mockNow.
func mockStore(t *testing.T, d Dialect) (*Store, sqlmock.Sqlmock) {
	t.Helper()
	return newMockStore(t, d, WithRowLeases())
}

// newMockStore returns a store of dialect d with opts over sqlmock,
// matching statements exactly, with its clock stopped at mockNow.
func newMockStore(t *testing.T, d Dialect, opts ...Option) (*Store, sqlmock.Sqlmock) {
	t.Helper()
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	driverName := map[Dialect]string{Postgres: "pgx", MySQL: "mysql", SQLite: "sqlite"}[d]
	s, err := New(sqlx.NewDb(db, driverName), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dialect() != d {
		t.Fatalf("driver %q detected as %q, want %q", driverName, s.Dialect(), d)
	}
	s.now = func() time.Time { return mockNow }
	t.Cleanup(func() {
		if err := mock.ExpectationsWereMet(); err != nil {
			t.Error(err)
		}
		_ = db.Close()
	})
	return s, mock
}

// mockTime is how dialect d sends t.
func mockTime(d Dialect, t time.Time) driver.Value {
	if d == Postgres {
		return t
	}
	return t.Format(sqlschema.TimeLayout)
}

// ph numbers the placeholders of a statement written with '?' in the
// dialect's style.
func ph(d Dialect, stmt string) string {
	if d != Postgres {
		return stmt
	}
	var b strings.Builder
	n := 0
	for _, r := range stmt {
		if r == '?' {
			n++
			b.WriteString(sqlschema.Dollar(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// table returns the default table, quoted for d.
func quotedTable(d Dialect) string {
	if d == MySQL {
		return "`outbox_events`"
	}
	return `"outbox_events"`
}

func columnsSQL(d Dialect) string {
	if d == MySQL {
		return "seq, id, topic, event_type, aggregate_id, priority, payload, headers, CAST(created_at AS CHAR) AS created_at, " +
			"CAST(synced_at AS CHAR) AS synced_at, attempts, last_error, CAST(next_attempt_at AS CHAR) AS next_attempt_at, " +
			"CAST(dead_at AS CHAR) AS dead_at"
	}
	return "seq, id, topic, event_type, aggregate_id, priority, payload, headers, created_at AS created_at, synced_at AS synced_at, " +
		"attempts, last_error, next_attempt_at AS next_attempt_at, dead_at AS dead_at"
}

// pgClaimColumns is the select list of the ordered claim of Postgres,
// whose UPDATE names the table t.
const pgClaimColumns = "t.seq, t.id, t.topic, t.event_type, t.aggregate_id, t.priority, t.payload, t.headers, " +
	"t.created_at AS created_at, t.synced_at AS synced_at, t.attempts, t.last_error, " +
	"t.next_attempt_at AS next_attempt_at, t.dead_at AS dead_at"

// inSQL is the condition that col is (with not: is not) one of n IDs, as
// dialect d writes it: one TEXT[] parameter on Postgres, n placeholders
// elsewhere. Its arguments are idArgs.
func inSQL(d Dialect, col string, n int, not bool) string {
	if d == Postgres {
		if not {
			return col + " <> ALL(CAST(? AS TEXT[]))"
		}
		return col + " = ANY(CAST(? AS TEXT[]))"
	}
	list := "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
	if not {
		return col + " NOT IN " + list
	}
	return col + " IN " + list
}

// idArgs are the arguments of inSQL for ids: on Postgres one array
// literal, every element quoted (the IDs here need no escaping).
func idArgs(d Dialect, ids ...string) []driver.Value {
	if d == Postgres {
		return []driver.Value{`{"` + strings.Join(ids, `","`) + `"}`}
	}
	args := make([]driver.Value, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return args
}

// concat joins argument lists.
func concat(lists ...[]driver.Value) []driver.Value {
	var all []driver.Value
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

func eachMockDialect(t *testing.T, fn func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock)) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			s, mock := mockStore(t, d)
			fn(t, d, s, mock)
		})
	}
}

func mockEvents() []*outbox.Event {
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) // as outbox.Save leaves it: UTC, to the microsecond
	return []*outbox.Event{
		{ID: "e1", Topic: "stock", Type: "stock.updated", AggregateID: "sku-1", Payload: []byte{0, 1}, CreatedAt: created,
			Headers: map[string]string{"b": "2", "a": "1"}},
		{ID: "e2", Topic: "stock", Type: "stock.updated", CreatedAt: created, Priority: -3},
	}
}

func insertSQL(d Dialect) string {
	return ph(d, "INSERT INTO "+quotedTable(d)+" (id, topic, event_type, aggregate_id, priority, payload, headers, created_at, next_attempt_at) "+
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?)")
}

func insertArgs(d Dialect) []driver.Value {
	created := mockTime(d, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	now := mockTime(d, mockNow)
	return []driver.Value{
		"e1", "stock", "stock.updated", "sku-1", 0, []byte{0, 1}, `{"a":"1","b":"2"}`, created, now,
		"e2", "stock", "stock.updated", "", -3, []byte{}, nil, created, now,
	}
}

func TestMockInsert(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		mock.ExpectBegin()
		mock.ExpectExec(insertSQL(d)).WithArgs(insertArgs(d)...).WillReturnResult(sqlmock.NewResult(2, 2))
		mock.ExpectExec(insertSQL(d)).WithArgs(insertArgs(d)...).WillReturnError(errBoom)
		mock.ExpectRollback()
		tx, err := s.db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Insert(t.Context(), tx, mockEvents()); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		err = s.Insert(t.Context(), tx, mockEvents())
		if !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: ") {
			t.Fatalf("failed Insert: %v, want an error wrapping the driver's, prefixed sqlstore:", err)
		}
		// Insert never ends the caller's transaction: the rollback is ours.
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInsertChunksPastParameterLimit(t *testing.T) {
	s, _ := mockStore(t, SQLite)
	perStmt := s.sx.maxParams / insertColumns
	events := make([]*outbox.Event, perStmt+1)
	for i := range events {
		events[i] = &outbox.Event{ID: outbox.NewID(), Topic: "t", Type: "x", CreatedAt: mockNow}
	}
	var exec countingExec
	if err := s.Insert(t.Context(), &exec, events); err != nil {
		t.Fatal(err)
	}
	if len(exec.args) != 2 || exec.args[0] != perStmt*insertColumns || exec.args[1] != insertColumns {
		t.Fatalf("statements carried %v parameters, want [%d %d]", exec.args, perStmt*insertColumns, insertColumns)
	}
}

func TestInsertChunksLargePayloadsOnMySQL(t *testing.T) {
	s, _ := mockStore(t, MySQL)
	big := make([]byte, 3<<20)
	events := make([]*outbox.Event, 5)
	for i := range events {
		events[i] = &outbox.Event{ID: outbox.NewID(), Topic: "t", Type: "x", Payload: big, CreatedAt: mockNow}
	}
	var exec countingExec
	if err := s.Insert(t.Context(), &exec, events); err != nil {
		t.Fatal(err)
	}
	if want := []int{2 * insertColumns, 2 * insertColumns, insertColumns}; !slices.Equal(exec.args, want) {
		t.Fatalf("statements carried %v parameters, want %v", exec.args, want)
	}
}

// countingExec records how many parameters each statement carries.
type countingExec struct{ args []int }

func (c *countingExec) ExecContext(_ context.Context, _ string, args ...any) (sql.Result, error) {
	c.args = append(c.args, len(args))
	return sqlmock.NewResult(0, 0), nil
}
