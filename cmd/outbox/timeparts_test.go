package main

import (
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

// On a table partitioned by save time, status shows the partitions, the
// runway and the rows of the DEFAULT partition; on any other table it
// shows nothing of them.
func TestStatusTimePartitions(t *testing.T) {
	tg := newTarget(t, sqlstore.Postgres)
	s, err := sqlstore.New(tg.db, sqlstore.WithTable(tg.table), sqlstore.WithTimePartitions(0, 3*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := tg.status(t)
	tp := st.TimePartitions
	if tp == nil || tp.Partitions != 4 || tp.PeriodSeconds != 86400 || tp.RunwaySeconds < 3*86400 || tp.DefaultRows != 0 {
		t.Fatalf("status --json: time partitions %+v", tp)
	}
	out := ok(t, tg.args("status")...)
	if !strings.Contains(out, "time partitions") || !strings.Contains(out, "runway") || !strings.Contains(out, "0 in the default partition") {
		t.Fatalf("status: no time partitions line:\n%s", out)
	}

	plain := newTarget(t, sqlstore.Postgres)
	ok(t, plain.args("migrate")...)
	if st := plain.status(t); st.TimePartitions != nil {
		t.Fatalf("status of an unpartitioned table: %+v", st.TimePartitions)
	}
	if out := ok(t, plain.args("status")...); strings.Contains(out, "time partitions") {
		t.Fatalf("status of an unpartitioned table:\n%s", out)
	}
}

// migrate --time-partitions creates a new table partitioned by save time
// and says so; it refuses --print and a negative width.
func TestMigrateTimePartitions(t *testing.T) {
	tg := newTarget(t, sqlstore.Postgres)
	out := ok(t, tg.args("migrate", "--time-partitions", "24h", "--ahead", "72h")...)
	if !strings.Contains(out, "partitioned by save time: 4 partitions of 24h0m0s") {
		t.Fatalf("migrate --time-partitions:\n%s", out)
	}
	if tp := tg.status(t).TimePartitions; tp == nil || tp.RunwaySeconds < 3*86400 {
		t.Fatalf("status after migrate --time-partitions: %+v", tp)
	}
	fails(t, 2, "--print prints the default layout only", tg.args("migrate", "--print", "--time-partitions", "24h")...)
	fails(t, 2, "must not be negative", tg.args("migrate", "--time-partitions", "-1h")...)
	fails(t, 2, "--ahead goes with --time-partitions", tg.args("migrate", "--ahead", "1h")...)
}
