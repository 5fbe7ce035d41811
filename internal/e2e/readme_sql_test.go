package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// readmeQueries returns the statements of the README's SQL block whose
// first line is "-- <dialect>".
func readmeQueries(t *testing.T, dialect string) []string {
	t.Helper()
	readme, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sql\n-- "+dialect+"\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/operations.md has %d SQL blocks for %s, want 1", len(blocks), dialect)
	}
	var out []string
	for _, stmt := range strings.Split(blocks[0][1], ";") {
		if strings.TrimSpace(stripComments(stmt)) != "" {
			out = append(out, stmt)
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// The README's monitoring queries run on every database and give the
// figures the store gives.
func TestReadmeMonitoringSQL(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		ob := newOutbox(t, store, outbox.Noop{})
		old := newEvents("monitoring", 2)
		old[0].CreatedAt = time.Now().Add(-90 * time.Second)
		saveCommitted(t, db, ob, old...)
		res, err := ob.SyncPending(ctx, 1) // one synced, one pending
		mustNoErr(t, err, "sync")
		if res.Synced != 1 {
			t.Fatalf("synced %d", res.Synced)
		}
		saveCommitted(t, db, ob, newEvents("monitoring", 3)...)

		queries := readmeQueries(t, string(store.Dialect()))
		if len(queries) != 4 {
			t.Fatalf("%d queries, want 4", len(queries))
		}
		for i, q := range queries {
			queries[i] = strings.ReplaceAll(q, sqlstore.DefaultTable, store.Table())
		}

		var pending int64
		rows, err := db.QueryContext(ctx, queries[0])
		mustNoErr(t, err, "pending by type")
		for rows.Next() {
			var typ string
			var n int64
			mustNoErr(t, rows.Scan(&typ, &n), "scan")
			pending += n
		}
		rows.Close()
		if pending != 4 {
			t.Errorf("pending by type sums to %d, want 4", pending)
		}

		var oldest float64
		mustNoErr(t, db.QueryRowContext(ctx, queries[1]).Scan(&oldest), "oldest pending")
		if oldest < 0 || oldest > 60 { // the 90-second-old event was the one synced
			t.Errorf("oldest pending %.1fs, want a few seconds at most", oldest)
		}

		var avg float64
		mustNoErr(t, db.QueryRowContext(ctx, queries[2]).Scan(&avg), "average latency")
		if avg < 89 || avg > 150 {
			t.Errorf("average sync latency %.1fs, want about 90s", avg)
		}

		rows, err = db.QueryContext(ctx, queries[3])
		mustNoErr(t, err, "dead events")
		if rows.Next() {
			t.Error("dead events listed, none was buried")
		}
		rows.Close()
	})
}
