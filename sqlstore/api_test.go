package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

func TestMigrate(t *testing.T) {
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db := openDB(t, d)
			s := newStore(t, db, randomName("outbox_mig_"))
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() { errs[i] = s.Migrate(ctx) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("concurrent Migrate: %v", err)
				}
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
			migTable := s.t.MigrationsTable()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+migTable).Scan(&n); err != nil {
				t.Fatal(err)
			}
			ms, err := ddl.Migrations(d)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(ms) {
				t.Fatalf("%d migrations recorded, want %d", n, len(ms))
			}
			// The table works.
			b := &bundle{store: s, db: db, clock: newTestClock()}
			b.save(t, b.newEvents(1)...)

			// A schema newer than the code is refused.
			if _, err := db.ExecContext(ctx, "INSERT INTO "+migTable+" (version, name, applied_at) VALUES (999, 'future', '2030-01-01 00:00:00')"); err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(ctx); !errors.Is(err, ErrSchemaTooNew) {
				t.Fatalf("Migrate on a newer schema: %v, want ErrSchemaTooNew", err)
			}
		})
	}
}

func TestClosedTransaction(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		tx, err := b.db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		err = b.store.Insert(t.Context(), tx, b.newEvents(1))
		if !errors.Is(err, sql.ErrTxDone) {
			t.Fatalf("Insert on a committed tx: %v, want sql.ErrTxDone", err)
		}
	})
}

func TestCancelledContext(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		events := b.newEvents(1)
		b.save(t, events...)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		tx, err := b.db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := b.store.Insert(ctx, tx, b.newEvents(1)); !errors.Is(err, context.Canceled) {
			t.Errorf("Insert: %v, want context.Canceled", err)
		}
		if _, err := b.store.Claim(ctx, storage.ClaimRequest{Limit: 1, Lease: time.Minute}); !errors.Is(err, context.Canceled) {
			t.Errorf("Claim: %v, want context.Canceled", err)
		}
		if _, err := b.store.MarkSynced(ctx, "token", ids(events)); !errors.Is(err, context.Canceled) {
			t.Errorf("MarkSynced: %v, want context.Canceled", err)
		}
		if _, err := b.store.Fail(ctx, "token", []storage.Failure{{ID: events[0].ID}}); !errors.Is(err, context.Canceled) {
			t.Errorf("Fail: %v, want context.Canceled", err)
		}
		if err := b.store.Migrate(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Migrate: %v, want context.Canceled", err)
		}
	})
}

func TestReadAPI(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		start := b.clock.Now()
		events := b.newEvents(5) // created at start
		events[4].Type = "reservation.created"
		b.save(t, events...)
		b.clock.Advance(90 * time.Second)

		c := b.claim(t, 3) // events 0, 1, 2
		n, err := b.store.MarkSynced(ctx, c.Token, ids(events[:2]))
		wantN(t, "MarkSynced", n, err, 2)
		n, err = b.store.Fail(ctx, c.Token, []storage.Failure{{ID: events[2].ID, Err: "bad", Dead: true}})
		wantN(t, "Fail", n, err, 1)

		if _, err := b.store.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(missing): %v, want ErrNotFound", err)
		}
		got, err := b.store.Get(ctx, events[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Delivery.SyncedAt.Equal(b.clock.Now()) || !got.CreatedAt.Equal(start) {
			t.Fatalf("Get: created %v synced %v, want %v and %v", got.CreatedAt, got.Delivery.SyncedAt, start, b.clock.Now())
		}

		list := func(f ListFilter) []string {
			t.Helper()
			evs, err := b.store.List(ctx, f)
			if err != nil {
				t.Fatalf("List(%+v): %v", f, err)
			}
			return ids(evs)
		}
		equalIDs(t, "pending", list(ListFilter{Status: outbox.StatusPending}), ids(events[3:]))
		equalIDs(t, "synced", list(ListFilter{Status: outbox.StatusSynced}), []string{events[1].ID, events[0].ID})
		equalIDs(t, "dead", list(ListFilter{Status: outbox.StatusDead}), []string{events[2].ID})
		equalIDs(t, "by type", list(ListFilter{Type: "reservation.created"}), []string{events[4].ID})
		equalIDs(t, "all, limited", list(ListFilter{Limit: 2}), []string{events[4].ID, events[3].ID})
		if _, err := b.store.List(ctx, ListFilter{Status: "lost"}); err == nil {
			t.Fatal("List with an unknown status succeeded")
		}

		st, err := b.store.Stats(ctx, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		want := outbox.Stats{
			Pending:          2,
			PendingByType:    map[string]int64{"stock.updated": 1, "reservation.created": 1},
			OldestPendingAge: 90 * time.Second,
			Synced:           2,
			Dead:             1,
		}
		if st.Pending != want.Pending || st.Synced != want.Synced || st.Dead != want.Dead ||
			st.OldestPendingAge != want.OldestPendingAge || !maps.Equal(st.PendingByType, want.PendingByType) {
			t.Fatalf("Stats = %+v, want %+v", st, want)
		}
	})
}

// IDs are the caller's to choose. On Postgres a list of them travels as
// one array literal, so IDs that such a literal could misread (quotes,
// backslashes, commas, braces, spaces, the word NULL) must each still
// name exactly its own event when claimed by ID, marked, released and
// failed.
func TestAwkwardIDs(t *testing.T) {
	eachDialect(t, func(t *testing.T, b *bundle) {
		ctx := t.Context()
		awkward := []string{`a"b`, `c\d`, `e,f`, `{g}`, ` h `, `NULL`, `i\"j`, `"`, `\`}
		events := b.newEvents(len(awkward) + 1)
		for i, id := range awkward {
			events[i].ID = id
			events[i].AggregateID = "" // no order between them: any subset may be claimed
		}
		events[len(awkward)].AggregateID = ""
		b.save(t, events...)

		c := b.claim(t, 100, awkward...)
		equalIDs(t, "claim by awkward IDs", ids(c.Events), awkward)
		n, err := b.store.Release(ctx, c.Token, awkward[:3])
		wantN(t, "Release", n, err, 3)
		n, err = b.store.Fail(ctx, c.Token, []storage.Failure{{ID: awkward[3], Err: "x", Delay: time.Hour}, {ID: awkward[4], Err: "y", Dead: true}})
		wantN(t, "Fail", n, err, 2)
		n, err = b.store.MarkSynced(ctx, c.Token, awkward[5:])
		wantN(t, "MarkSynced", n, err, len(awkward)-5)
		for i, id := range awkward {
			e, err := b.store.Get(ctx, id)
			if err != nil {
				t.Fatalf("Get(%q): %v", id, err)
			}
			var want outbox.Status
			switch {
			case i < 4:
				want = outbox.StatusPending
			case i == 4:
				want = outbox.StatusDead
			default:
				want = outbox.StatusSynced
			}
			if got := e.Delivery.Status(); got != want {
				t.Errorf("event %q: status %s, want %s", id, got, want)
			}
		}
		// The event that was never named is untouched.
		if e, err := b.store.Get(ctx, events[len(awkward)].ID); err != nil || e.Delivery.Status() != outbox.StatusPending || e.Delivery.Attempts != 0 {
			t.Fatalf("unnamed event: %+v, %v", e, err)
		}
	})
}
