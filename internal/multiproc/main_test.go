package multiproc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventsync/outbox/sqlstore"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(relayChild(cfg)) // a relay process of these tests
	}
	goleak.VerifyTestMain(m,
		// database/sql keeps one opener goroutine per *sql.DB until Close;
		// every DB here is closed in t.Cleanup.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// database is one of the SQL servers the tests run against.
type database struct {
	name, driver, env string
	now               string // the database's clock, in SQL
}

var (
	postgres = database{"postgres", "pgx", "OUTBOX_TEST_POSTGRES", "now()"}
	mariadb  = database{"mysql", "mysql", "OUTBOX_TEST_MYSQL", "UTC_TIMESTAMP(6)"}
)

// fixture is one table and one stream, and what the relay processes on
// them were told to write.
type fixture struct {
	t      *testing.T
	d      database
	db     *sqlx.DB
	redis  *redis.Client
	cfg    childConfig // Name set per relay
	events *ledger
}

// setup makes a table and a stream of the test's own on the servers of
// d and OUTBOX_TEST_REDIS, removed when the test ends. Without the
// variables it skips the test, naming them; with them set and a server
// unreachable it fails it.
func setup(t *testing.T, d database) *fixture {
	t.Helper()
	dsn, redisURL := os.Getenv(d.env), os.Getenv("OUTBOX_TEST_REDIS")
	if dsn == "" || redisURL == "" {
		t.Skipf("set %s and OUTBOX_TEST_REDIS to run relay processes against real servers", d.env)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := sqlx.Open(d.driver, dsn)
	mustNoErr(t, err, "open %s", d.env)
	t.Cleanup(func() { db.Close() })
	mustNoErr(t, db.PingContext(ctx), "%s is set but the server cannot be reached", d.env)
	ropt, err := redis.ParseURL(redisURL)
	mustNoErr(t, err, "OUTBOX_TEST_REDIS")
	rc := redis.NewClient(ropt)
	t.Cleanup(func() { rc.Close() })
	mustNoErr(t, rc.Ping(ctx).Err(), "OUTBOX_TEST_REDIS is set but Redis cannot be reached")

	suffix := randomHex(6)
	table := "mp_" + suffix
	store, err := sqlstore.New(db, sqlstore.WithTable(table))
	mustNoErr(t, err, "sqlstore.New")
	mustNoErr(t, store.Migrate(ctx), "migrate")
	stream := "multiproc:" + suffix + ":events"
	t.Cleanup(func() {
		ctx := context.Background()
		if err := store.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
		if err := rc.Del(ctx, stream).Err(); err != nil {
			t.Errorf("delete %s: %v", stream, err)
		}
	})
	return &fixture{t: t, d: d, db: db, redis: rc, events: newLedger(),
		cfg: childConfig{Driver: d.driver, DSN: dsn, Table: table, Redis: ropt.Addr, Stream: stream, IntervalMillis: 100}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func mustNoErr(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf(format+": %v", append(args, err)...)
	}
}
