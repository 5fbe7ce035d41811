package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/sqlstore"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(relayChild(cfg)) // a relay process of the partition tests
	}
	goleak.VerifyTestMain(m,
		// database/sql keeps one opener goroutine per *sql.DB until Close;
		// every DB here is closed in t.Cleanup, so none is left at the end.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// database is one of the SQL servers the tests run against.
type database struct {
	name   string
	driver string
	dsn    func(t *testing.T) string // "" means skip, with a reason
}

var databases = []database{
	{"sqlite", "sqlite", func(t *testing.T) string {
		return "file:" + filepath.Join(t.TempDir(), "outbox.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)"
	}},
	{"postgres", "pgx", func(t *testing.T) string { return os.Getenv("OUTBOX_TEST_POSTGRES") }},
	{"mysql", "mysql", func(t *testing.T) string { return os.Getenv("OUTBOX_TEST_MYSQL") }},
}

var envOf = map[string]string{"postgres": "OUTBOX_TEST_POSTGRES", "mysql": "OUTBOX_TEST_MYSQL"}

// forEachDatabase runs fn as a subtest per database. SQLite always runs;
// Postgres and MySQL run when their env var is set and fail when it is set
// but the server cannot be reached.
func forEachDatabase(t *testing.T, fn func(t *testing.T, db *sqlx.DB, store *sqlstore.Store)) {
	for _, d := range databases {
		t.Run(d.name, func(t *testing.T) {
			dsn := d.dsn(t)
			if dsn == "" {
				t.Skipf("set %s to run against a real server", envOf[d.name])
			}
			db, err := sqlx.Open(d.driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := db.PingContext(ctx); err != nil {
				t.Fatalf("%s is set but the server cannot be reached: %v", envOf[d.name], err)
			}
			if d.name == "sqlite" {
				db.SetMaxOpenConns(1)
			}
			table := "e2e_" + randomHex(6)
			store, err := sqlstore.New(db, sqlstore.WithTable(table))
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := store.Drop(context.Background()); err != nil {
					t.Errorf("drop %s: %v", table, err)
				}
			})
			fn(t, db, store)
		})
	}
}

// broker is a Redis the test may take away and give back: the real one
// behind a proxy when OUTBOX_TEST_REDIS is set, else an in-process one.
type broker struct {
	client *redis.Client // talks through the proxy
	direct *redis.Client // talks to the server, to read what arrived
	proxy  *testproxy.Proxy
	prefix string
}

func newBroker(t *testing.T) *broker {
	t.Helper()
	addr := ""
	var opt *redis.Options
	if url := os.Getenv("OUTBOX_TEST_REDIS"); url != "" {
		var err error
		if opt, err = redis.ParseURL(url); err != nil {
			t.Fatalf("OUTBOX_TEST_REDIS: %v", err)
		}
		addr = opt.Addr
	} else {
		t.Logf("Redis: an in-process miniredis; set OUTBOX_TEST_REDIS (e.g. %s) to run against a real server", "redis://127.0.0.1:6379/0")
		mr := miniredis.RunT(t)
		addr, opt = mr.Addr(), &redis.Options{Addr: mr.Addr()}
	}
	p, err := testproxy.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{proxy: p, prefix: "e2e:" + randomHex(6) + ":"}
	direct := *opt
	b.direct = redis.NewClient(&direct)
	through := *opt
	through.Addr = p.Addr()
	through.MaxRetries = -1 // a cut connection must fail the publish, not be retried inside go-redis
	through.DialTimeout = 200 * time.Millisecond
	b.client = redis.NewClient(&through)
	ctx := context.Background()
	if err := b.direct.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis cannot be reached: %v", err)
	}
	t.Cleanup(func() {
		keys, _ := b.direct.Keys(ctx, b.prefix+"*").Result()
		if len(keys) > 0 {
			b.direct.Del(ctx, keys...)
		}
		b.client.Close()
		b.direct.Close()
		p.Close()
	})
	return b
}

// ids returns the event IDs in stream, in stream order.
func (b *broker) ids(t *testing.T, stream string) []string {
	t.Helper()
	msgs, err := b.direct.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i], _ = m.Values["id"].(string)
	}
	return out
}

// testLogger sends slog records to t.Log, which shows them only when the
// test fails: the relay's own account of what went wrong.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustNoErr(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
	}
}

// transactErr is the error of a Transact, whose result the caller does
// not need.
func transactErr(_ outbox.Result, err error) error { return err }
