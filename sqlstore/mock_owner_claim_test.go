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
	"github.com/eventsync/outbox/storage"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

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
			at := stepIndex(steps, "renew")
			for _, st := range steps[:at] {
				st.ok(mock)
			}
			steps[at].fail(mock, deadlockErr(d))
			expectAfterFailure(mock, d, steps[at])
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
				if st.name == "reset" {
					continue // its failure fails nothing: the connection is dropped
				}
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
					expectAfterFailure(mock, d, st)
					_, _, err := ownerOf(s).heartbeat(t.Context())
					if !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: heartbeat: ") {
						t.Fatalf("renewal: %v, want an error wrapping the driver's", err)
					}
					if st.name == "read dead aggregates" {
						// The renewal committed: the ledger owns what
						// the table says, so that Leave gives it back.
						want = map[int]int64{0: 5, 1: 7}
						if sc.name == "give back" {
							want = map[int]int64{0: 5}
						}
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
				for _, st := range steps[:stepIndex(steps, "read owned")] {
					st.ok(mock)
				}
				mock.ExpectQuery(ownSQL{d}.readOwned()).WithArgs(mockRelay).
					WillReturnRows(ownedRows(0, 5, 1, 7).RowError(1, errBoom))
				expectAfterFailure(mock, d, steps[stepIndex(steps, "read owned")])
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
		for _, st := range steps[:stepIndex(steps, "count partitions")] {
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
			ownSQL{d}.now() + map[Dialect]string{Postgres: " FOR SHARE SKIP LOCKED", MySQL: " LOCK IN SHARE MODE SKIP LOCKED"}[d] + ")"
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
