package sqlstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// envWAL names a Postgres server where TestRetentionWAL may run
// CHECKPOINT and count every WAL byte as its own: a private one, with no
// other writer (the WAL position is the server's, not the session's).
const envWAL = "OUTBOX_TEST_WAL_POSTGRES"

// TestRetentionWAL measures the WAL that retention writes per event:
// Store.Purge (a DELETE of each delivered row) against dropping a time
// partition, with delivery recorded per row (synced_at) and by
// watermarks, beside the Save's own WAL. Each phase starts after a
// CHECKPOINT, so that full-page images are paid alike, and is counted
// from pg_current_wal_lsn() before and after. Events are saved ten per
// transaction over 1,000 aggregates, as BENCHMARKS.md's figures are.
//
//	OUTBOX_TEST_WAL_POSTGRES=postgres://... [OUTBOX_TEST_WAL_EVENTS=100000] go test -run TestRetentionWAL -v ./sqlstore
func TestRetentionWAL(t *testing.T) {
	dsn := os.Getenv(envWAL)
	if dsn == "" {
		t.Skipf("set %s to a private Postgres server (this test runs CHECKPOINT and counts the server's WAL)", envWAL)
	}
	n := 100_000
	if v := os.Getenv("OUTBOX_TEST_WAL_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	db := open(t, "pgx", dsn)
	ctx := t.Context()
	lsn := func() int64 {
		t.Helper()
		if _, err := db.ExecContext(ctx, "CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
		var at int64
		if err := db.QueryRowContext(ctx, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	for _, c := range []struct {
		name string
		opts []Option
	}{
		{"purge, per-row delivery", nil},
		{"purge, watermarks", []Option{WithWatermarks()}},
		{"drop partition, per-row delivery", []Option{WithTimePartitions(time.Hour, 2*time.Hour)}},
		{"drop partition, watermarks", []Option{WithTimePartitions(time.Hour, 2*time.Hour), WithWatermarks()}},
	} {
		s := newStore(t, db, randomName("outbox_wal_"), c.opts...)
		clock := newTestClock()
		useClock(s, clock)
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		start := lsn()
		saveWAL(t, ctx, s, clock, n)
		saved := lsn() - start

		// Delivered, as the relays would leave it: every row synced, or
		// every partition's mark past every event.
		deliver := "UPDATE " + s.t.Quoted + " SET synced_at = created_at + interval '1 second'"
		if s.marks {
			deliver = "UPDATE " + s.t.Sibling(partitionsSuffix) + " SET mark_seq = (SELECT max(seq) FROM " + s.t.Quoted +
				"), mark_snap = txid_current_snapshot(), mark_at = now()"
		}
		if _, err := db.ExecContext(ctx, deliver); err != nil {
			t.Fatal(err)
		}
		clock.Advance(3 * time.Hour)
		if _, err := db.ExecContext(ctx, "VACUUM ANALYZE "+s.t.Quoted); err != nil {
			t.Fatal(err)
		}
		start = lsn()
		total := 0
		for {
			got, err := s.Purge(ctx, time.Hour, 1000)
			if err != nil {
				t.Fatal(err)
			}
			total += got
			if got == 0 {
				break
			}
		}
		retained := lsn() - start
		if total != n {
			t.Fatalf("%s: retention removed %d events, want %d", c.name, total, n)
		}
		t.Logf("%-34s Save %6.1f B/event; retention %8d B in all, %7.2f B/event (%.2f %% of the Save's)",
			c.name, float64(saved)/float64(n), retained, float64(retained)/float64(n), 100*float64(retained)/float64(saved))
	}
}

// saveWAL saves n events through s, ten per transaction over 1,000
// aggregates, created within the hour of the clock.
func saveWAL(t *testing.T, ctx context.Context, s *Store, clock *testClock, n int) {
	t.Helper()
	at := clock.Now().Truncate(time.Hour).Add(time.Minute)
	payload := []byte(`{"sku":"sku-000000","delta":-1,"warehouse":"north"}`)
	for i := 0; i < n; i += 10 {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		events := make([]*outbox.Event, 0, 10)
		for j := i; j < min(i+10, n); j++ {
			events = append(events, &outbox.Event{ID: outbox.NewID(), Topic: "stock", Type: "stock.updated",
				AggregateID: fmt.Sprintf("sku-%d", j%1000), Payload: payload, CreatedAt: at})
		}
		if err := s.Insert(ctx, tx, events); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}
