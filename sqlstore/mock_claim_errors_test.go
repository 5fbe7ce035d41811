package sqlstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/eventsync/outbox/storage"
)

func TestMockClaimErrors(t *testing.T) {
	check := func(t *testing.T, s *Store, req storage.ClaimRequest) {
		t.Helper()
		c, err := s.Claim(t.Context(), req)
		if !errors.Is(err, errBoom) || c != nil || !strings.HasPrefix(err.Error(), "sqlstore: claim") {
			t.Fatalf("Claim = %v, %v; want nil and an error wrapping the driver's", c, err)
		}
	}
	ordered := storage.ClaimRequest{Limit: 10, Lease: time.Minute}
	unordered := storage.ClaimRequest{Limit: 10, Lease: time.Minute, Unordered: true}
	byID := storage.ClaimRequest{Limit: 10, Lease: time.Minute, IDs: []string{"e1", "e2"}}
	// One-statement claims.
	for _, tc := range []struct {
		c   claimSQL
		req storage.ClaimRequest
	}{
		{claimSQL{d: SQLite, ordered: true}, ordered},
		{claimSQL{d: SQLite}, unordered},
		{claimSQL{d: Postgres}, unordered},
		{claimSQL{d: Postgres, ordered: true, ids: 2}, byID},
	} {
		name := string(tc.c.d) + map[bool]string{true: "/ordered", false: "/unordered"}[tc.c.ordered]
		if tc.c.ids > 0 {
			name += " by IDs"
		}
		// On Postgres the statement runs in a transaction of its own
		// settings, which a failure rolls back.
		before := func(mock sqlmock.Sqlmock) {
			if tc.c.settingsTx() {
				mock.ExpectBegin()
				mock.ExpectExec(tc.c.settings()).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
			}
		}
		after := func(mock sqlmock.Sqlmock) {
			if tc.c.settingsTx() {
				mock.ExpectRollback()
			}
		}
		t.Run(name+"/query", func(t *testing.T) {
			s, mock := mockStore(t, tc.c.d)
			before(mock)
			mock.ExpectQuery(tc.c.stmt()).WillReturnError(errBoom)
			after(mock)
			check(t, s, tc.req)
		})
		t.Run(name+"/rows", func(t *testing.T) {
			s, mock := mockStore(t, tc.c.d)
			before(mock)
			mock.ExpectQuery(tc.c.stmt()).WillReturnRows(mockRows(tc.c.d).RowError(1, errBoom))
			after(mock)
			check(t, s, tc.req)
		})
	}
	// The ordered claim of Postgres: one statement in a transaction of its
	// settings; every failure after begin rolls it back.
	pg := claimSQL{d: Postgres, ordered: true}
	settingsOK := func(mock sqlmock.Sqlmock) {
		mock.ExpectBegin()
		mock.ExpectExec(pg.settings()).WithoutArgs().WillReturnResult(sqlmock.NewResult(0, 0))
	}
	t.Run("postgres/ordered/begin", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		mock.ExpectBegin().WillReturnError(errBoom)
		check(t, s, ordered)
	})
	t.Run("postgres/ordered/settings", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		mock.ExpectBegin()
		mock.ExpectExec(pg.settings()).WithoutArgs().WillReturnError(errBoom)
		mock.ExpectRollback()
		check(t, s, ordered)
	})
	t.Run("postgres/ordered/query", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		settingsOK(mock)
		mock.ExpectQuery(pg.stmt()).WillReturnError(errBoom)
		mock.ExpectRollback()
		check(t, s, ordered)
	})
	t.Run("postgres/ordered/rows", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		settingsOK(mock)
		mock.ExpectQuery(pg.stmt()).WillReturnRows(mockRows(Postgres).RowError(1, errBoom))
		mock.ExpectRollback()
		check(t, s, ordered)
	})
	t.Run("postgres/ordered/commit", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		settingsOK(mock)
		mock.ExpectQuery(pg.stmt()).WillReturnRows(mockRows(Postgres))
		mock.ExpectCommit().WillReturnError(errBoom)
		check(t, s, ordered)
	})
	t.Run("postgres/ordered/nothing due", func(t *testing.T) {
		s, mock := mockStore(t, Postgres)
		settingsOK(mock)
		mock.ExpectQuery(pg.stmt()).WillReturnRows(sqlmock.NewRows(mockCols))
		mock.ExpectCommit()
		claim, err := s.Claim(t.Context(), ordered)
		if err != nil || len(claim.Events) != 0 {
			t.Fatalf("Claim = %+v, %v; want an empty claim", claim, err)
		}
	})
	// The claim transactions of MySQL: every failure rolls the transaction
	// back.
	for _, tc := range []struct {
		c   claimSQL
		req storage.ClaimRequest
	}{
		{claimSQL{d: MySQL, ordered: true}, ordered},
		{claimSQL{d: MySQL}, unordered},
	} {
		name := string(tc.c.d) + map[bool]string{true: "/ordered", false: "/unordered"}[tc.c.ordered]
		c := tc.c
		// Ordered, the lock read finds aggregate a with two candidates,
		// which the check counts.
		lockRows, seqs := func() *sqlmock.Rows { return mockRows(c.d) }, []int64{2, 1}
		if c.ordered {
			lockRows, seqs = severalRows, []int64{1, 2, 3}
		}
		lockOK := func(mock sqlmock.Sqlmock) {
			mock.ExpectBegin()
			mock.ExpectQuery(c.lock()).WillReturnRows(lockRows())
			if c.ordered {
				mock.ExpectQuery(c.check(3)).WillReturnRows(countRows("a", 2))
			}
		}
		t.Run(name+"/begin", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			mock.ExpectBegin().WillReturnError(errBoom)
			check(t, s, tc.req)
		})
		t.Run(name+"/lock", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			mock.ExpectBegin()
			mock.ExpectQuery(c.lock()).WillReturnError(errBoom)
			mock.ExpectRollback()
			check(t, s, tc.req)
		})
		t.Run(name+"/lock rows", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			mock.ExpectBegin()
			mock.ExpectQuery(c.lock()).WillReturnRows(mockRows(c.d).RowError(1, errBoom))
			mock.ExpectRollback()
			check(t, s, tc.req)
		})
		if c.ordered {
			t.Run(name+"/check", func(t *testing.T) {
				s, mock := mockStore(t, c.d)
				mock.ExpectBegin()
				mock.ExpectQuery(c.lock()).WillReturnRows(severalRows())
				mock.ExpectQuery(c.check(3)).WillReturnError(errBoom)
				mock.ExpectRollback()
				check(t, s, tc.req)
			})
			t.Run(name+"/check rows", func(t *testing.T) {
				s, mock := mockStore(t, c.d)
				mock.ExpectBegin()
				mock.ExpectQuery(c.lock()).WillReturnRows(severalRows())
				mock.ExpectQuery(c.check(3)).WillReturnRows(countRows("a", 2).RowError(0, errBoom))
				mock.ExpectRollback()
				check(t, s, tc.req)
			})
		}
		t.Run(name+"/update", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			lockOK(mock)
			mock.ExpectExec(c.update(seqs...)).WillReturnError(errBoom)
			mock.ExpectRollback()
			check(t, s, tc.req)
		})
		t.Run(name+"/commit", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			lockOK(mock)
			mock.ExpectExec(c.update(seqs...)).WillReturnResult(sqlmock.NewResult(0, int64(len(seqs))))
			mock.ExpectCommit().WillReturnError(errBoom)
			check(t, s, tc.req)
		})
		t.Run(name+"/nothing due", func(t *testing.T) {
			s, mock := mockStore(t, c.d)
			mock.ExpectBegin()
			mock.ExpectQuery(c.lock()).WillReturnRows(sqlmock.NewRows(mockCols))
			mock.ExpectCommit()
			claim, err := s.Claim(t.Context(), tc.req)
			if err != nil || len(claim.Events) != 0 {
				t.Fatalf("Claim = %+v, %v; want an empty claim", claim, err)
			}
		})
	}
	t.Run("invalid request", func(t *testing.T) {
		s, _ := mockStore(t, SQLite)
		for _, r := range []storage.ClaimRequest{{Limit: 0, Lease: time.Second}, {Limit: 1, Lease: 0}} {
			if _, err := s.Claim(t.Context(), r); err == nil {
				t.Errorf("Claim(%+v) succeeded", r)
			}
		}
	})
}
