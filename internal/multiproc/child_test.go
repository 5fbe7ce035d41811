package multiproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// childEnv holds, in a re-executed test binary, the JSON configuration of
// the relay process it is to be (see TestMain).
const childEnv = "OUTBOX_MULTIPROC_CHILD"

// childConfig is what a relay process runs with.
type childConfig struct {
	Driver, DSN, Table string
	Redis, Stream      string // Redis host:port; the one stream of every event
	Name               string // the relay's name in the partitions table
	// IntervalMillis is the relay's interval; timeout and lease keep the
	// outbox's defaults, so that the tests measure what a user gets.
	IntervalMillis int
}

// The lines a relay process writes on stdout, one per line:
//
//	ready                  the relay runs and takes commands
//	ok <id>                the write of event id committed (and its
//	                       publication at once was tried)
//	err <id> <message>     the write of event id failed
//	b <id,id,...>          a batch is about to be published (relay or
//	                       at once after commit)
//	d <id,id,...>          that batch's outcome is recorded
//	left                   Run returned: the relay gave its partitions back
//
// It reads commands on stdin, one per line, and runs each at once,
// several at a time:
//
//	w <id> <aggregate> <seq>   write event id of aggregate, the seq-th of
//	                           it, in a transaction of its own, and publish
//	                           it at once after commit (outbox.Transact)

// relayChild runs one relay process until SIGTERM and returns its exit
// code.
func relayChild(raw string) int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "relay child:", err)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "relay child:", err); return 1 }
	db, err := sqlx.Open(cfg.Driver, cfg.DSN)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(16)
	store, err := sqlstore.New(db, sqlstore.WithTable(cfg.Table), sqlstore.WithRelayName(cfg.Name))
	if err != nil {
		return fail(err)
	}
	client := redis.NewClient(&redis.Options{Addr: cfg.Redis})
	defer client.Close()
	pub, err := redisstream.New(client, redisstream.WithStream(func(*outbox.Event) string { return cfg.Stream }))
	if err != nil {
		return fail(err)
	}
	out := &lineWriter{}
	logger := slogToStderr()
	ob, err := outbox.New(store, pub,
		outbox.WithInterval(time.Duration(cfg.IntervalMillis)*time.Millisecond),
		outbox.WithLogger(logger), outbox.WithHooks(batchHook{out}))
	if err != nil {
		return fail(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- ob.Run(ctx) }()

	// Commands: each in a goroutine of its own, on a context a SIGTERM
	// does not end (the parent sends none while a write is in flight).
	var writes sync.WaitGroup
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "w" {
				out.say("err ? bad command %q", sc.Text())
				continue
			}
			writes.Go(func() {
				if err := write(ob, db, f[1], f[2], f[3]); err != nil {
					out.say("err %s %s", f[1], strings.ReplaceAll(err.Error(), "\n", " "))
					return
				}
				out.say("ok %s", f[1])
			})
		}
	}()
	out.say("ready")
	err = <-runDone
	writes.Wait()
	if err != nil {
		return fail(err)
	}
	out.say("left")
	return 0
}

// write saves one event in a transaction of its own and publishes it at
// once after commit, as a service does.
func write(ob *outbox.Outbox, db *sqlx.DB, id, agg, seq string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ob.Transact(ctx, db, func(tx *outbox.Tx) error {
		return tx.Save(ctx, &outbox.Event{ID: id, Topic: "multiproc", Type: "multiproc.written",
			AggregateID: agg, Payload: fmt.Appendf(nil, `{"seq":%s}`, seq)})
	})
	return err
}

// lineWriter writes whole lines to stdout, unbuffered, so that a line is
// out before the step it reports is followed by the next.
type lineWriter struct{ mu sync.Mutex }

func (w *lineWriter) say(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// batchHook reports each batch before it is published and once its
// outcome is recorded.
type batchHook struct{ out *lineWriter }

func (h batchHook) BeforePublish(ctx context.Context, b outbox.PublishStart) context.Context {
	h.out.say("b %s", joinIDs(b.Events))
	return ctx
}

func (h batchHook) AfterPublish(_ context.Context, d outbox.PublishDone) {
	h.out.say("d %s", joinIDs(d.Events))
}

func joinIDs(events []*outbox.Event) string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return strings.Join(ids, ",")
}

// slogToStderr logs the relay's warnings (a lost lease, say) to stderr,
// which the parent shows when a test fails.
func slogToStderr() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())
}
