// Package programtest runs the README's programs (examples/quickstart and
// examples/quickstartpgx) as a user does: a process of its own, against
// the real Postgres and Redis of the test variables, stopped with Ctrl-C
// (SIGINT). Each run works in a Postgres schema and a Redis stream of its
// own, and removes them.
package programtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver for database/sql
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox/redisstream"
)

// RunMainEnv, set to "1", tells a program's TestMain to run main instead
// of the tests: the test binary, re-executed, is the program.
const RunMainEnv = "OUTBOX_PROGRAMTEST_RUN_MAIN"

// RunMain runs main and exits if the process was started by Quickstart;
// call it first in TestMain.
func RunMain(main func()) {
	if os.Getenv(RunMainEnv) == "1" {
		main()
		os.Exit(0)
	}
}

// outcomeLine is the log line a quickstart prints per event.
var outcomeLine = regexp.MustCompile(`event ([0-9a-f-]{36}): (acknowledged|handed to the relay: .+)$`)

// Quickstart re-executes the test binary as the program (see RunMain)
// with DATABASE_URL, REDIS_URL and TOPIC pointing at a schema and a
// stream of its own, and checks what a user would: the stock row changed,
// the event it logs reaches the Redis stream, and Ctrl-C stops it with
// exit status 0 and "stopped". Without OUTBOX_TEST_POSTGRES and
// OUTBOX_TEST_REDIS it skips; with them set, an unreachable server fails.
func Quickstart(t *testing.T) {
	pgURL, redisURL := os.Getenv("OUTBOX_TEST_POSTGRES"), os.Getenv("OUTBOX_TEST_REDIS")
	if pgURL == "" || redisURL == "" {
		t.Skip("set OUTBOX_TEST_POSTGRES and OUTBOX_TEST_REDIS to run the program against real servers")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	schema := "programtest_" + hex.EncodeToString(suffix)
	topic := schema + ".inventory.events"

	db, err := sql.Open("pgx", pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("OUTBOX_TEST_POSTGRES is set but: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS: %v", err)
	}
	rdb := redis.NewClient(ropts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS is set but: %v", err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), topic) })

	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()

	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), RunMainEnv+"=1", "DATABASE_URL="+u.String(), "REDIS_URL="+redisURL, "TOPIC="+topic)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	var log []string
	next := func(what string) string {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the program ended before %s:\n%s", what, strings.Join(log, "\n"))
				}
				log = append(log, l)
				return l
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				t.Fatalf("no %s in time:\n%s", what, strings.Join(log, "\n"))
			}
		}
	}

	var id string
	for id == "" {
		if m := outcomeLine.FindStringSubmatch(next("the event's outcome")); m != nil {
			id = m[1]
		}
	}
	for !strings.HasSuffix(next("the relay's start"), "relay running; Ctrl-C to stop") {
	}

	var quantity int
	if err := db.QueryRowContext(ctx, "SELECT quantity FROM "+schema+".stock WHERE id = 'sku-42'").Scan(&quantity); err != nil || quantity != 8 {
		t.Errorf("stock sku-42: quantity %d, %v; want 8", quantity, err)
	}
	if err := waitForEntry(ctx, rdb, topic, id); err != nil {
		t.Errorf("the event %s never reached the stream %s: %v\n%s", id, topic, err, strings.Join(log, "\n"))
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		log = append(log, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after Ctrl-C: %v\n%s", err, strings.Join(log, "\n"))
	}
	if last := log[len(log)-1]; !strings.HasSuffix(last, "stopped") {
		t.Errorf("last line after Ctrl-C %q, want it to say stopped", last)
	}
}

// waitForEntry waits for the stream to hold the event id.
func waitForEntry(ctx context.Context, rdb *redis.Client, stream, id string) error {
	for {
		entries, err := rdb.XRange(ctx, stream, "-", "+").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for _, x := range entries {
			e, err := redisstream.Decode(x.Values)
			if err != nil {
				return fmt.Errorf("entry %s: %w", x.ID, err)
			}
			if e.ID == id {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d entries, none with the ID: %w", len(entries), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
