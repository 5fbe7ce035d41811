package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// The variables that point the tests at servers, as in the other packages.
const (
	envPostgres = "OUTBOX_TEST_POSTGRES" // postgres://user@127.0.0.1:5432/db?sslmode=disable
	envMySQL    = "OUTBOX_TEST_MYSQL"    // a go-sql-driver DSN: user@tcp(127.0.0.1:3306)/db
)

// cli runs the command line in-process and returns its exit status,
// standard output and standard error.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs the command line and fails the test unless it succeeds.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := cli(t, args...)
	if code != 0 {
		t.Fatalf("outbox %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fails runs the command line and checks its exit status and that its
// standard error contains want.
func fails(t *testing.T, wantCode int, want string, args ...string) string {
	t.Helper()
	code, out, errs := cli(t, args...)
	if code != wantCode || !strings.Contains(errs, want) {
		t.Fatalf("outbox %s: exit %d, stderr %q; want exit %d and %q (stdout %q)", strings.Join(args, " "), code, errs, wantCode, want, out)
	}
	return errs
}

// target is a database the CLI is pointed at, with a table of the test's
// own.
type target struct {
	url   string
	table string
	db    *sqlx.DB
	store *sqlstore.Store
}

func (tg *target) args(cmd string, more ...string) []string {
	return append([]string{cmd, "--db", tg.url, "--table", tg.table}, more...)
}

func randomName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "outbox_cli_" + hex.EncodeToString(b[:])
}

// newTarget returns a target on dialect d, skipping the test when its
// server is not configured; the test's tables are dropped at the end.
func newTarget(t *testing.T, d sqlstore.Dialect) *target {
	t.Helper()
	tg := &target{table: randomName()}
	switch d {
	case sqlstore.Postgres:
		if tg.url = os.Getenv(envPostgres); tg.url == "" {
			t.Skipf("Postgres tests skipped: set %s, e.g. %s='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'", envPostgres, envPostgres)
		}
	case sqlstore.MySQL:
		dsn := os.Getenv(envMySQL)
		if dsn == "" {
			t.Skipf("MySQL tests skipped: set %s, e.g. %s='root@tcp(127.0.0.1:3306)/test'", envMySQL, envMySQL)
		}
		tg.url = "mysql://" + dsn
	case sqlstore.SQLite:
		tg.url = "sqlite:" + filepath.Join(t.TempDir(), "app.db")
	}
	dbase, err := parseDB(tg.url)
	if err != nil {
		t.Fatal(err)
	}
	tg.db, err = sqlx.Open(dbase.driver, dbase.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tg.db.PingContext(ctx); err != nil {
		t.Fatalf("%s test database is configured but unreachable: %v", d, err)
	}
	// A membership of a minute, so that a relay's time alive and the
	// time left of its membership cannot be mistaken for one another.
	tg.store, err = sqlstore.New(tg.db, sqlstore.WithDialect(d), sqlstore.WithTable(tg.table), sqlstore.WithHeartbeat(20*time.Second, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if d != sqlstore.SQLite {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tg.store.Drop(ctx); err != nil {
				t.Errorf("drop %s: %v", tg.table, err)
			}
		})
	}
	return tg
}

// broker acknowledges events except those of the types it fails.
type broker struct {
	mu   sync.Mutex
	fail map[string]error
}

func (b *broker) Publish(_ context.Context, events []*outbox.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	failed := map[string]error{}
	for _, e := range events {
		if err := b.fail[e.Type]; err != nil {
			failed[e.ID] = err
		}
	}
	if len(failed) > 0 {
		return &outbox.PublishError{Failed: failed}
	}
	return nil
}

// seed saves 3 events that the relay publishes, 2 it buries and 1 it
// fails and keeps pending, and returns them by type.
func (tg *target) seed(t *testing.T) map[string][]*outbox.Event {
	t.Helper()
	pub := &broker{fail: map[string]error{
		"stock.poison": outbox.Permanent(errors.New("message too large")),
		"stock.slow":   errors.New("timeout"),
	}}
	ob, err := outbox.New(tg.store, pub)
	if err != nil {
		t.Fatal(err)
	}
	byType := map[string][]*outbox.Event{}
	var events []*outbox.Event
	batch := randomName() // aggregates of this seed only: earlier seeds' dead events hold theirs
	for i, typ := range []string{"stock.ok", "stock.ok", "stock.ok", "stock.poison", "stock.poison", "stock.slow"} {
		e := &outbox.Event{Topic: "stock", Type: typ, AggregateID: fmt.Sprintf("%s-sku-%d", batch, i), Payload: fmt.Appendf(nil, `{"n":%d}`, i),
			Headers: map[string]string{"tenant": "acme"}}
		events = append(events, e)
		byType[typ] = append(byType[typ], e)
	}
	tx, err := tg.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(t.Context(), tx, events...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	res, err := ob.SyncPending(t.Context(), 0)
	if err != nil || res.Synced != 3 || res.Dead != 2 || res.Failed != 1 {
		t.Fatalf("seed: %+v, %v", res, err)
	}
	return byType
}

func (tg *target) status(t *testing.T) statusJSON {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(ok(t, tg.args("status", "--json")...)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// checkPartitions checks the partitions of status --json after seed:
// the store's relay, the only one, owns every partition, and the one
// pending event (slow) is counted in its partition.
func checkPartitions(t *testing.T, tg *target, st statusJSON, parts int, slow *outbox.Event) {
	t.Helper()
	if len(st.Partitions) != parts || st.PartitionsFree != 0 {
		t.Fatalf("status --json: %d partitions, %d free; want %d, all owned", len(st.Partitions), st.PartitionsFree, parts)
	}
	if len(st.Relays) != 1 || st.Relays[0].Partitions != parts || st.Relays[0].ExpiresInSeconds <= 0 {
		t.Fatalf("status --json relays: %+v, want one owning %d partitions", st.Relays, parts)
	}
	// The relay joined moments ago (seed); its membership, renewed for a
	// minute, expires almost a minute from now. Telling one for
	// the other was the bug of "SEEN FOR".
	if r := st.Relays[0]; r.SeenSinceSeconds < 0 || r.SeenSinceSeconds > 20 || r.ExpiresInSeconds < 30 {
		t.Errorf("status --json relay %+v: want seen since a few seconds, expiring in over 30 s", r)
	}
	out := ok(t, tg.args("status")...)
	row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(st.Relays[0].Name) + `\s+` + fmt.Sprint(parts) + `\s+(\S+) ago\s+(\S+)$`).FindStringSubmatch(out)
	if !regexp.MustCompile(`RELAY\s+PARTITIONS\s+SEEN SINCE\s+EXPIRES IN\n`).MatchString(out) || row == nil {
		t.Fatalf("status: no relay row with SEEN SINCE and EXPIRES IN:\n%s", out)
	}
	if since, err := time.ParseDuration(row[1]); err != nil || since > 20*time.Second {
		t.Errorf("status: the relay seen since %s ago, want a few seconds", row[1])
	}
	if exp, err := time.ParseDuration(row[2]); err != nil || exp < 30*time.Second {
		t.Errorf("status: the relay expires in %s, want over 30 s", row[2])
	}
	if owned := tg.store.Owned(); len(owned) != parts {
		t.Fatalf("the store owns %v, want %d partitions", owned, parts)
	}
	var pending int64
	for i, p := range st.Partitions {
		if p.Partition != i || !p.Live || p.Owner != st.Relays[0].Name || p.LeaseLeftSeconds <= 0 || p.Token < 1 {
			t.Errorf("partition %d: %+v, want owned by %s", i, p, st.Relays[0].Name)
		}
		if p.Pending > 0 && p.OldestPendingSeconds < 0 {
			t.Errorf("partition %d: %+v", i, p)
		}
		pending += p.Pending
	}
	var part int
	if err := tg.db.QueryRowContext(t.Context(), "SELECT partition_no FROM "+tg.table+" WHERE id = '"+slow.ID+"'").Scan(&part); err != nil {
		t.Fatal(err)
	}
	if pending != 1 || st.Partitions[part].Pending != 1 {
		t.Errorf("status --json: %d pending over the partitions, %d in partition %d of the pending event; want 1", pending, st.Partitions[part].Pending, part)
	}
}

var dialects = []sqlstore.Dialect{sqlstore.Postgres, sqlstore.MySQL, sqlstore.SQLite}

// TestCommands runs every command against each database.
func TestCommands(t *testing.T) {
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, d)
			latest, err := sqlstore.LatestVersion(d)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("schema version %d", latest)
			if out := ok(t, tg.args("migrate")...); !strings.Contains(out, want) {
				t.Fatalf("migrate: %q", out)
			}
			ok(t, tg.args("migrate")...) // idempotent
			if out := ok(t, tg.args("status")...); !strings.Contains(out, "pending") || !strings.Contains(out, "p99 sync latency") {
				t.Fatalf("status on an empty table: %q", out)
			}
			parts := 64
			if d == sqlstore.SQLite {
				parts = 1
			}
			if out := ok(t, tg.args("status")...); !strings.Contains(out, fmt.Sprintf("partitions: %d, %d free or expired, 0 live relays", parts, parts)) || strings.Contains(out, "RELAY") {
				t.Errorf("status on an empty table, partitions:\n%s", out)
			}
			if st := tg.status(t); len(st.Partitions) != parts || st.PartitionsFree != parts || st.Relays == nil || len(st.Relays) != 0 {
				t.Errorf("status --json on an empty table: %d partitions, %d free, relays %v", len(st.Partitions), st.PartitionsFree, st.Relays)
			}
			ev := tg.seed(t)

			// status, as a table and as JSON.
			out := ok(t, tg.args("status", "--window", "10m")...)
			for _, want := range []string{"pending", "stock.slow", "dead", "synced (last 10m0s)", "avg sync latency"} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
			st := tg.status(t)
			if st.Pending != 1 || st.PendingByType["stock.slow"] != 1 || st.Dead != 2 || st.Synced != 3 || st.WindowSeconds != 3600 {
				t.Fatalf("status --json: %+v", st)
			}
			checkPartitions(t, tg, st, parts, ev["stock.slow"][0])
			for _, want := range []string{fmt.Sprintf("partitions: %d, 0 free or expired, 1 live relay\n", parts), "RELAY", "PARTITION", "LEASE LEFT"} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
			if out := ok(t, tg.args("status", "--partitions", "0")...); strings.Contains(out, "LEASE LEFT") {
				t.Errorf("status --partitions 0 lists partitions:\n%s", out)
			}

			// list, with its filters.
			listJSON := func(args ...string) []eventJSON {
				t.Helper()
				var evs []eventJSON
				if err := json.Unmarshal([]byte(ok(t, tg.args("list", append(args, "--json")...)...)), &evs); err != nil {
					t.Fatal(err)
				}
				return evs
			}
			if evs := listJSON("--status", "pending"); len(evs) != 1 || evs[0].ID != ev["stock.slow"][0].ID || evs[0].Attempts != 1 || evs[0].LastError == "" {
				t.Errorf("list --status pending: %+v", evs)
			}
			// With no --status, list shows every event, synced ones too: a
			// table whose events are all delivered does not look empty.
			if evs := listJSON(); len(evs) != 6 {
				t.Errorf("list (all by default): %d events, want 6", len(evs))
			}
			if out := ok(t, tg.args("list", "--type", "stock.ok")...); strings.Count(out, "synced") != 3 {
				t.Errorf("list --type stock.ok, all synced:\n%s", out)
			}
			if out := ok(t, tg.args("list", "--status", "pending", "--type", "stock.ok")...); out != "no pending events of type stock.ok\n" {
				t.Errorf("list of nothing: %q", out)
			}
			if evs := listJSON("--status", "dead"); len(evs) != 2 || evs[0].Status != outbox.StatusDead {
				t.Errorf("list --status dead: %+v", evs)
			}
			if evs := listJSON("--status", "synced", "--type", "stock.ok"); len(evs) != 3 {
				t.Errorf("list --status synced --type stock.ok: %d events", len(evs))
			}
			if evs := listJSON("--status", "all", "--limit", "4"); len(evs) != 4 {
				t.Errorf("list --status all --limit 4: %d events", len(evs))
			}
			if evs := listJSON("--status", "pending", "--type", "stock.ok"); len(evs) != 0 {
				t.Errorf("list pending of a type with none pending: %+v", evs)
			}
			out = ok(t, tg.args("list", "--status", "dead")...)
			if !strings.Contains(out, "ATTEMPTS") || !strings.Contains(out, ev["stock.poison"][1].ID) || !strings.Contains(out, "message too large") {
				t.Errorf("list --status dead:\n%s", out)
			}

			// show, as text and as JSON.
			dead := ev["stock.poison"][0]
			out = ok(t, tg.args("show", dead.ID)...)
			for _, want := range []string{dead.ID, "dead", "message too large", "header tenant", "acme", `{"n":3}`} {
				if !strings.Contains(out, want) {
					t.Errorf("show lacks %q:\n%s", want, out)
				}
			}
			var shown eventJSON
			if err := json.Unmarshal([]byte(ok(t, tg.args("show", "--json", dead.ID)...)), &shown); err != nil {
				t.Fatal(err)
			}
			if shown.Status != outbox.StatusDead || shown.Payload == nil || *shown.Payload != `{"n":3}` || shown.DeadAt == nil || shown.Headers["tenant"] != "acme" {
				t.Errorf("show --json: %+v", shown)
			}
			fails(t, 1, "not found", tg.args("show", "no-such-id")...)

			// requeue: a dry run changes nothing, then by ID, by type at a
			// rate, and all.
			out = ok(t, tg.args("requeue", "--all", "--dry-run")...)
			if !strings.Contains(out, "would requeue 2 events") || !strings.Contains(out, dead.ID) {
				t.Errorf("requeue --all --dry-run:\n%s", out)
			}
			out = ok(t, tg.args("requeue", "--dry-run", "--id", dead.ID+","+ev["stock.ok"][0].ID, "no-such-id")...)
			if !strings.Contains(out, "would requeue 1 event\n") || !strings.Contains(out, "synced") || !strings.Contains(out, "not found") {
				t.Errorf("requeue --dry-run --id:\n%s", out)
			}
			if st := tg.status(t); st.Dead != 2 {
				t.Fatalf("a dry run changed the table: %+v", st)
			}
			if out := ok(t, tg.args("requeue", "--id", dead.ID)...); !strings.Contains(out, "requeued 1 event\n") {
				t.Errorf("requeue --id: %q", out)
			}
			if st := tg.status(t); st.Dead != 1 || st.Pending != 2 {
				t.Fatalf("after requeue --id: %+v", st)
			}
			start := time.Now()
			if out := ok(t, tg.args("requeue", "--type", "stock.poison", "--rate", "100", "--batch", "1")...); !strings.Contains(out, "requeued 1 event\n") {
				t.Errorf("requeue --type --rate: %q", out)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("requeue of 1 event at 100/s took %v", time.Since(start))
			}
			if st := tg.status(t); st.Dead != 0 || st.Pending != 3 {
				t.Fatalf("after requeue --type: %+v", st)
			}
			got, err := tg.store.Get(t.Context(), dead.ID)
			if err != nil || got.Delivery.Attempts != 0 || got.Delivery.Status() != outbox.StatusPending {
				t.Fatalf("re-queued event: %+v, %v", got, err)
			}
			if out := ok(t, tg.args("requeue", "--all")...); !strings.Contains(out, "requeued 0 events") {
				t.Errorf("requeue --all with none dead: %q", out)
			}

			// purge: nothing is old enough, then everything synced, in
			// batches of 2.
			if out := ok(t, tg.args("purge", "--older-than", "30d")...); !strings.Contains(out, "purged 0 events") {
				t.Errorf("purge --older-than 30d: %q", out)
			}
			time.Sleep(10 * time.Millisecond)
			if out := ok(t, tg.args("purge", "--older-than", "1ms", "--batch", "2")...); !strings.Contains(out, "purged 3 events") {
				t.Errorf("purge --older-than 1ms: %q", out)
			}
			if st := tg.status(t); st.Synced != 0 || st.Pending != 3 {
				t.Fatalf("after purge: %+v", st)
			}

			// The schema version is checked before any command.
			mig := tg.table + "_migrations"
			if _, err := tg.db.ExecContext(t.Context(), fmt.Sprintf("DELETE FROM %s WHERE version = %d", mig, latest)); err != nil {
				t.Fatal(err)
			}
			fails(t, 1, fmt.Sprintf("schema version %d, this tool needs %d", latest-1, latest), tg.args("status")...)
			if _, err := tg.db.ExecContext(t.Context(), "INSERT INTO "+mig+" (version, name, applied_at) VALUES (99, 'future', '2030-01-01 00:00:00')"); err != nil {
				t.Fatal(err)
			}
			fails(t, 1, "newer than this tool knows", tg.args("list")...)
			fails(t, 1, "not set up", "status", "--db", tg.url, "--table", randomName())
		})
	}
}

// TestRequeueRateLimit re-queues 6 events at 20 per second in batches
// of 2: it takes about 0.25 s and three statements.
func TestRequeueRateLimit(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, sqlstore.SQLite)
	ok(t, tg.args("migrate")...)
	for range 3 {
		tg.seed(t)
	}
	start := time.Now()
	out := ok(t, tg.args("requeue", "--all", "--rate", "20", "--batch", "2")...)
	took := time.Since(start)
	if !strings.Contains(out, "requeued 6 events") || strings.Count(out, "so far") != 3 {
		t.Errorf("requeue --rate:\n%s", out)
	}
	if took < 200*time.Millisecond {
		t.Errorf("6 events at 20/s took %v, want at least 0.2s", took)
	}
}

// bury saves n events of type typ and buries them (and any other pending
// event of that type), as a relay would after a permanent failure.
func (tg *target) bury(t *testing.T, typ string, n int) {
	t.Helper()
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = &outbox.Event{ID: outbox.NewID(), Topic: "stock", Type: typ, AggregateID: fmt.Sprintf("sku-%d", i),
			Payload: []byte(`{}`), CreatedAt: time.Now()}
	}
	tx, err := tg.db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := tg.store.Insert(t.Context(), tx, events); err != nil {
		t.Fatal(err)
	}
	// created_at is written in the dialect's time format, which dead_at
	// shares.
	if _, err := tx.ExecContext(t.Context(), fmt.Sprintf("UPDATE %s SET dead_at = created_at, attempts = 1, last_error = 'poison' "+
		"WHERE event_type = '%s' AND synced_at IS NULL AND dead_at IS NULL", tg.table, typ)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// countDead returns how many events of typ ("" for all) are buried.
func (tg *target) countDead(t *testing.T, typ string) int64 {
	t.Helper()
	n, err := tg.store.CountDead(t.Context(), typ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRequeueTypeInBatches re-queues the buried events of a type at a
// rate, in more batches than one, on each database: all of them and no
// other, and a dry run counts them all though it shows only the newest.
func TestRequeueTypeInBatches(t *testing.T) {
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t, d)
			ok(t, tg.args("migrate")...)
			tg.bury(t, "stock.poison", 55)
			tg.bury(t, "stock.other", 3)

			out := ok(t, tg.args("requeue", "--type", "stock.poison", "--dry-run")...)
			if !strings.Contains(out, "would requeue 55 events") || !strings.Contains(out, "… and 5 more") || strings.Count(out, "stock.poison") != 50 {
				t.Errorf("requeue --type --dry-run:\n%s", out)
			}
			out = ok(t, tg.args("requeue", "--all", "--dry-run")...)
			if !strings.Contains(out, "would requeue 58 events") || !strings.Contains(out, "… and 8 more") {
				t.Errorf("requeue --all --dry-run:\n%s", out)
			}

			out = ok(t, tg.args("requeue", "--type", "stock.poison", "--rate", "100000", "--batch", "20")...)
			if !strings.Contains(out, "requeued 55 events") || strings.Count(out, "so far") != 3 || strings.Contains(out, "remain") {
				t.Errorf("requeue --type --rate --batch 20:\n%s", out)
			}
			if n := tg.countDead(t, "stock.poison"); n != 0 {
				t.Errorf("%d stock.poison events still buried", n)
			}
			if n := tg.countDead(t, ""); n != 3 {
				t.Errorf("%d events buried after re-queuing stock.poison, want the 3 stock.other", n)
			}
			if st := tg.status(t); st.Pending != 55 || st.Dead != 3 {
				t.Errorf("after requeue: %+v", st)
			}
		})
	}
}

// TestRequeueBeyondListLimit re-queues at a rate more buried events of a
// type than the largest batch holds: what List returns at once,
// sqlstore.MaxListLimit, lowered here to 10 for speed (so the test does
// not run in parallel). The run is bounded by a COUNT of the buried
// events; it used to be bounded by a List of them, and stopped after
// 10,000.
func TestRequeueBeyondListLimit(t *testing.T) {
	defer func(n int) { maxBatch = n }(maxBatch)
	maxBatch = 10
	tg := newTarget(t, sqlstore.SQLite)
	ok(t, tg.args("migrate")...)
	tg.bury(t, "stock.poison", 25)
	fails(t, 2, "--batch 11 is outside 1..10", tg.args("requeue", "--type", "stock.poison", "--rate", "100000", "--batch", "11")...)
	out := ok(t, tg.args("requeue", "--type", "stock.poison", "--rate", "100000")...) // --batch defaults to the limit
	if !strings.Contains(out, "requeued 25 events") || strings.Count(out, "so far") != 3 {
		t.Errorf("requeue --type --rate of 25 events in batches of 10:\n%s", out)
	}
	if n := tg.countDead(t, "stock.poison"); n != 0 {
		t.Errorf("%d events left buried", n)
	}
}

// TestBadInput checks every kind of mistake on the command line.
func TestBadInput(t *testing.T) {
	tg := newTarget(t, sqlstore.SQLite)
	ok(t, tg.args("migrate")...)
	t.Setenv(EnvDatabaseURL, "")
	missing := "sqlite:" + filepath.Join(t.TempDir(), "missing.db")
	bare := "sqlite:" + filepath.Join(t.TempDir(), "bare.db") // a database with a table, none of the outbox's
	ok(t, "migrate", "--db", bare, "--table", "stock")
	bareDB := sqlx.MustOpen("sqlite", strings.TrimPrefix(bare, "sqlite:"))
	_, err := bareDB.Exec("DROP TABLE stock_migrations")
	bareDB.Close()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "usage: outbox COMMAND"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", tg.args("status", "--bogus"), 2, "flag provided but not defined"},
		{"no database", []string{"status"}, 2, "no database: pass --db URL or set " + EnvDatabaseURL},
		{"unknown scheme", []string{"status", "--db", "redis://127.0.0.1/0"}, 2, `unknown scheme "redis"`},
		{"no scheme", []string{"status", "--db", "just-a-file.db"}, 2, "bad database URL"},
		{"mysql without database", []string{"status", "--db", "mysql://root@127.0.0.1:3306"}, 2, "no database name"},
		{"mysql bad DSN", []string{"status", "--db", "mysql://root@tcp(127.0.0.1:3306)"}, 2, "bad database URL"},
		{"postgres bad parameter", []string{"status", "--db", "postgres://u:secret@127.0.0.1:5432/db?sslmode=bogus"}, 2, "bad database URL"},
		{"sqlite without path", []string{"status", "--db", "sqlite:"}, 2, "no file path"},
		{"sqlite missing file", []string{"status", "--db", missing}, 1, "no SQLite database at"},
		{"unreachable server", []string{"status", "--db", "postgres://u:secret@127.0.0.1:1/db?sslmode=disable", "--timeout", "2s"}, 1, "cannot connect to postgres://u:xxxxx@127.0.0.1:1/db"},
		{"bad table name", tg.args("status", "--table", "no;such"), 2, "sqlstore"},
		{"table not migrated", tg.args("status", "--table", "other_events"), 1,
			`table other_events is not set up in this database; its outbox table is ` + tg.table + `: pass --table ` + tg.table + ` (or run "outbox migrate" to create other_events)`},
		{"no outbox table", []string{"status", "--db", bare, "--table", "other_events"}, 1,
			`table other_events is not set up in this database, which holds no outbox table (run "outbox migrate" to create it)`},
		{"status extra argument", tg.args("status", "extra"), 2, "unexpected arguments"},
		{"status zero window", tg.args("status", "--window", "0s"), 2, "--window 0s is not positive"},
		{"status bad window", tg.args("status", "--window", "soon"), 2, "invalid value"},
		{"status negative partitions", tg.args("status", "--partitions", "-1"), 2, "--partitions -1 is negative"},
		{"list bad status", tg.args("list", "--status", "lost"), 2, `--status "lost": want pending, dead, synced or all`},
		{"list zero limit", tg.args("list", "--limit", "0"), 2, "--limit 0 is outside"},
		{"list huge limit", tg.args("list", "--limit", "1000000"), 2, "--limit 1000000 is outside"},
		{"show without ID", tg.args("show"), 2, "want one event ID, got 0"},
		{"show two IDs", tg.args("show", "a", "b"), 2, "want one event ID, got 2"},
		{"show unknown ID", tg.args("show", "nope"), 1, "not found"},
		{"requeue nothing", tg.args("requeue"), 2, "say what to re-queue"},
		{"requeue all and type", tg.args("requeue", "--all", "--type", "x"), 2, "cannot be combined"},
		{"requeue all and id", tg.args("requeue", "--all", "some-id"), 2, "cannot be combined"},
		{"requeue negative rate", tg.args("requeue", "--all", "--rate", "-1"), 2, "--rate -1 is not a finite number"},
		{"requeue infinite rate", tg.args("requeue", "--all", "--rate", "Inf"), 2, "--rate +Inf is not a finite number"},
		{"requeue NaN rate", tg.args("requeue", "--all", "--rate", "NaN"), 2, "--rate NaN is not a finite number"},
		{"requeue zero batch", tg.args("requeue", "--all", "--rate", "5", "--batch", "0"), 2, "--batch 0 is outside"},
		{"purge without age", tg.args("purge"), 2, "--older-than is required"},
		{"purge bad age", tg.args("purge", "--older-than", "a while"), 2, "want a duration such as 720h or 30d"},
		{"purge negative age", tg.args("purge", "--older-than", "-1h"), 2, "want a duration"},
		{"purge zero batch", tg.args("purge", "--older-than", "1h", "--batch", "0"), 2, "--batch 0 is not positive"},
		{"migrate print without dialect", []string{"migrate", "--print"}, 2, "--print needs --dialect or --db"},
		{"migrate print unknown dialect", []string{"migrate", "--print", "--dialect", "oracle"}, 2, `unknown dialect "oracle"`},
		{"migrate dialect without print", tg.args("migrate", "--dialect", "mysql"), 2, "--dialect goes with --print"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := fails(t, c.code, c.want, c.args...)
			if strings.Contains(errs, "secret") {
				t.Errorf("the password shows in %q", errs)
			}
		})
	}
	if _, err := os.Stat(strings.TrimPrefix(missing, "sqlite:")); err == nil {
		t.Errorf("a read command created the SQLite file")
	}
	if code, out, _ := cli(t, "help"); code != 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("help: exit %d, %q", code, out)
	}
	if code, _, errs := cli(t, "status", "-h"); code != 0 || !strings.Contains(errs, "-window") {
		t.Errorf("status -h: exit %d, %q", code, errs)
	}
	out := ok(t, "migrate", "--print", "--dialect", "postgres", "--table", "app_events")
	if !strings.Contains(out, `CREATE TABLE IF NOT EXISTS "app_events"`) || !strings.Contains(out, "app_events_pending_type_idx") {
		t.Errorf("migrate --print:\n%s", out)
	}
	if out := ok(t, tg.args("migrate", "--print")...); !strings.Contains(out, "AUTOINCREMENT") {
		t.Errorf("migrate --print with a SQLite URL printed another dialect:\n%s", out)
	}
}

func TestParseDB(t *testing.T) {
	t.Parallel()
	cases := []struct {
		url, driver, dsn string
	}{
		{"postgres://u:p@db:5432/app?sslmode=disable", "pgx", "postgres://u:p@db:5432/app?sslmode=disable"},
		{"postgresql://db/app", "pgx", "postgresql://db/app"},
		{"mysql://u:p@db:3307/app?parseTime=true", "mysql", "u:p@tcp(db:3307)/app?parseTime=true"},
		{"mysql://u@db/app", "mysql", "u@tcp(db:3306)/app"},
		{"mysql://u:p@tcp(db:3306)/app", "mysql", "u:p@tcp(db:3306)/app"},
		{"mysql://u:p%40ss@db/app", "mysql", "u:p@ss@tcp(db:3306)/app"},
		{"sqlite:app.db", "sqlite", "file:app.db?_pragma=busy_timeout%285000%29"},
		{"sqlite:///var/lib/app.db?_pragma=busy_timeout(100)", "sqlite", "file:/var/lib/app.db?_pragma=busy_timeout%28100%29"},
	}
	for _, c := range cases {
		d, err := parseDB(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if d.driver != c.driver || d.dsn != c.dsn {
			t.Errorf("%s: %s %q, want %s %q", c.url, d.driver, d.dsn, c.driver, c.dsn)
		}
	}
	for in, want := range map[string]string{
		"mysql://root:hunter2@db:3306/app":        "mysql://root:xxxxx@db:3306/app",
		"mysql://root:p@ss:w/rd@tcp(db:3306)/app": "mysql://root:xxxxx@tcp(db:3306)/app",
		"postgres://root@db/app":                  "postgres://root@db/app",
		"sqlite:a@b.db":                           "sqlite:a@b.db",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseDB: no input makes parseDB panic or leak a password.
func FuzzParseDB(f *testing.F) {
	for _, s := range []string{"postgres://u:secret@h/db", "mysql://u:secret@tcp(h:1)/d", "mysql://u:secret@h/d", "sqlite:x.db", "x", ":", "mysql://@/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := parseDB(s)
		i, at := strings.Index(s, "://"), strings.LastIndex(s, "@")
		userinfo := ""
		if i >= 0 && at > i+3 {
			userinfo = s[i+3 : at]
		}
		_, password, ok := strings.Cut(userinfo, ":")
		if !ok || len(password) < 4 {
			return
		}
		// The password may also appear outside the user information (as
		// the scheme, say), where the error may quote it.
		elsewhere := strings.Contains(s[:i+3], password) || strings.Contains(s[at:], password)
		if err != nil && !elsewhere && strings.Contains(err.Error(), password) {
			t.Errorf("error shows the password %q: %v", password, err)
		}
	})
}

// TestBinary builds the command and runs it once, as an operator would.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "outbox")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	url := "sqlite:" + filepath.Join(t.TempDir(), "app.db")
	cmd := exec.Command(bin, "migrate")
	cmd.Env = append(os.Environ(), EnvDatabaseURL+"="+url)
	latest, err := sqlstore.LatestVersion(sqlstore.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), fmt.Sprintf("schema version %d", latest)) {
		t.Fatalf("outbox migrate: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "status", "--json", "--db", url).Output()
	if err != nil {
		t.Fatalf("outbox status: %v", err)
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil || st.Table != sqlstore.DefaultTable {
		t.Fatalf("status --json: %v, %s", err, out)
	}
	err = exec.Command(bin, "requeue", "--db", url).Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("a usage error exits with %v, want status 2", err)
	}
}
