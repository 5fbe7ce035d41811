package inbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
)

// bundle is what a test needs: a database, an inbox on a table of its own
// (migrated, dropped at the end) and a business table beside it.
type bundle struct {
	db       *sqlx.DB
	in       *Inbox
	business string // a table (id, n) the handlers write to
}

var envOf = map[string]string{"postgres": "OUTBOX_TEST_POSTGRES", "mysql": "OUTBOX_TEST_MYSQL"}

// forEachDatabase runs fn against SQLite (always), and Postgres and
// MariaDB/MySQL when their variable is set (failing when it is set but the
// server cannot be reached).
func forEachDatabase(t *testing.T, fn func(t *testing.T, b *bundle)) {
	t.Helper()
	for _, name := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, name))
		})
	}
}

func setup(t *testing.T, name string) *bundle {
	t.Helper()
	var driver, dsn string
	switch name {
	case "sqlite":
		// BEGIN IMMEDIATE, as Process's documentation asks, and several
		// connections, so that consumers really run at once.
		driver, dsn = "sqlite", "file:"+filepath.Join(t.TempDir(), "inbox.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	case "postgres":
		driver, dsn = "pgx", os.Getenv(envOf[name])
	case "mysql":
		driver, dsn = "mysql", os.Getenv(envOf[name])
	}
	if dsn == "" {
		t.Skipf("set %s to run against a real server", envOf[name])
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("%s is set but the server cannot be reached: %v", envOf[name], err)
	}
	suffix := randomHex(6)
	table, business := "inbox_test_"+suffix, "business_"+suffix
	in, err := New(db, WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, tb := range []string{table, table + "_migrations", business} {
			if _, err := db.Exec("DROP TABLE IF EXISTS " + tb); err != nil {
				t.Errorf("drop %s: %v", tb, err)
			}
		}
	})
	if err := in.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+business+" (id VARCHAR(64) PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return &bundle{db: db, in: in, business: business}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newEvent() *outbox.Event {
	return &outbox.Event{ID: outbox.NewID(), Topic: "inventory", Type: "stock.updated", AggregateID: "a", Payload: []byte("{}")}
}

// count is a handler's business write: it adds one to the event's row.
func (b *bundle) count(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error {
	q := tx.Rebind("UPDATE " + b.business + " SET n = n + 1 WHERE id = ?")
	res, err := tx.ExecContext(ctx, q, e.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		_, err = tx.ExecContext(ctx, tx.Rebind("INSERT INTO "+b.business+" (id, n) VALUES (?, 1)"), e.ID)
	}
	return err
}

func (b *bundle) n(t *testing.T, id string) int {
	t.Helper()
	var n int
	err := b.db.QueryRowx(b.db.Rebind("SELECT COALESCE(SUM(n), 0) FROM "+b.business+" WHERE id = ?"), id).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestProcessOnceThenSkip(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		e := newEvent()
		for i, want := range []bool{true, false, false} {
			tx, err := b.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			ran, err := b.in.Process(ctx, tx, e, func(ctx context.Context, e *outbox.Event) error { return b.count(ctx, tx, e) })
			if err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if ran != want {
				t.Errorf("delivery %d: ran %v, want %v", i, ran, want)
			}
		}
		if n := b.n(t, e.ID); n != 1 {
			t.Errorf("business row counted %d times, want 1", n)
		}
		if ok, err := b.in.Processed(ctx, e.ID); err != nil || !ok {
			t.Errorf("Processed = %v, %v", ok, err)
		}
	})
}

// A handler that fails rolls back its writes and the record together: the
// redelivery processes the event.
func TestFailedHandlerLeavesNoRecord(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		e := newEvent()
		boom := errors.New("downstream refused")
		ran, err := b.in.Handle(ctx, e, func(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error {
			if err := b.count(ctx, tx, e); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || ran {
			t.Fatalf("Handle = %v, %v; want the handler's error", ran, err)
		}
		if ok, _ := b.in.Processed(ctx, e.ID); ok || b.n(t, e.ID) != 0 {
			t.Fatal("a failed handler left its record or its writes")
		}
		ran, err = b.in.Handle(ctx, e, b.count)
		if err != nil || !ran || b.n(t, e.ID) != 1 {
			t.Fatalf("redelivery: ran %v, err %v, count %d", ran, err, b.n(t, e.ID))
		}
	})
}

// Several consumers receive the same events at the same time (a
// redelivery racing the first delivery): each event's handler commits
// once.
func TestConcurrentConsumersProcessEachEventOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		const consumers, events = 6, 20
		evs := make([]*outbox.Event, events)
		for i := range evs {
			evs[i] = newEvent()
		}
		var ran atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, consumers*events)
		for c := range consumers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range evs {
					e := evs[(i+c)%events] // consumers meet on different events
					for attempt := 0; ; attempt++ {
						ok, err := b.in.Handle(ctx, e, func(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error {
							time.Sleep(time.Millisecond) // hold the row while the others arrive
							return b.count(ctx, tx, e)
						})
						if err != nil && attempt < 20 && retryable(err) {
							continue // a deadlock victim or busy database: the consumer redelivers
						}
						if err != nil {
							errs <- fmt.Errorf("consumer %d, event %s: %w", c, e.ID, err)
						}
						if ok {
							ran.Add(1)
						}
						break
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := ran.Load(); got != events {
			t.Errorf("handlers committed %d times for %d events", got, events)
		}
		for _, e := range evs {
			if n := b.n(t, e.ID); n != 1 {
				t.Errorf("event %s processed %d times", e.ID, n)
			}
		}
	})
}

// retryable reports a transaction a database aborted for concurrency:
// MySQL's deadlock victim, SQLite's busy database.
func retryable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Deadlock") || strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "database is locked")
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- b.in.Migrate(ctx)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		var n int
		if err := b.db.QueryRow("SELECT COUNT(*) FROM " + b.in.t.MigrationsTable()).Scan(&n); err != nil || n != 1 {
			t.Errorf("migrations recorded: %d, %v; want 1", n, err)
		}
	})
}

func TestPurge(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		old, recent := newEvent(), newEvent()
		b.in.now = func() time.Time { return utcNow().Add(-2 * time.Hour) }
		if _, err := b.in.Handle(ctx, old, b.count); err != nil {
			t.Fatal(err)
		}
		b.in.now = utcNow
		if _, err := b.in.Handle(ctx, recent, b.count); err != nil {
			t.Fatal(err)
		}
		n, err := b.in.Purge(ctx, time.Hour)
		if err != nil || n != 1 {
			t.Fatalf("Purge = %d, %v; want 1", n, err)
		}
		if ok, _ := b.in.Processed(ctx, recent.ID); !ok {
			t.Error("the recent record was purged")
		}
	})
}

func TestNewAndSchema(t *testing.T) {
	t.Parallel()
	db := sqlx.NewDb(nil, "sqlite")
	for _, name := range []string{"1abc", "a;drop", "a.b", strings.Repeat("x", 49)} {
		if _, err := New(db, WithTable(name)); !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Errorf("WithTable(%q): %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := New(sqlx.NewDb(nil, "oracle")); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("unknown driver: %v", err)
	}
	if _, err := New(nil); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("nil db: %v", err)
	}
	for _, d := range []Dialect{Postgres, MySQL, SQLite} {
		s, err := Schema(d, "consumed")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, DefaultTable) || !strings.Contains(s, "consumed_processed_idx") {
			t.Errorf("%s schema not renamed:\n%s", d, s)
		}
	}
	in, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Process(context.Background(), nil, newEvent(), nil); !errors.Is(err, outbox.ErrNilExecutor) {
		t.Errorf("nil tx: %v", err)
	}
}
