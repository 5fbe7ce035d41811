package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

func TestMockPurge(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		tbl := quotedTable(d)
		stmt := ph(d, "DELETE FROM "+tbl+" WHERE seq IN (SELECT seq FROM "+tbl+
			" WHERE synced_at IS NOT NULL AND synced_at < ? ORDER BY synced_at LIMIT ?)")
		if d == MySQL {
			stmt = "DELETE FROM " + tbl + " WHERE synced_at IS NOT NULL AND synced_at < ? ORDER BY synced_at LIMIT ?"
		}
		cutoff := mockTime(d, mockNow.Add(-time.Hour))
		mock.ExpectExec(stmt).WithArgs(cutoff, 100).WillReturnResult(sqlmock.NewResult(0, 42))
		mock.ExpectExec(stmt).WithArgs(cutoff, 100).WillReturnError(errBoom)
		n, err := s.Purge(t.Context(), time.Hour, 100)
		wantN(t, "Purge", n, err, 42)
		if _, err := s.Purge(t.Context(), time.Hour, 100); !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: purge") {
			t.Fatalf("failed Purge: %v", err)
		}
		if _, err := s.Purge(t.Context(), time.Hour, 0); err == nil {
			t.Fatal("Purge with limit 0 succeeded")
		}
	})
}

func TestMockRequeue(t *testing.T) {
	eachMockDialect(t, func(t *testing.T, d Dialect, s *Store, mock sqlmock.Sqlmock) {
		label := "? || last_error"
		if d == MySQL {
			label = "CONCAT(?, last_error)"
		}
		base := "UPDATE " + quotedTable(d) + " SET dead_at = NULL, attempts = 0, next_attempt_at = ?, " +
			"claim_token = NULL, locked_until = NULL, last_error = " + label + " WHERE synced_at IS NULL AND dead_at IS NOT NULL"
		now := mockTime(d, mockNow)
		mock.ExpectExec(ph(d, base+" AND event_type = ? AND "+inSQL(d, "id", 2, false))).
			WithArgs(concat([]driver.Value{now, RequeuedErrorPrefix, "t"}, idArgs(d, "e1", "e2"))...).
			WillReturnResult(sqlmock.NewResult(0, 2))
		mock.ExpectExec(ph(d, base)).WithArgs(now, RequeuedErrorPrefix).WillReturnResult(sqlmock.NewResult(0, 7))
		mock.ExpectExec(ph(d, base+" AND event_type = ?")).WithArgs(now, RequeuedErrorPrefix, "t").WillReturnError(errBoom)
		n, err := s.Requeue(t.Context(), RequeueFilter{IDs: []string{"e1", "e2", "e1"}, Type: "t"})
		wantN(t, "Requeue by IDs and type", n, err, 2)
		n, err = s.Requeue(t.Context(), RequeueFilter{All: true})
		wantN(t, "Requeue all", n, err, 7)
		if _, err := s.Requeue(t.Context(), RequeueFilter{Type: "t"}); !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "sqlstore: requeue") {
			t.Fatalf("failed Requeue: %v", err)
		}
		// Refused without a statement.
		if _, err := s.Requeue(t.Context(), RequeueFilter{}); !errors.Is(err, ErrEmptyFilter) {
			t.Fatalf("empty filter: %v, want ErrEmptyFilter", err)
		}
		if _, err := s.Requeue(t.Context(), RequeueFilter{IDs: []string{}}); !errors.Is(err, ErrEmptyFilter) {
			t.Fatalf("empty ID list: %v, want ErrEmptyFilter", err)
		}
		if _, err := s.Requeue(t.Context(), RequeueFilter{All: true, Type: "t"}); !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Fatalf("All with a type: %v", err)
		}
	})
}

func TestPurge(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		old := b.run("A", 3)
		b.save(t, old...)
		c := b.claim(t, 10)
		b.mark(t, c, old...) // synced now
		pending, dead := b.event("P", 0), b.event("D", 0)
		b.save(t, pending, dead)
		c = b.claim(t, 10, dead.ID)
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{{ID: dead.ID, Err: "x", Dead: true}})
		wantN(t, "Fail", n, err, 1)
		b.clock.Advance(2 * time.Hour)
		recent := b.run("B", 1)
		b.save(t, recent...)
		c = b.claim(t, 10, recent[0].ID)
		b.mark(t, c, recent...) // synced two hours after the others

		n, err = b.store.Purge(ctx, time.Hour, 2)
		wantN(t, "Purge, limited", n, err, 2)
		n, err = b.store.Purge(ctx, time.Hour, 100)
		wantN(t, "Purge, the rest", n, err, 1)
		n, err = b.store.Purge(ctx, time.Hour, 100)
		wantN(t, "Purge, nothing left", n, err, 0)
		for _, e := range []*outbox.Event{pending, dead, recent[0]} {
			if _, err := b.store.Get(ctx, e.ID); err != nil {
				t.Fatalf("event %s gone after purge: %v", e.ID, err)
			}
		}
		b.clock.Advance(365 * 24 * time.Hour)
		n, err = b.store.Purge(ctx, time.Hour, 100)
		wantN(t, "Purge a year later", n, err, 1) // never pending or dead
	})
}

func TestRequeue(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		a := b.run("A", 2)
		other := b.event("B", 0)
		other.Type = "stock.reserved"
		third := b.event("C", 0)
		b.save(t, append(a, other, third)...)
		c := b.claim(t, 10)
		equalIDs(t, "claimed", ids(c.Events), []string{a[0].ID, a[1].ID, other.ID, third.ID})
		n, err := b.store.Fail(ctx, c.Token, []storage.Failure{
			{ID: a[0].ID, Err: "poison", Dead: true}, {ID: other.ID, Err: "bad", Dead: true}, {ID: third.ID, Err: "bad", Dead: true}})
		wantN(t, "Fail", n, err, 3)
		n, err = b.store.Release(ctx, c.Token, []string{a[1].ID}) // held back behind a[0]
		wantN(t, "Release", n, err, 1)
		if c := b.claim(t, 10); len(c.Events) != 0 {
			t.Fatalf("claimed %v with every head dead", ids(c.Events))
		}

		n, err = b.store.Requeue(ctx, RequeueFilter{IDs: []string{a[0].ID, a[1].ID}}) // a[1] is not dead
		wantN(t, "Requeue by ID", n, err, 1)
		back := b.claim(t, 10)
		equalIDs(t, "re-queued head and its successor", ids(back.Events), ids(a))
		// The error that buried it is kept, labelled as history.
		if d := back.Events[0].Delivery; d.Attempts != 0 || d.LastError != RequeuedErrorPrefix+"poison" || d.Status() != outbox.StatusPending {
			t.Fatalf("re-queued event: %+v", d)
		}
		// Once delivered, it reads as history, not as the outcome of its
		// delivery.
		n, err = b.store.MarkSynced(ctx, back.Token, ids(back.Events))
		wantN(t, "MarkSynced", n, err, 2)
		if got, err := b.store.Get(ctx, a[0].ID); err != nil || got.Delivery.Status() != outbox.StatusSynced || got.Delivery.LastError != "before requeue: poison" {
			t.Fatalf("re-queued event, delivered: %+v, %v", got, err)
		}
		n, err = b.store.Requeue(ctx, RequeueFilter{Type: "stock.reserved"})
		wantN(t, "Requeue by type", n, err, 1)
		n, err = b.store.Requeue(ctx, RequeueFilter{All: true})
		wantN(t, "Requeue all", n, err, 1)
		equalIDs(t, "the rest", ids(b.claim(t, 10).Events), []string{other.ID, third.ID})
		n, err = b.store.Requeue(ctx, RequeueFilter{All: true})
		wantN(t, "Requeue with nothing dead", n, err, 0)
		st, err := b.store.Stats(ctx, 24*time.Hour)
		if err != nil || st.Dead != 0 {
			t.Fatalf("stats %+v, %v", st, err)
		}
	})
}

func TestCountDead(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		count := func(what, typ string, want int64) {
			t.Helper()
			n, err := b.store.CountDead(ctx, typ)
			if err != nil || n != want {
				t.Fatalf("CountDead(%q) %s: %d, %v; want %d", typ, what, n, err, want)
			}
		}
		count("on an empty table", "", 0)

		// Three buried updates, two buried reservations; a pending update
		// and a synced reservation are not counted.
		var updated, reserved []*outbox.Event
		for i := range 4 {
			updated = append(updated, b.event(fmt.Sprintf("U%d", i), 0))
		}
		for i := range 3 {
			e := b.event(fmt.Sprintf("R%d", i), 0)
			e.Type = "stock.reserved"
			reserved = append(reserved, e)
		}
		b.save(t, append(slices.Clone(updated), reserved...)...)
		c := b.claim(t, 10)
		if len(c.Events) != 7 {
			t.Fatalf("claimed %d events, want 7", len(c.Events))
		}
		var failures []storage.Failure
		for _, e := range append(slices.Clone(updated[:3]), reserved[:2]...) {
			failures = append(failures, storage.Failure{ID: e.ID, Err: "poison", Dead: true})
		}
		n, err := b.store.Fail(ctx, c.Token, failures)
		wantN(t, "Fail", n, err, 5)
		b.mark(t, c, reserved[2])
		n, err = b.store.Release(ctx, c.Token, []string{updated[3].ID})
		wantN(t, "Release", n, err, 1)

		count("in all", "", 5)
		count("of a type", "stock.updated", 3)
		count("of the other type", "stock.reserved", 2)
		count("of an unknown type", "stock.none", 0)
		st, err := b.store.Stats(ctx, 0)
		if err != nil || st.Dead != 5 {
			t.Fatalf("Stats: %+v, %v; want 5 dead like CountDead", st, err)
		}

		n, err = b.store.Requeue(ctx, RequeueFilter{Type: "stock.updated"})
		wantN(t, "Requeue by type", n, err, 3)
		count("after re-queuing the type", "stock.updated", 0)
		count("in all after re-queuing a type", "", 2)
	})
}

func TestListenOnlyPostgres(t *testing.T) {
	for _, d := range []Dialect{MySQL, SQLite} {
		s, _ := mockStore(t, d)
		if err := s.Listen(t.Context(), func() { t.Error("woken") }); err != nil {
			t.Fatalf("%s: Listen = %v, want nil at once", d, err)
		}
	}
}

func TestListen(t *testing.T) {
	b := setup(t, Postgres)
	ctx, cancel := context.WithCancel(t.Context())
	var wakes atomic.Int64
	woke := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- b.store.Listen(ctx, func() {
			wakes.Add(1)
			woke <- struct{}{}
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Listen = %v, want nil after ctx ends", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Listen did not return after ctx ended")
		}
	}()
	// The listener's backend, found by its LISTEN statement on this test's
	// own channel, so that only it is ever terminated.
	pid := func() int {
		var pid int
		q := "SELECT pid FROM pg_stat_activity WHERE query = $1"
		waitUntil(t, "the listener to connect", func() bool {
			return b.db.QueryRowContext(t.Context(), q, `LISTEN "`+b.store.Channel()+`"`).Scan(&pid) == nil
		})
		return pid
	}
	first := pid()
	drain := func() {
		for {
			select {
			case <-woke:
			default:
				return
			}
		}
	}
	expectWake := func(what string) {
		t.Helper()
		select {
		case <-woke:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up %s", what)
		}
	}

	// A rolled-back insert notifies nobody; a committed one does.
	tx, err := b.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.store.Insert(t.Context(), tx, b.run("A", 2)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	b.save(t, b.run("A", 3)...)
	expectWake("after commit")
	// Only the commit woke it: a wake for the rollback would have come
	// first, and NOTIFY keeps a session's notifications in order.
	time.Sleep(50 * time.Millisecond)
	if n := wakes.Load(); n != 1 {
		t.Fatalf("%d wake-ups for one commit and one rollback, want 1", n)
	}

	// Kill the listener's connection: it reconnects, wakes once to catch
	// up, and hears the next commit.
	if _, err := b.db.ExecContext(t.Context(), "SELECT pg_terminate_backend($1)", first); err != nil {
		t.Fatal(err)
	}
	expectWake("after reconnecting")
	second := pid()
	if second == first {
		t.Fatal("listener did not reconnect")
	}
	drain()
	b.save(t, b.run("B", 1)...)
	expectWake("after commit on the new connection")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
