package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
	"github.com/eventsync/outbox/storage"
)

func TestMockMarkSynced(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		stmt := ph(d, "UPDATE "+quotedTable(d)+" SET synced_at = ?, claim_token = NULL, locked_until = NULL WHERE claim_token = ? AND "+
			inSQL(d, "id", 2, false))
		args := concat([]driver.Value{mockTime(d, mockNow), "tok"}, idArgs(d, "e1", "e2"))
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnResult(sqlmock.NewResult(0, 2))
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnError(errBoom)
		n, err := s.MarkSynced(t.Context(), "tok", []string{"e1", "e2"})
		wantN(t, "MarkSynced", n, err, 2)
		n, err = s.MarkSynced(t.Context(), "tok", []string{"e1", "e2"})
		if !errors.Is(err, errBoom) || n != 0 || !strings.HasPrefix(err.Error(), "sqlstore: mark synced") {
			t.Fatalf("failed MarkSynced = %d, %v", n, err)
		}
		// Nothing to mark: no statement at all.
		n, err = s.MarkSynced(t.Context(), "tok", nil)
		wantN(t, "empty MarkSynced", n, err, 0)
	})
}

func TestMockRelease(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		stmt := ph(d, "UPDATE "+quotedTable(d)+" SET claim_token = NULL, locked_until = NULL WHERE claim_token = ? AND "+
			inSQL(d, "id", 1, false))
		args := concat([]driver.Value{"tok"}, idArgs(d, "e1"))
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnResult(sqlmock.NewResult(0, 1))
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnError(errBoom)
		n, err := s.Release(t.Context(), "tok", []string{"e1"})
		wantN(t, "Release", n, err, 1)
		if _, err := s.Release(t.Context(), "tok", []string{"e1"}); !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: release") {
			t.Fatalf("failed Release: %v", err)
		}
	})
}

func TestMockFail(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		castText, castTime := "?", "?"
		switch d {
		case Postgres:
			castText, castTime = "CAST(? AS TEXT)", "CAST(? AS TIMESTAMPTZ)"
		case MySQL:
			castTime = "CAST(? AS DATETIME(6))"
		}
		stmt := ph(d, "UPDATE "+quotedTable(d)+" SET attempts = attempts + 1, "+
			"last_error = CASE id WHEN ? THEN "+castText+" WHEN ? THEN "+castText+" WHEN ? THEN "+castText+" END, "+
			"next_attempt_at = CASE id WHEN ? THEN "+castTime+" WHEN ? THEN "+castTime+" ELSE next_attempt_at END, "+
			"dead_at = CASE WHEN "+inSQL(d, "id", 1, false)+" THEN "+castTime+" ELSE dead_at END, "+
			"claim_token = NULL, locked_until = NULL WHERE claim_token = ? AND "+inSQL(d, "id", 3, false))
		args := concat(
			[]driver.Value{"e1", "down", "e2", "poison", "e3", "slow"},
			[]driver.Value{"e1", mockTime(d, mockNow.Add(10*time.Second)), "e3", mockTime(d, mockNow.Add(time.Hour))},
			idArgs(d, "e2"), []driver.Value{mockTime(d, mockNow)},
			[]driver.Value{"tok"}, idArgs(d, "e1", "e2", "e3"),
		)
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnResult(sqlmock.NewResult(0, 3))
		mock.ExpectExec(stmt).WithArgs(args...).WillReturnError(errBoom)
		failures := []storage.Failure{
			{ID: "e1", Err: "down", Delay: 10 * time.Second},
			{ID: "e2", Err: "poison", Dead: true, Delay: time.Minute},
			{ID: "e3", Err: "slow", Delay: time.Hour},
		}
		n, err := s.Fail(t.Context(), "tok", failures)
		wantN(t, "Fail", n, err, 3)
		if _, err := s.Fail(t.Context(), "tok", failures); !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: fail") {
			t.Fatalf("failed Fail: %v", err)
		}
	})
}

func TestMockFailOnlyDead(t *testing.T) {
	s, mock := mockStore(t, SQLite)
	mock.ExpectExec(`UPDATE "outbox_events" SET attempts = attempts + 1, last_error = CASE id WHEN ? THEN ? END, `+
		`dead_at = CASE WHEN id IN (?) THEN ? ELSE dead_at END, claim_token = NULL, locked_until = NULL `+
		`WHERE claim_token = ? AND id IN (?)`).
		WithArgs("e1", strings.Repeat("x", storage.MaxErrorLength), "e1", mockNow.Format(sqlschema.TimeLayout), "tok", "e1").
		WillReturnResult(sqlmock.NewResult(0, 1))
	n, err := s.Fail(t.Context(), "tok", []storage.Failure{{ID: "e1", Err: strings.Repeat("x", storage.MaxErrorLength), Dead: true}})
	wantN(t, "Fail", n, err, 1)
}

// A mark that fails after the broker acknowledged the batch is reported,
// and the store changes nothing else: the events stay leased, and are
// claimed and published again when the lease ends (a duplicate with the
// same ID, never a loss).
func TestMockMarkFailsAfterPublish(t *testing.T) {
	s, mock := mockStore(t, SQLite)
	mock.ExpectQuery(claimSQL{d: SQLite, ordered: true}.single()).WillReturnRows(mockRows(SQLite))
	for range 3 { // the relay tries the mark three times before giving up
		mock.ExpectExec(`UPDATE "outbox_events" SET synced_at = ?, claim_token = NULL, locked_until = NULL WHERE claim_token = ? AND id IN (?, ?)`).
			WillReturnError(errBoom)
	}
	published := 0
	pub := outbox.PublisherFunc(func(_ context.Context, events []*outbox.Event) error {
		published += len(events)
		return nil
	})
	w, err := outbox.New(s, pub)
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.SyncPending(t.Context(), 10)
	if !errors.Is(err, errBoom) {
		t.Fatalf("SyncPending error = %v, want the mark failure", err)
	}
	if published != 2 || res.Claimed != 2 || res.Synced != 0 {
		t.Fatalf("published %d, result %+v", published, res)
	}
}
