package outboxui

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// The environment variables that point the tests at servers and at the
// browser.
const (
	envPostgres = "OUTBOX_TEST_POSTGRES" // postgres://user@127.0.0.1:5432/db?sslmode=disable
	envRedis    = "OUTBOX_TEST_REDIS"    // redis://127.0.0.1:6379/0
	envChromium = "OUTBOX_TEST_CHROMIUM" // the Chromium binary; /usr/bin/chromium when unset
	envShots    = "OUTBOX_UI_SCREENSHOTS"
)

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// bundle is what a console test works with: a store on a table of its
// own, its database, and the console mounted under /outbox/.
type bundle struct {
	db    *sqlx.DB
	store *sqlstore.Store
	table string
	srv   *httptest.Server
	base  string // the console's URL, ending in a slash
}

// openPostgres connects to the test database, or skips the test when
// OUTBOX_TEST_POSTGRES is unset; a server that is configured but
// unreachable fails it.
func openPostgres(t testing.TB) *sqlx.DB {
	t.Helper()
	dsn := os.Getenv(envPostgres)
	if dsn == "" {
		t.Skipf("console tests skipped: set %s, e.g. %s='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'", envPostgres, envPostgres)
	}
	db, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("%s is set but Postgres is unreachable: %v", envPostgres, err)
	}
	return db
}

// newStore returns a store on a fresh, migrated table, dropped at
// cleanup.
func newStore(t testing.TB, db *sqlx.DB, table string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.New(db, sqlstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	return s
}

// setup returns a bundle on a fresh table with the console built with
// opts and mounted under /outbox/.
func setup(t *testing.T, opts ...Option) *bundle {
	t.Helper()
	db := openPostgres(t)
	table := randomName("outboxui_test_")
	b := &bundle{db: db, table: table, store: newStore(t, db, table)}
	h, err := New(b.store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", h))
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	b.base = b.srv.URL + "/outbox/"
	return b
}

// save inserts events in a transaction of their own.
func (b *bundle) save(t testing.TB, events ...*outbox.Event) {
	t.Helper()
	tx, err := b.db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.store.Insert(context.Background(), tx, events); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// exec runs a statement on the test's table: %s in stmt is the table.
func (b *bundle) exec(t testing.TB, stmt string, args ...any) int64 {
	t.Helper()
	res, err := b.db.Exec(fmt.Sprintf(stmt, `"`+b.table+`"`), args...)
	if err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
	n, _ := res.RowsAffected()
	return n
}

// count returns SELECT COUNT(*) FROM the table WHERE cond.
func (b *bundle) count(t testing.TB, cond string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := b.db.Get(&n, fmt.Sprintf(`SELECT COUNT(*) FROM "%s" WHERE %s`, b.table, cond), args...); err != nil {
		t.Fatal(err)
	}
	return n
}

// event returns an event of topic with a JSON payload.
func event(id, topic, typ, agg string, created time.Time) *outbox.Event {
	return &outbox.Event{
		ID: id, Topic: topic, Type: typ, AggregateID: agg, CreatedAt: created.UTC().Truncate(time.Microsecond),
		Payload: fmt.Appendf(nil, `{"sku":%q,"delta":-1,"warehouse":"ams-1"}`, agg),
		Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
}

// seed fills the table with a realistic picture: synced events spread
// over the last hour (latencies of 5 to 300 ms), pending events of three
// types (some of them failed once), and dead events of two types, on
// topic. It returns the IDs of the dead events.
func (b *bundle) seed(t testing.TB, topic string) (dead []string) {
	t.Helper()
	now := time.Now().UTC()
	var events []*outbox.Event
	for i := range 720 {
		// More in recent minutes, with a dip: a shape worth drawing.
		ago := time.Duration(i*i%3500) * time.Second
		events = append(events, event(fmt.Sprintf("syn-%04d", i), topic, "stock.updated", fmt.Sprintf("sku-%d", i%40), now.Add(-ago)))
	}
	types := []string{"stock.updated", "reservation.created", "reservation.cancelled"}
	for i := range 37 {
		events = append(events, event(fmt.Sprintf("pen-%04d", i), topic, types[i%3], fmt.Sprintf("sku-%d", 100+i%9), now.Add(-time.Duration(37-i)*time.Second)))
	}
	for i := range 6 {
		id := fmt.Sprintf("dead-%04d", i)
		typ := []string{"reservation.created", "payment.captured"}[i%2]
		events = append(events, event(id, topic, typ, fmt.Sprintf("order-%d", i), now.Add(-time.Duration(90+i)*time.Minute)))
		dead = append(dead, id)
	}
	b.save(t, events...)
	b.exec(t, `UPDATE %s SET synced_at = created_at + make_interval(secs => (5 + (seq * 37) %% 295) / 1000.0) WHERE id LIKE 'syn-%%'`)
	b.exec(t, `UPDATE %s SET attempts = 1, last_error = 'redis: connection refused', next_attempt_at = now() + interval '30 seconds' WHERE id IN ('pen-0003', 'pen-0010', 'pen-0020')`)
	b.exec(t, `UPDATE %s SET attempts = 20, dead_at = now() - interval '1 hour', last_error = 'redisstream: XADD '||topic||': OOM command not allowed when used memory > ''maxmemory''' WHERE id LIKE 'dead-%%'`)
	return dead
}

// redisClient returns a client on OUTBOX_TEST_REDIS, or skips the test
// when it is unset; a server that is configured but unreachable fails it.
func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	u := os.Getenv(envRedis)
	if u == "" {
		t.Skipf("skipped: set %s, e.g. %s=redis://127.0.0.1:6379/0", envRedis, envRedis)
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("%s: %v", envRedis, err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s is set but Redis is unreachable: %v", envRedis, err)
	}
	return c
}
