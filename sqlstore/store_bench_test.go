package sqlstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/storage"
)

// benchStore opens a migrated store for a benchmark: SQLite in a
// temporary file, and Postgres and MySQL when their test variables are
// set. The table is dropped at the end.
func benchStores(b *testing.B) map[string]*Store {
	b.Helper()
	out := map[string]*Store{}
	open := func(name, driver, dsn string) {
		db, err := sqlx.Open(driver, dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		if driver == "sqlite" {
			db.SetMaxOpenConns(1)
		}
		table := randomName("outbox_bench_")
		s, err := New(db, WithTable(table))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			b.Fatalf("%s: migrate: %v", name, err)
		}
		b.Cleanup(func() { _ = s.Drop(context.Background()) })
		out[name] = s
	}
	open("sqlite", "sqlite", "file:"+filepath.Join(b.TempDir(), "bench.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if dsn := os.Getenv(envPostgres); dsn != "" {
		open("postgres", "pgx", dsn)
	}
	if dsn := os.Getenv(envMySQL); dsn != "" {
		open("mysql", "mysql", dsn)
	}
	return out
}

func benchEvents(n int) []*outbox.Event {
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	events := make([]*outbox.Event, n)
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i := range events {
		events[i] = &outbox.Event{ID: outbox.NewID(), Topic: "bench", Type: "stock.updated",
			AggregateID: fmt.Sprintf("sku-%d", i%100), Payload: payload, CreatedAt: now}
	}
	return events
}

// BenchmarkInsert measures Store.Insert (what Outbox.Save runs) of 1 and
// of 100 events inside a transaction, one transaction per iteration.
func BenchmarkInsert(b *testing.B) {
	for name, s := range benchStores(b) {
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/events=%d", name, n), func(b *testing.B) {
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					events := benchEvents(n)
					b.StartTimer()
					tx, err := s.db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.Insert(ctx, tx, events); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkClaimMark measures one relay pass's database work: Claim of a
// batch of 1,000 (ordered and unordered), then MarkSynced of all of it.
func BenchmarkClaimMark(b *testing.B) {
	for name, s := range benchStores(b) {
		for _, unordered := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/unordered=%v", name, unordered), func(b *testing.B) {
				ctx := context.Background()
				const batch = 1000
				refill := func() {
					tx, err := s.db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := s.Insert(ctx, tx, benchEvents(batch)); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
				var claim, mark time.Duration
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					refill()
					b.StartTimer()
					t0 := time.Now()
					c, err := s.Claim(ctx, storage.ClaimRequest{Limit: batch, Lease: time.Minute, Unordered: unordered})
					if err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					ids := make([]string, len(c.Events))
					for i, e := range c.Events {
						ids[i] = e.ID
					}
					if n, err := s.MarkSynced(ctx, c.Token, ids); err != nil || n != len(ids) || n == 0 {
						b.Fatalf("mark: %d of %d, %v", n, len(ids), err)
					}
					claim += t1.Sub(t0)
					mark += time.Since(t1)
				}
				b.ReportMetric(float64(claim.Microseconds())/float64(b.N), "claim-µs/op")
				b.ReportMetric(float64(mark.Microseconds())/float64(b.N), "mark-µs/op")
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
