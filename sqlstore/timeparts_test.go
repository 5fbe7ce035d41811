package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
)

// TestConformanceTimePartitions runs the suite on Postgres over a table
// partitioned by save time, with and without watermarks, and with row
// leases (whose unordered claim finds rows by their address).
func TestConformanceTimePartitions(t *testing.T) {
	openDB(t, Postgres)
	for name, opts := range map[string][]Option{
		"ownership":  {WithTimePartitions(0, 0)},
		"watermarks": {WithTimePartitions(0, 24*time.Hour), WithWatermarks()},
		"rowleases":  {WithTimePartitions(time.Hour, 6*time.Hour), WithRowLeases()},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			outboxtest.TestStore(t, outboxtest.StoreHarness{
				New: func(t *testing.T) outboxtest.StoreSetup {
					return setup(t, Postgres, opts...).storeSetup()
				},
			})
		})
	}
}

// TestTimePartitionsLayout checks what Migrate creates: a partitioned
// table, a DEFAULT partition, the runway, and migrations 1 to 8 recorded;
// a second Migrate changes nothing, and Migrate with the option refuses
// a table that exists unpartitioned.
func TestTimePartitionsLayout(t *testing.T) {
	b := setup(t, Postgres, WithTimePartitions(0, 3*24*time.Hour))
	ctx := t.Context()
	st, err := b.store.TimePartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Partitioned || !st.Default || st.Period != 24*time.Hour || st.DefaultRows != 0 {
		t.Fatalf("status %+v", st)
	}
	if st.Runway < 3*24*time.Hour || st.Runway > 4*24*time.Hour || st.Partitions != 4 {
		t.Fatalf("runway %v over %d partitions, want 3 to 4 days over 4", st.Runway, st.Partitions)
	}
	var versions int
	if err := b.db.QueryRowContext(ctx, "SELECT count(*) FROM "+b.store.t.MigrationsTable()).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if latest, err := LatestVersion(Postgres); err != nil || versions != latest {
		t.Fatalf("%d migrations recorded, want %d (%v)", versions, latest, err)
	}
	if err := b.store.Migrate(ctx); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if st2, err := b.store.TimePartitions(ctx); err != nil || st2.Partitions != st.Partitions {
		t.Fatalf("after a second migrate: %+v, %v", st2, err)
	}

	plain := setup(t, Postgres)
	s, err := New(plain.db, WithTable(plain.table), WithTimePartitions(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("migrate of an unpartitioned table with the option: %v, want ErrInvalidConfig", err)
	}
	if st, err := plain.store.TimePartitions(ctx); err != nil || st.Partitioned {
		t.Fatalf("status of an unpartitioned table: %+v, %v", st, err)
	}
}

// TestTimePartitionsOptions checks the periods WithTimePartitions takes.
func TestTimePartitionsOptions(t *testing.T) {
	db := openDB(t, SQLite)
	if _, err := New(db, WithTimePartitions(0, 0)); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("SQLite: %v", err)
	}
	pg := openDB(t, Postgres)
	for _, c := range []struct {
		period, ahead time.Duration
		ok            bool
	}{
		{0, 0, true}, {time.Hour, 0, true}, {6 * time.Hour, 0, true}, {48 * time.Hour, 0, true},
		{30 * time.Minute, 0, false}, {5 * time.Hour, 0, false}, {36 * time.Hour, 0, false}, {0, -time.Hour, false},
	} {
		_, err := New(pg, WithTimePartitions(c.period, c.ahead))
		if (err == nil) != c.ok {
			t.Errorf("period %v ahead %v: %v", c.period, c.ahead, err)
		}
	}
}

// TestTimePartitionsSavePastRunway saves events far past the runway (and
// before the oldest partition): they land in the DEFAULT partition, the
// status counts them, maintenance run at their time moves them into the
// partitions it creates, and they are delivered in order afterwards.
func TestTimePartitionsSavePastRunway(t *testing.T) {
	for _, marks := range []bool{false, true} {
		t.Run(fmt.Sprintf("watermarks=%v", marks), func(t *testing.T) {
			t.Parallel()
			opts := []Option{WithTimePartitions(0, 2*24*time.Hour)}
			if marks {
				opts = append(opts, WithWatermarks())
			}
			b := setup(t, Postgres, opts...)
			ctx := t.Context()
			now := b.clock.Now()
			early := b.newEvents(3)
			b.save(t, early...)
			b.clock.Advance(7 * 24 * time.Hour) // five days past the runway
			late := b.newEvents(20)
			b.save(t, late...)
			st, err := b.store.TimePartitions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.DefaultRows != 20 || st.Runway > 0 {
				t.Fatalf("after saves past the runway: %+v", st)
			}
			st, err = b.store.MaintainTimePartitions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.DefaultRows != 0 || st.Runway < 2*24*time.Hour || st.Oldest.After(now) {
				t.Fatalf("after maintenance: %+v", st)
			}
			var inPart int
			name := b.store.partName(late[0].CreatedAt.Truncate(24*time.Hour), 24*time.Hour)
			if err := b.db.QueryRowContext(ctx, "SELECT count(*) FROM "+b.store.t.Sibling(name[len(b.table):])).Scan(&inPart); err != nil {
				t.Fatal(err)
			}
			if inPart != 20 {
				t.Fatalf("%d events in %s, want 20", inPart, name)
			}
			want := append(append([]*outbox.Event(nil), early...), late...)
			got := b.drain(t, 100)
			equalIDs(t, "delivered", got, ids(want))
			stats, err := b.store.Stats(ctx, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if stats.Pending != 0 {
				t.Fatalf("pending after delivery: %+v", stats)
			}
		})
	}
}

// TestTimePartitionsRelayKeepsRunway: a relay (outbox.Run) creates the
// partitions the runway needs, after an outage longer than it, and a
// Store without time partitions has nothing to maintain.
func TestTimePartitionsRelayKeepsRunway(t *testing.T) {
	b := setup(t, Postgres, WithTimePartitions(time.Hour, 3*time.Hour))
	ctx := t.Context()
	b.clock.Advance(10 * time.Hour)
	if r, ok, err := b.store.Runway(ctx); err != nil || !ok || r.Ahead > 0 {
		t.Fatalf("runway 10 hours later: %+v, %v, %v", r, ok, err)
	}
	o, err := outbox.New(b.store, outbox.Noop{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, ok, err := b.store.Runway(ctx)
		if err != nil || !ok {
			t.Fatalf("runway: %+v, %v, %v", r, ok, err)
		}
		if r.Ahead >= 3*time.Hour {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay did not extend the runway: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := b.store.TimePartitions(ctx)
	if err != nil || st.Period != time.Hour || st.Partitions < 13 {
		t.Fatalf("after the relay's turn: %+v, %v", st, err)
	}

	plain := setup(t, Postgres)
	if next, err := plain.store.Maintain(ctx); next != 0 || err != nil {
		t.Fatalf("Maintain without time partitions: %v, %v", next, err)
	}
	if _, ok, err := plain.store.Runway(ctx); ok || err != nil {
		t.Fatalf("Runway without time partitions: %v, %v", ok, err)
	}
}

// layoutCheckedThrough is the last migration known to apply to the
// time-partitioned layout (built at timeLayoutVersion) as it does to
// the default one: 9 sets the seq's default, which a partitioned table
// passes on to its partitions.
const layoutCheckedThrough = 9

// TestTimePartitionsLayoutMatchesMigrations checks that the layout of
// WithTimePartitions, with the later migrations Migrate applies to it,
// is the schema the migrations build, but for its keys: the same
// columns (types, defaults, generation), the same indexes and the same
// sibling tables. A new migration must suit a partitioned table too:
// this test fails until layoutCheckedThrough is raised with it.
func TestTimePartitionsLayoutMatchesMigrations(t *testing.T) {
	latest, err := LatestVersion(Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if latest != layoutCheckedThrough {
		t.Fatalf("migrations reach version %d, checked against the time-partitioned layout through %d: check that the new migrations suit a partitioned table (and the move of layouts/), then raise layoutCheckedThrough", latest, layoutCheckedThrough)
	}
	plain := setup(t, Postgres)
	parted := setup(t, Postgres, WithTimePartitions(0, 0))
	describe := func(b *bundle, suffix, query string) []string {
		t.Helper()
		out := queryStrings(t, b.db, query, b.table+suffix)
		for i, s := range out {
			out[i] = strings.ReplaceAll(s, b.table, "T")
		}
		return out
	}
	columns := `SELECT concat_ws(' ', ordinal_position, column_name, data_type, character_maximum_length, is_nullable, column_default, generation_expression)
		FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`
	indexes := `SELECT regexp_replace(indexdef, '^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?', '') FROM pg_indexes
		WHERE schemaname = current_schema() AND tablename = $1 AND indexname NOT LIKE '%pkey' AND indexname NOT LIKE '%key' ORDER BY 1`
	if c, i := describe(parted, "", columns), describe(parted, "", indexes); len(c) != 18 || len(i) != 8 {
		t.Fatalf("the layout has %d columns and %d indexes besides its keys, want 18 and 8: %q %q", len(c), len(i), c, i)
	}
	for _, suffix := range []string{"", partitionsSuffix, relaysSuffix, deliveriesSuffix, deliveryViewSuffix} {
		if a, b := describe(plain, suffix, columns), describe(parted, suffix, columns); !slices.Equal(a, b) {
			t.Errorf("columns of T%s:\nmigrations %q\nlayout     %q", suffix, a, b)
		}
		if a, b := describe(plain, suffix, indexes), describe(parted, suffix, indexes); !slices.Equal(a, b) {
			t.Errorf("indexes of T%s:\nmigrations %q\nlayout     %q", suffix, a, b)
		}
	}
}
