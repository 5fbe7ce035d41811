package sqlstore

import (
	"context"
	"testing"
)

// BenchmarkHeartbeat measures one relay's heartbeat in the steady state
// (it owns all its partitions, nothing changes hands), with the physical
// count that does not move with machine noise: on Postgres the WAL bytes
// each heartbeat writes (pg_current_wal_lsn before and after).
//
//	OUTBOX_TEST_POSTGRES=... OUTBOX_TEST_MYSQL=... go test -run '^$' -bench Heartbeat ./sqlstore
func BenchmarkHeartbeat(b *testing.B) {
	for name, s := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			if _, _, err := s.Heartbeat(ctx); err != nil {
				b.Fatal(err)
			}
			lsn := func() int64 {
				var n int64
				if err := s.db.QueryRowxContext(ctx, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").Scan(&n); err != nil {
					b.Fatal(err)
				}
				return n
			}
			var before int64
			if name == "postgres" {
				before = lsn()
			}
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := s.Heartbeat(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if name == "postgres" {
				b.ReportMetric(float64(lsn()-before)/float64(b.N), "WAL-bytes/beat")
			}
		})
	}
}
