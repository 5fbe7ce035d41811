package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox/sqlstore"
)

// A database that cannot be reached is newApp's error, named, not a panic
// from closing what was never opened.
func TestNewAppFailsCleanly(t *testing.T) {
	t.Parallel()
	db, err := parseDatabaseURL("postgres://root@127.0.0.1:1/test?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	a, err := newApp(ctx, config{DB: db, Publisher: publisherNoop, Outbox: testOutbox()}, testLogger(t))
	if err == nil || a != nil {
		t.Fatalf("newApp = %v, %v; want an error", a, err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("the error does not name the database: %v", err)
	}
}

// Instances started at the same moment on an empty Postgres database all
// start: the business tables are created in turns.
func TestInstancesStartTogether(t *testing.T) {
	dsn := os.Getenv("OUTBOX_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("OUTBOX_TEST_POSTGRES is not set")
	}
	db, err := parseDatabaseURL(dsn)
	if err != nil {
		t.Fatal(err)
	}
	check, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { check.Close() })
	if err := check.PingContext(t.Context()); err != nil {
		t.Fatalf("OUTBOX_TEST_POSTGRES is set but unreachable: %v", err)
	}
	cfg := config{DB: db, Publisher: publisherNoop, Outbox: testOutbox(),
		tablePrefix: "inv_start_" + randomHex(t) + "_"}
	t.Cleanup(func() {
		ctx := context.Background()
		if store, err := sqlstore.New(check, sqlstore.WithTable(cfg.eventsTable())); err == nil {
			if err := store.Drop(ctx); err != nil {
				t.Errorf("drop %s: %v", cfg.eventsTable(), err)
			}
		}
		for _, table := range []string{cfg.stockTable(), cfg.reservationsTable()} {
			if _, err := check.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		}
	})
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			a, err := newApp(t.Context(), cfg, testLogger(t))
			if err != nil {
				errs <- err
				return
			}
			_ = a.close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("an instance did not start: %v", err)
	}
}
