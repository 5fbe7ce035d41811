package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
)

// TestEndToEnd runs the service against real servers: Postgres (and
// MySQL/MariaDB when OUTBOX_TEST_MYSQL is set) and Redis, reached through
// a TCP proxy that the test cuts mid-run and restores. Every committed
// event must reach the stream, in commit order per stock item. Each run
// has its own tables and stream key, and removes only those.
func TestEndToEnd(t *testing.T) {
	redisURL := os.Getenv("OUTBOX_TEST_REDIS")
	pgURL := os.Getenv("OUTBOX_TEST_POSTGRES")
	if redisURL == "" || pgURL == "" {
		t.Skip("set OUTBOX_TEST_POSTGRES (postgres://...) and OUTBOX_TEST_REDIS (redis://...) to run against real servers")
	}
	t.Run("postgres", func(t *testing.T) {
		db, err := parseDatabaseURL(pgURL)
		if err != nil {
			t.Fatalf("OUTBOX_TEST_POSTGRES: %v", err)
		}
		endToEnd(t, db, redisURL)
	})
	t.Run("mysql", func(t *testing.T) {
		endToEnd(t, mysqlTestConfig(t), redisURL)
	})
}

// mysqlTestConfig is the database of OUTBOX_TEST_MYSQL (a go-sql-driver
// DSN) as the service opens it, times parsed in UTC; without the variable
// it skips t, naming it.
func mysqlTestConfig(t *testing.T) dbConfig {
	t.Helper()
	dsn := os.Getenv("OUTBOX_TEST_MYSQL")
	if dsn == "" {
		t.Skip("set OUTBOX_TEST_MYSQL (user@tcp(host:3306)/db) to run against MySQL/MariaDB")
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_MYSQL: %v", err)
	}
	mc.ParseTime, mc.Loc = true, time.UTC
	return dbConfig{Driver: "mysql", DSN: mc.FormatDSN(), Safe: "mysql"}
}

func endToEnd(t *testing.T, db dbConfig, redisURL string) {
	ctx := context.Background()
	suffix := randomHex(t)

	// Redis, directly (to read the stream and clean up) and through the proxy.
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS: %v", err)
	}
	direct := redis.NewClient(ropts)
	t.Cleanup(func() { direct.Close() })
	if err := direct.Ping(ctx).Err(); err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS is set but Redis is unreachable: %v", err)
	}
	proxy, err := testproxy.Start(ropts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	u, _ := url.Parse(redisURL)
	u.Host = proxy.Addr()

	// The database: fail, not skip, when it is configured but down.
	check, err := sqlx.Open(db.Driver, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { check.Close() })
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := check.PingContext(pctx); err != nil {
		t.Fatalf("the %s test database is set but unreachable: %v", db.Driver, err)
	}

	cfg := config{
		DB:          db,
		Publisher:   publisherRedis,
		RedisURL:    u.String(),
		Topic:       "inventory.e2e." + suffix,
		Outbox:      testOutbox(),
		tablePrefix: "inv_e2e_" + suffix + "_",
	}
	t.Cleanup(func() {
		if store, err := sqlstore.New(check, sqlstore.WithTable(cfg.eventsTable())); err != nil {
			t.Errorf("drop %s: %v", cfg.eventsTable(), err)
		} else if err := store.Drop(ctx); err != nil {
			t.Errorf("drop %s: %v", cfg.eventsTable(), err)
		}
		for _, table := range []string{cfg.stockTable(), cfg.reservationsTable()} {
			if _, err := check.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		}
		if err := direct.Del(ctx, cfg.Topic).Err(); err != nil {
			t.Errorf("delete stream %s: %v", cfg.Topic, err)
		}
	})
	a, err := newApp(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	t.Cleanup(func() { a.close() })
	startRelay(t, a)
	srv := httptest.NewServer(a.api.routes())
	t.Cleanup(srv.Close)

	// Writers: each owns its stock items, so commit order per item is the
	// order of its requests.
	const writers, perWriter = 4, 30
	var (
		mu        sync.Mutex
		committed = map[string][]string{} // aggregate -> event IDs in commit order
		all       = map[string]bool{}
		deferred  atomic.Int64 // events the immediate publish did not deliver
		done      atomic.Int64
		failed    atomic.Bool
		wg        sync.WaitGroup
	)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				product := fmt.Sprintf("p%d", i%4) // stocked by i = 0..3, then reserved from and restocked
				path, body := "/stock", fmt.Sprintf(`{"store_id":"w%d","product_id":"%s","quantity":%d}`, w, product, 100+i)
				if i >= 4 && i%2 == 1 {
					path, body = "/reservations", fmt.Sprintf(`{"store_id":"w%d","product_id":"%s","quantity":1}`, w, product)
				}
				ref, err := post(srv.URL+path, body)
				if err != nil {
					errs <- err
					failed.Store(true)
					return
				}
				mu.Lock()
				agg := aggregateID(fmt.Sprintf("w%d", w), product)
				committed[agg] = append(committed[agg], ref.ID)
				all[ref.ID] = true
				mu.Unlock()
				if !ref.Published {
					deferred.Add(1)
				}
				done.Add(1)
			}
		}()
	}

	// Cut Redis away a third of the way in, give it back at two thirds.
	total := int64(writers * perWriter)
	waitFor(t, func() bool { return failed.Load() || done.Load() >= total/3 })
	proxy.Cut()
	t.Logf("Redis cut after %d writes", done.Load())
	waitFor(t, func() bool { return failed.Load() || done.Load() >= 2*total/3 })
	proxy.Restore()
	t.Logf("Redis restored after %d writes", done.Load())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a write failed: %v", err)
	}
	if deferred.Load() == 0 {
		t.Error("no event was left to the relay: the cut did not happen while writing")
	}
	waitSynced(t, a, total)

	entries, err := direct.XRange(ctx, cfg.Topic, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	order := map[string][]string{} // first arrivals per aggregate
	for _, x := range entries {
		e, err := redisstream.Decode(x.Values)
		if err != nil {
			t.Fatalf("entry %s: %v", x.ID, err)
		}
		if !all[e.ID] {
			t.Errorf("the stream holds event %s, which no write committed", e.ID)
		}
		if seen[e.ID]++; seen[e.ID] == 1 {
			order[e.AggregateID] = append(order[e.AggregateID], e.ID)
		}
	}
	dups := 0
	for id := range all {
		switch n := seen[id]; {
		case n == 0:
			t.Errorf("committed event %s never reached the stream", id)
		case n > 1:
			dups++ // an acknowledgement lost in the cut: at-least-once allows it
		}
	}
	for agg, ids := range committed {
		if strings.Join(ids, ",") != strings.Join(order[agg], ",") {
			t.Errorf("%s: events reached the stream out of commit order; commit positions in stream order: %v", agg, positions(ids, order[agg]))
		}
	}
	t.Logf("%d events committed, %d left to the relay by the cut, %d stream entries, %d duplicates", total, deferred.Load(), len(entries), dups)
}

// post sends a write and returns its event.
func post(url, body string) (EventRef, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return EventRef{}, err
	}
	defer resp.Body.Close()
	var out struct {
		Event EventRef `json:"event"`
		Error string   `json:"error"`
	}
	if err := jsonDecode(resp, &out); err != nil {
		return EventRef{}, err
	}
	if resp.StatusCode/100 != 2 || out.Event.ID == "" {
		return EventRef{}, fmt.Errorf("POST %s: %s: %s", url, resp.Status, out.Error)
	}
	return out.Event, nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randomHex(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
