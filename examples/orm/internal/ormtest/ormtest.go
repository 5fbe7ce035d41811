// Package ormtest sets up what the ORM examples' tests share: a Postgres
// schema of the test's own, an Outbox whose table lives in it, and a Redis
// stream key of the test's own on the real Redis or on miniredis.
package ormtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The environment variables that name the servers the tests use, as CI
// sets them.
const (
	// EnvPostgres holds the Postgres URL, such as
	// postgres://user@127.0.0.1:5432/db?sslmode=disable. Postgres skips the
	// test when it is unset.
	EnvPostgres = "OUTBOX_TEST_POSTGRES"
	// EnvRedis holds the Redis URL, such as redis://127.0.0.1:6379/0. When
	// it is unset, the tests use a miniredis of their own.
	EnvRedis = "OUTBOX_TEST_REDIS"
)

// Postgres creates a schema of the test's own and returns a connection URL
// whose search_path is that schema, so an ORM's unqualified tables land
// there. The schema is dropped when the test ends. It skips the test when
// OUTBOX_TEST_POSTGRES is unset.
func Postgres(t testing.TB) (dsn, schema string) {
	t.Helper()
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("set %s (postgres://...) to run against Postgres", EnvPostgres)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgres, err)
	}
	schema = "orm_" + randomHex(t)
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgres, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA "`+schema+`"`); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA "`+schema+`" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), schema
}

// Env is an Outbox with its table in a test's schema, publishing to a
// Redis stream of the test's own.
type Env struct {
	Outbox *outbox.Outbox        // saves into Store and publishes to Stream
	Store  *sqlstore.Store       // the outbox table, in the test's schema
	Redis  redis.UniversalClient // the real Redis or a miniredis; closed when the test ends
	Stream string                // the one stream key every event goes to; deleted when the test ends
}

// NewEnv creates the outbox table in schema through db (the ORM's own
// pool) and returns an Outbox over it that publishes with redisstream.
func NewEnv(t testing.TB, db *sql.DB, schema string) *Env {
	t.Helper()
	store, err := sqlstore.New(sqlx.NewDb(db, "pgx"), sqlstore.WithTable(schema+".outbox_events"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	client := redisClient(t)
	stream := "outbox-orm-test:" + schema
	t.Cleanup(func() { _ = client.Del(context.Background(), stream).Err() })
	pub, err := redisstream.New(client, redisstream.WithStream(func(*outbox.Event) string { return stream }))
	if err != nil {
		t.Fatal(err)
	}
	o, err := outbox.New(store, pub)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Outbox: o, Store: store, Redis: client, Stream: stream}
}

// RequireAbsent fails the test if the outbox table holds the event.
func (e *Env) RequireAbsent(t testing.TB, ev *outbox.Event) {
	t.Helper()
	if ev.ID == "" {
		t.Fatal("the event has no ID: Save never ran")
	}
	got, err := e.Store.Get(context.Background(), ev.ID)
	if !errors.Is(err, sqlstore.ErrNotFound) {
		t.Fatalf("event %s after rollback: got %+v, %v; want sqlstore.ErrNotFound", ev.ID, got, err)
	}
}

// RequireDelivered fails the test unless the test's stream holds exactly
// one entry, the event want describes (its Type, AggregateID and Payload,
// and its ID if set), and the outbox table has that event marked synced.
// It returns the event as delivered.
func (e *Env) RequireDelivered(t testing.TB, want *outbox.Event) *outbox.Event {
	t.Helper()
	ctx := context.Background()
	msgs, err := e.Redis.XRange(ctx, e.Stream, "-", "+").Result()
	if err != nil {
		t.Fatalf("read stream %s: %v", e.Stream, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("stream %s has %d entries, want 1", e.Stream, len(msgs))
	}
	got, err := redisstream.Decode(msgs[0].Values)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if (want.ID != "" && got.ID != want.ID) || got.Type != want.Type || got.AggregateID != want.AggregateID || string(got.Payload) != string(want.Payload) {
		t.Fatalf("delivered %s %s %s %s, want %s %s %s %s", got.ID, got.Type, got.AggregateID, got.Payload,
			want.ID, want.Type, want.AggregateID, want.Payload)
	}
	row, err := e.Store.Get(ctx, got.ID)
	if err != nil {
		t.Fatalf("event %s after commit: %v", got.ID, err)
	}
	if s := row.Delivery.Status(); s != outbox.StatusSynced {
		t.Fatalf("event %s: status %s, want %s (last error %q)", got.ID, s, outbox.StatusSynced, row.Delivery.LastError)
	}
	return got
}

// RequireStreamEmpty fails the test if anything reached the test's stream.
func (e *Env) RequireStreamEmpty(t testing.TB) {
	t.Helper()
	n, err := e.Redis.XLen(context.Background(), e.Stream).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", e.Stream, err)
	}
	if n != 0 {
		t.Fatalf("stream %s has %d entries, want none", e.Stream, n)
	}
}

// redisClient connects to OUTBOX_TEST_REDIS, or to a miniredis of the
// test's own when it is unset. A set but unreachable Redis fails the test.
func redisClient(t testing.TB) redis.UniversalClient {
	t.Helper()
	var client *redis.Client
	if u := os.Getenv(EnvRedis); u != "" {
		opts, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("%s: %v", EnvRedis, err)
		}
		client = redis.NewClient(opts)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := client.Ping(ctx).Err(); err != nil {
			_ = client.Close()
			t.Fatalf("%s is set but Redis is unreachable: %v", EnvRedis, err)
		}
	} else {
		srv := miniredis.RunT(t)
		client = redis.NewClient(&redis.Options{Addr: srv.Addr()})
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// randomHex returns 12 random hex digits, failing the test if it cannot.
func randomHex(t testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
