package outboxui

import (
	"net/http/httptest"

	"fmt"
	"github.com/eventsync/outbox/sqlstore"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// envBig turns on TestBigTable, which takes minutes and about 5 GB.
const envBig = "OUTBOX_BENCH_CONSOLE"

// bigTable fills the table with 10,001,000 events in SQL: 8.7 million
// synced over the last 30 days, 300,000 synced within the last hour (5,000
// a minute: a busy relay), 1 million pending created over the last 20
// minutes and 1,000 dead; 5 types, 100,000 aggregates, sync latencies of
// 5 to 300 ms.
func bigTable(t *testing.T, b *bundle) {
	t.Helper()
	ins := `INSERT INTO {table} (id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at, synced_at)
SELECT 'ev-' || g, 'stock',
       (ARRAY['stock.updated','reservation.created','reservation.cancelled','payment.captured','order.shipped'])[1 + g % 5],
       'agg-' || (g % 100000), convert_to('{"sku":"' || (g % 100000) || '","delta":-1}', 'UTF8'),
       c, c, CASE WHEN {synced} THEN c + make_interval(secs => (5 + g % 296) / 1000.0) END
FROM (SELECT g, {created} AS c FROM generate_series({from}, {to}) g) s`
	phases := []struct {
		name     string
		from, to int
		created  string
		synced   bool
	}{
		{"synced over 30 days", 1, 8_700_000, "now() - interval '30 days' + interval '1 second' * ((30 * 86400 - 3600)::float8 * g / 8700000)", true},
		{"synced in the last hour", 8_700_001, 9_000_000, "now() - interval '1 hour' + ((g - 8700000) * interval '12 milliseconds')", true},
		{"pending", 9_000_001, 10_000_000, "now() - interval '20 minutes' + ((g - 9000000) * interval '1.2 milliseconds')", false},
		{"dead", 10_000_001, 10_001_000, "now() - interval '2 hours'", false},
	}
	for _, p := range phases {
		start := time.Now()
		const chunk = 1_000_000
		for lo := p.from; lo <= p.to; lo += chunk {
			hi := min(lo+chunk-1, p.to)
			stmt := strings.NewReplacer("{table}", `"`+b.table+`"`, "{synced}", fmt.Sprint(p.synced), "{created}", p.created,
				"{from}", fmt.Sprint(lo), "{to}", fmt.Sprint(hi)).Replace(ins)
			if _, err := b.db.Exec(stmt); err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
		}
		t.Logf("%s: %d rows in %v", p.name, p.to-p.from+1, time.Since(start).Round(time.Second))
	}
	b.exec(t, `UPDATE %s SET dead_at = now() - interval '1 hour', attempts = 20, last_error = 'poison' WHERE seq > 10000000`)
	b.exec(t, `UPDATE %s SET attempts = 1, last_error = 'timeout', next_attempt_at = now() + interval '1 minute' WHERE seq > 9000000 AND seq <= 10000000 AND seq %% 1000 = 7`)
}

// measure GETs url n times after 3 warm-ups and returns the median and
// the 90th percentile.
func measure(t *testing.T, url string, n int) (time.Duration, time.Duration) {
	t.Helper()
	var ds []time.Duration
	for i := range n + 3 {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %.300s", url, resp.StatusCode, body)
			return -1, -1
		}
		if i >= 3 {
			ds = append(ds, time.Since(start))
		}
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*9/10]
}

// TestBigTable measures the console on a table of 10 million events, 1
// million of them pending: the overview must answer within 200 ms
// (median). It runs only with OUTBOX_BENCH_CONSOLE=1 (minutes, and some 5
// GB of disk for its own table, dropped at the end):
//
//	OUTBOX_BENCH_CONSOLE=1 OUTBOX_TEST_POSTGRES=postgres://… go test -run TestBigTable -v -timeout 60m ./outboxui
//
// OUTBOX_BENCH_TABLE=NAME fills that table once and keeps it, so later
// runs measure at once; OUTBOX_BENCH_VACUUM=1 skips the measure before
// VACUUM.
func TestBigTable(t *testing.T) {
	if os.Getenv(envBig) == "" {
		t.Skipf("set %s=1 to fill a table of 10 million events and measure the console on it", envBig)
	}
	// OUTBOX_BENCH_TABLE names a table to fill once and keep (not
	// dropped), so that runs after the first measure at once.
	keep := os.Getenv("OUTBOX_BENCH_TABLE")
	b := &bundle{db: openPostgres(t), table: keep}
	if keep == "" {
		b.table = randomName("outboxui_big_")
		b.store = newStore(t, b.db, b.table)
	} else {
		var err error
		if b.store, err = sqlstore.New(b.db, sqlstore.WithTable(keep)); err != nil {
			t.Fatal(err)
		}
		if err := b.store.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	h, err := New(b.store)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", h))
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	b.base = b.srv.URL + "/outbox/"
	if b.count(t, "true") == 0 {
		start := time.Now()
		bigTable(t, b)
		b.exec(t, `ANALYZE %s`)
		t.Logf("filled and analyzed in %v", time.Since(start).Round(time.Second))
	} else {
		// A kept table: move the last hour's 300,000 synced events (and
		// the pending ones) up to now, so the chart's hour is full again.
		b.exec(t, `UPDATE %s SET created_at = created_at + d, synced_at = synced_at + d, next_attempt_at = next_attempt_at + d
FROM (SELECT now() - MAX(synced_at) AS d FROM %[1]s) m WHERE seq > 8700000 AND seq <= 9000000`)
		b.exec(t, `UPDATE %s SET created_at = created_at + d, next_attempt_at = next_attempt_at + d
FROM (SELECT now() - MAX(created_at) AS d FROM %[1]s WHERE seq > 9000000 AND seq <= 10000000) m WHERE seq > 9000000 AND seq <= 10000000`)
	}
	pages := []struct{ name, path string }{
		{"overview", ""},
		{"pending, first page", "events?state=pending"},
		{"pending, type filter", "events?state=pending&type=order.shipped"},
		{"pending, a page deep in (seq 9,900,000)", "events?state=pending&after=0.9900000"},
		{"failed", "events?state=failed"},
		{"dead", "events?state=dead"},
		{"synced", "events?state=synced"},
		{"synced, type filter", "events?state=synced&type=order.shipped"},
		{"synced, aggregate filter, created in the last hour", "events?state=synced&aggregate=agg-42&from=" + time.Now().UTC().Add(-time.Hour).Format(timeForm)},
		{"event", "event?id=ev-9500000"},
		{"relays and partitions", "relays"},
	}
	t.Logf("in the chart's hour: %d synced; pending: %d; dead: %d",
		b.count(t, "synced_at >= now() - interval '1 hour'"), b.count(t, "synced_at IS NULL AND dead_at IS NULL"), b.count(t, "dead_at IS NOT NULL"))
	report := func(when string) {
		var lines []string
		for _, p := range pages {
			med, p90 := measure(t, b.base+p.path, 20)
			lines = append(lines, fmt.Sprintf("| %s | %s | %.1f ms | %.1f ms |", when, p.name, ms(med), ms(p90)))
			if p.name == "overview" && med > 200*time.Millisecond {
				t.Errorf("%s: the overview's median is %v, over 200 ms", when, med)
			}
		}
		t.Logf("\n%s", strings.Join(lines, "\n"))
	}
	if os.Getenv("OUTBOX_BENCH_VACUUM") == "" {
		report("analyzed, not vacuumed")
	}
	b.exec(t, `VACUUM (ANALYZE) %s`)
	report("after VACUUM")
	var size string
	if err := b.db.Get(&size, fmt.Sprintf(`SELECT pg_size_pretty(pg_total_relation_size('%q'))`, b.table)); err == nil {
		t.Logf("table and indexes: %s", size)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
