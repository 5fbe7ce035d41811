package sqlstore

import (
	"database/sql"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A relay prepares its watermark read once per connection and keeps the
// generic plan, often made while the table was empty; under watermarks
// every delivered event stays in the indexes of pending events until it
// is purged. The plan made on an empty table must still read only what a
// claim needs once the table holds tens of thousands of delivered events
// and a transaction stays open (the late read runs): a plan that walks an
// index of pending events slows every claim as the table grows.
func TestWatermarkReadPlanOnAGrownTable(t *testing.T) {
	forShapes(t, func(t *testing.T) {
		b := markBundle(t)
		o := ownerOf(b.store)
		ctx := t.Context()
		open := b.newEvents(1)
		b.insertOpen(t, open...)
		b.beat(t)
		if got := b.drain(t, 100); len(got) != 0 {
			t.Fatalf("claimed %d events of an open transaction", len(got))
		}

		conn, err := b.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The read's settings, for the session (a relay sets them for
		// its read's transaction).
		settings := noJIT + markReadSettings + mergedReadSettings
		if o.marksLateral(1000) {
			settings = noJIT + markReadSettings + loopReadSettings
		}
		for _, s := range []string{strings.ReplaceAll(settings, ", true)", ", false)")} {
			if _, err := conn.ExecContext(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		stmt := func() (string, string) {
			owned := o.l.claimable(o.clock(), o.every)
			cr := claimRun{token: "plan", now: b.clock.Now(), ordered: true}
			q := o.marksQuery(cr, owned, o.l.fronts(owned), 1000, 2000, nil, nil, o.marksLateral(1000))
			return q.String(), literals(q.args)
		}
		text, args := stmt()
		if _, err := conn.ExecContext(ctx, "PREPARE wmread AS "+text); err != nil {
			t.Fatalf("prepare: %v", err)
		}
		defer conn.ExecContext(ctx, "DEALLOCATE wmread") //nolint:errcheck
		if _, err := conn.ExecContext(ctx, "EXECUTE wmread("+args+")"); err != nil {
			t.Fatalf("execute on the empty table: %v", err)
		}

		grow := func() {
			for range 20 {
				b.save(t, b.newEvents(1000)...)
			}
			if got := b.drain(t, 1000); len(got) < 20_000 {
				t.Fatalf("delivered %d events, want 20000", len(got))
			}
			b.beat(t)
		}
		grow()
		// A pending event of a higher priority, behind thousands of
		// delivered events of its aggregate: the priority branch looks
		// for an earlier undelivered one of another priority.
		urgent := b.newEvents(1)[0]
		urgent.Priority = 5
		b.save(t, urgent)
		text2, args := stmt()
		if text2 != text {
			// The merged read names the partitions whose fronts list
			// transactions in progress: its text, and so its plan, is
			// made again when they change. The loop's text never changes.
			if o.marksLateral(1000) {
				t.Fatalf("the loop's text changed with the table: the relay would prepare it again\nbefore: %s\nafter:  %s", text, text2)
			}
			if _, err := conn.ExecContext(ctx, "DEALLOCATE wmread"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.ExecContext(ctx, "PREPARE wmread AS "+text2); err != nil {
				t.Fatalf("prepare: %v", err)
			}
		}
		// As prepared (on the empty table, or unanalyzed for the merged
		// read's new text), then planned again with the statistics that
		// ANALYZE (autovacuum's, in a service) leaves.
		whens := []string{"as prepared", "after ANALYZE"}
		if !o.marksLateral(1000) {
			// The backlog's read keeps its generic plan: with the events
			// of this test in five partitions, the plan made after
			// ANALYZE walks the seq index (see mergedReadSettings).
			whens = whens[:1]
		}
		for _, when := range whens {
			if when == "after ANALYZE" {
				if _, err := b.db.ExecContext(ctx, "ANALYZE "+b.store.t.Quoted); err != nil {
					t.Fatal(err)
				}
			}
			plan := explainLines(t, conn, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE wmread("+args+")")
			if got := buffersTouched(plan); got > 1500 {
				t.Errorf("%s: the read touched %d buffers on a table of 20,002 events with one to claim:\n%s", when, got, plan)
			}
			if strings.Contains(plan, "pending_type_idx") || strings.Contains(plan, "pkey on") {
				t.Errorf("%s: the read walks the index of pending events by type, or the seq index:\n%s", when, plan)
			}
			if !strings.Contains(plan, "rows=1 loops=1") {
				t.Errorf("%s: the read did not return the one pending event:\n%s", when, plan)
			}
		}

		if !o.marksLateral(1000) {
			return
		}
		// Twice the delivered events: reading the partitions' ranges
		// costs what it did (the index is read from each front on, not
		// from the partition's first entry).
		before := rangeBuffers(explainLines(t, conn, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE wmread("+args+")"))
		b.store.c.(*owner).lastRead.Store(0) // the drain's last read was full
		grow()
		_, args = stmt()
		if _, err := b.db.ExecContext(ctx, "ANALYZE "+b.store.t.Quoted); err != nil {
			t.Fatal(err)
		}
		plan := explainLines(t, conn, "EXPLAIN (ANALYZE, BUFFERS) EXECUTE wmread("+args+")")
		if after := rangeBuffers(plan); before <= 0 || after > before+16 {
			t.Errorf("reading the ranges touched %d buffers at 20,000 delivered events, %d at 40,000:\n%s", before, after, plan)
		}
	})
}

// literals writes args as a list of SQL literals, for EXECUTE.
func literals(args []any) string {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case int:
			out[i] = strconv.Itoa(v)
		case int64:
			out[i] = strconv.FormatInt(v, 10)
		case time.Time:
			out[i] = "'" + v.Format(time.RFC3339Nano) + "'"
		case string:
			out[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		default:
			out[i] = "'" + strings.ReplaceAll(fmt.Sprint(v), "'", "''") + "'"
		}
	}
	return strings.Join(out, ", ")
}

// explainLines runs an EXPLAIN on conn and returns its lines.
func explainLines(t *testing.T, conn *sql.Conn, q string) string {
	t.Helper()
	return shorten(strings.Join(queryStrings(t, conn, q), "\n"))
}

// rangeBuffers returns the shared buffers the scans of the partitions'
// ranges (their index, part_seq_idx) touched, summed over the plan's
// nodes.
func rangeBuffers(plan string) int {
	total := 0
	lines := strings.Split(plan, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "part_seq_idx") {
			continue
		}
		for _, m := range lines[i+1:] {
			if strings.Contains(m, "Buffers:") {
				total += buffersTouched(m)
				break
			}
		}
	}
	return total
}

var buffersRe = regexp.MustCompile(`Buffers: shared (?:hit=(\d+))?\s*(?:read=(\d+))?`)

// buffersTouched returns the shared buffers the plan's top node hit or
// read (the first Buffers line: the whole statement's).
func buffersTouched(plan string) int {
	m := buffersRe.FindStringSubmatch(plan)
	if m == nil {
		return -1
	}
	hit, _ := strconv.Atoi(m[1])
	read, _ := strconv.Atoi(m[2])
	return hit + read
}
