package sqlstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestZZPlan(t *testing.T) {
	if os.Getenv("ZZPLAN") == "" {
		t.Skip()
	}
	b := markBundle(t)
	ctx := context.Background()
	tbl := b.store.t.Quoted
	_, err := b.db.ExecContext(ctx, "INSERT INTO "+tbl+" (id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at) SELECT 'e'||g, 't', 'x', 'agg-'||(g % 1000), '\\x00', now(), now() FROM generate_series(1, 200000) g")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = b.db.ExecContext(ctx, "ANALYZE "+tbl)
	b.beat(t)
	o := ownerOf(b.store)
	// Move every front to the end, as after a drain.
	var cur string
	_ = b.db.QueryRowContext(ctx, "SELECT txid_current_snapshot()::text").Scan(&cur)
	for p, pm := range o.l.marks {
		m, _ := newMark(190000, cur)
		_ = p
		pm.front = m
	}
	owned := o.l.claimable(o.clock(), o.every)
	start := time.Now()
	rows, _, err := o.readMarks(ctx, claimRun{token: "x", now: b.store.now(), ordered: true}, owned, 1000, nil, nil)
	t.Log(len(rows), err, time.Since(start))
	// explain
	q := o.marksQuery(claimRun{token: "x", now: b.store.now(), ordered: true}, owned, o.l.fronts(owned), 1000, 2000, nil, nil)
	var plan []string
	if err := b.db.SelectContext(ctx, &plan, "EXPLAIN (ANALYZE, BUFFERS) "+q.String(), q.args...); err != nil {
		t.Fatal(err)
	}
	fmt.Println(strings.Join(plan, "\n"))
}
