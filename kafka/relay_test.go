package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"
)

// TestRelayClusterOutage runs the relay, over sqlstore and this publisher,
// through a Kafka outage: events saved before the cluster became
// unreachable stay pending while it is (their attempts counted, none
// buried nor marked synced), and once it is back a running relay delivers
// every one of them, in per-aggregate order, well before its interval, and
// marks them synced.
//
// The cluster is cut off behind proxies, so the test runs on the cluster
// of OUTBOX_TEST_KAFKA as well as on kfake; the store is SQLite, and
// Postgres too when OUTBOX_TEST_POSTGRES is set.
func TestRelayClusterOutage(t *testing.T) {
	t.Parallel()
	EachStoreDB(t, "outbox_kafka_outage_", testRelayOutage)
}

// EachStoreDB runs test in a subtest on an SQLite database of its own (a
// file, WAL) with the table outbox_events, and when OUTBOX_TEST_POSTGRES
// is set on Postgres with a table named prefix plus random hex, dropped at
// cleanup. The relay tests of this package and of kafka_test share it.
func EachStoreDB(t *testing.T, prefix string, test func(t *testing.T, db *sqlx.DB, table string)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dsn := "file:" + filepath.Join(t.TempDir(), "outbox.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)"
		db, err := sqlx.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		test(t, db, "outbox_events")
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("OUTBOX_TEST_POSTGRES")
		if dsn == "" {
			t.Skip("Postgres skipped: set OUTBOX_TEST_POSTGRES, e.g. postgres://root@127.0.0.1:5432/test?sslmode=disable")
		}
		t.Parallel()
		db, err := sqlx.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		table := fmt.Sprintf("%s%08x", prefix, rand.Uint32())
		t.Cleanup(func() {
			store, err := sqlstore.New(db, sqlstore.WithTable(table))
			if err == nil {
				err = store.Drop(context.Background())
			}
			if err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		})
		test(t, db, table)
	})
}

// relayInterval is the relay's interval in testRelayOutage: long, so that
// a relay that waited for it after the outage would be plain to see.
// relayRecovery is how soon after the cluster's return the relay must
// have delivered the backlog: sarama's own circuit breaker of a partition
// whose leader it could not look up stays open for 10 seconds, and the
// relay's probes come at most a second apart; the rest is slack for a
// busy machine.
const (
	relayInterval = time.Minute
	relayRecovery = 20 * time.Second
)

func testRelayOutage(t *testing.T, db *sqlx.DB, table string) {
	ctx := context.Background()
	c := newCluster(t)
	topic := c.topic(t, 3)
	px := c.proxied(t)

	store, err := sqlstore.New(db, sqlstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	pub := openPublisher(t, px.bootstrap(), px.cfg)
	// The relay's breaker probes at most a second apart (5s by default),
	// to keep the test short.
	ob, err := outbox.New(store, pub,
		outbox.WithInterval(relayInterval),
		outbox.WithTimeout(15*time.Second),
		outbox.WithBreaker(outbox.DefaultBreakerThreshold, 50*time.Millisecond, time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}

	// Several events per aggregate, so that the relay's per-aggregate
	// order is part of what recovers.
	const n, aggregates = 12, 4
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{
			Topic: topic, Type: "stock.updated",
			AggregateID: fmt.Sprintf("sku-%d", i%aggregates),
			Payload:     []byte(fmt.Sprint(i / aggregates)),
		}
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(ctx, tx, events...); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	// The cluster goes away: a relay pass delivers nothing, buries
	// nothing, and counts an attempt on each event it tried (the first of
	// each aggregate; the later ones are held back behind it, unattempted).
	px.cut()
	res, err := ob.SyncPending(ctx, 0)
	if err != nil {
		t.Fatalf("SyncPending with the cluster cut off: %v", err)
	}
	if res.Claimed != n || res.Synced != 0 || res.Dead != 0 || res.Failed == 0 || res.Failed+res.Released != n {
		t.Fatalf("SyncPending with the cluster cut off = %+v, want all %d claimed, some failed, the rest released, none synced or buried", res, n)
	}
	stats, err := store.Stats(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Pending != n || stats.Synced != 0 || stats.Dead != 0 {
		t.Fatalf("Stats after the failed pass = %+v, want all %d pending", stats, n)
	}
	pending, err := store.List(ctx, sqlstore.ListFilter{Status: outbox.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	attempted := 0
	for _, e := range pending {
		d := e.Delivery
		if d.Status() != outbox.StatusPending || !d.SyncedAt.IsZero() || !d.DeadAt.IsZero() {
			t.Errorf("event %s: delivery %+v, want pending", e.ID, d)
		}
		switch d.Attempts {
		case 0:
		case 1:
			attempted++
			if d.LastError == "" {
				t.Errorf("event %s: an attempt counted with no error recorded", e.ID)
			}
		default:
			t.Errorf("event %s: %d attempts after one pass", e.ID, d.Attempts)
		}
	}
	if len(pending) != n || attempted != res.Failed {
		t.Fatalf("%d events pending, %d with an attempt counted; want %d and %d", len(pending), attempted, n, res.Failed)
	}

	// A running relay keeps failing while the cluster is away.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ob.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, 30*time.Second, "the running relay to try again while the cluster is cut off", func() bool {
		e, err := store.Get(ctx, events[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if e.Delivery.Status() != outbox.StatusPending {
			t.Fatalf("event %s is %s with the cluster cut off", e.ID, e.Delivery.Status())
		}
		return e.Delivery.Attempts >= 2
	})

	// The cluster comes back: the relay delivers the backlog on its own,
	// without waiting for its interval.
	px.restore()
	back := time.Now()
	waitFor(t, relayInterval+30*time.Second, "the relay to deliver the backlog", func() bool {
		st, err := store.Stats(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead != 0 {
			t.Fatalf("Stats = %+v: events buried for an outage", st)
		}
		return st.Pending == 0 && st.Synced == n
	})
	if d := time.Since(back); d > relayRecovery {
		t.Errorf("the relay delivered the backlog %v after the cluster came back, want within %v (its interval is %v)",
			d.Round(time.Millisecond), relayRecovery, relayInterval)
	} else {
		t.Logf("the relay delivered the backlog %v after the cluster came back", d.Round(time.Millisecond))
	}

	// Every event reached Kafka exactly once (nothing was written during
	// the outage), each aggregate in the order it was saved.
	seen := map[string]bool{}
	next := map[string]int{}
	for _, r := range consume(t, c.brokers, topic, n) {
		e := decodeKgo(t, r)
		if seen[e.ID] {
			t.Errorf("event %s consumed twice", e.ID)
		}
		seen[e.ID] = true
		if want := fmt.Sprint(next[e.AggregateID]); string(e.Payload) != want {
			t.Errorf("aggregate %s: got event %s, want %s", e.AggregateID, e.Payload, want)
		}
		next[e.AggregateID]++
	}
	for _, e := range events {
		got, err := store.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Delivery.Status() != outbox.StatusSynced || !seen[e.ID] {
			t.Errorf("event %s: status %s, consumed %v; want synced and consumed", e.ID, got.Delivery.Status(), seen[e.ID])
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
