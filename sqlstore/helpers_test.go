package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// The environment variables that point the integration tests at servers.
// SQLite needs none: it runs on a file in the test's temporary directory.
const (
	envPostgres = "OUTBOX_TEST_POSTGRES" // postgres://user@127.0.0.1:5432/db?sslmode=disable
	envMySQL    = "OUTBOX_TEST_MYSQL"    // user@tcp(127.0.0.1:3306)/db
)

var allDialects = []Dialect{Postgres, MySQL, SQLite}

// testClock is a clock the tests move instead of sleeping.
type testClock struct {
	mu  sync.Mutex
	t   time.Time
	off time.Duration // advanced in all
}

func newTestClock() *testClock { return &testClock{t: utcNow()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.off += d
}

// Mono is the real clock moved by as much as Advance moved Now: the
// monotonic clock of a Store's partition ownership.
func (c *testClock) Mono() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// useClock makes s run on clock: its statements' times and its local
// lease clock.
func useClock(s *Store, clock *testClock) {
	s.now = clock.Now
	if o := ownerOf(s); o != nil {
		o.clock = clock.Mono
	}
}

// ownerOf returns the Store's partition ownership, nil with row leases.
func ownerOf(s *Store) *owner {
	o, _ := s.c.(*owner)
	return o
}

// bundle is what an integration test works with.
type bundle struct {
	store *Store
	db    *sqlx.DB
	clock *testClock
	table string
}

// openDB connects to the test database of d, or skips the test when its
// environment variable is unset. A server that is configured but
// unreachable fails the test. The database is closed at cleanup.
func openDB(t *testing.T, d Dialect) *sqlx.DB {
	t.Helper()
	var driver, dsn string
	switch d {
	case Postgres:
		dsn = os.Getenv(envPostgres)
		if dsn == "" {
			t.Skipf("Postgres tests skipped: set %s, e.g. %s='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'", envPostgres, envPostgres)
		}
		driver = "pgx"
	case MySQL:
		dsn = os.Getenv(envMySQL)
		if dsn == "" {
			t.Skipf("MySQL tests skipped: set %s to a go-sql-driver DSN, e.g. %s='root@tcp(127.0.0.1:3306)/test'", envMySQL, envMySQL)
		}
		driver = "mysql"
	case SQLite:
		path := filepath.Join(t.TempDir(), "outbox.db")
		dsn = "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)"
		driver = "sqlite"
	default:
		t.Fatalf("unknown dialect %q", d)
	}
	return open(t, driver, dsn)
}

func open(t *testing.T, driver, dsn string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("connect to %s test database: %v", driver, err)
	}
	return db
}

// mysqlDSN returns the configured MySQL DSN with changes applied.
func mysqlDSN(t *testing.T, change func(*mysql.Config)) string {
	t.Helper()
	dsn := os.Getenv(envMySQL)
	if dsn == "" {
		t.Skipf("MySQL tests skipped: set %s", envMySQL)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", envMySQL, err)
	}
	change(cfg)
	return cfg.FormatDSN()
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// setup returns a store of dialect d on a fresh, migrated table with a
// random name. Cleanup drops what Migrate created for that table (Drop)
// and nothing else.
func setup(t *testing.T, d Dialect, opts ...Option) *bundle {
	t.Helper()
	db := openDB(t, d)
	name := randomName("outbox_test_")
	s := newStore(t, db, name, opts...)
	clock := newTestClock()
	useClock(s, clock)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &bundle{store: s, db: db, clock: clock, table: name}
}

// newStore returns a store on table name and drops it (Drop) at cleanup.
func newStore(t *testing.T, db *sqlx.DB, name string, opts ...Option) *Store {
	t.Helper()
	s, err := New(db, append([]Option{WithTable(name)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return s
}

// eachDialect runs fn as a parallel subtest per dialect, on a fresh table.
func eachDialect(t *testing.T, fn func(t *testing.T, b *bundle)) {
	t.Helper()
	for _, d := range allDialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, d))
		})
	}
}

// newEvents returns n valid events created at the clock's time.
func (b *bundle) newEvents(n int) []*outbox.Event {
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{
			ID:          outbox.NewID(),
			Topic:       "stock",
			Type:        "stock.updated",
			AggregateID: fmt.Sprintf("sku-%d", i%5),
			Payload:     fmt.Appendf(nil, `{"n":%d}`, i),
			CreatedAt:   b.clock.Now(),
		}
	}
	return events
}

// save inserts events in a transaction of their own and commits it.
func (b *bundle) save(t *testing.T, events ...*outbox.Event) {
	t.Helper()
	tx, err := b.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := b.store.Insert(t.Context(), tx, events); err != nil {
		_ = tx.Rollback()
		t.Fatalf("insert: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// claim claims up to limit events for a minute and fails the test on error.
func (b *bundle) claim(t *testing.T, limit int, ids ...string) *outbox.Claim {
	t.Helper()
	c, err := b.store.Claim(t.Context(), storage.ClaimRequest{Limit: limit, Lease: time.Minute, IDs: ids})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return c
}

func ids(events []*outbox.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func equalIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d IDs %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: ID %d is %s, want %s (got %v, want %v)", what, i, got[i], want[i], got, want)
		}
	}
}

func wantN(t *testing.T, what string, n int, err error, want int) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n != want {
		t.Fatalf("%s changed %d rows, want %d", what, n, want)
	}
}

// insertOpen saves events in a transaction it leaves open (a late or a
// long transaction) and returns it; the test commits it, or it is rolled
// back when the test ends.
func (b *bundle) insertOpen(t *testing.T, events ...*outbox.Event) *sql.Tx {
	t.Helper()
	tx, err := b.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if err := b.store.Insert(t.Context(), tx, events); err != nil {
		t.Fatal(err)
	}
	return tx
}
