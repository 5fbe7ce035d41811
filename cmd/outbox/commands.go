package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// count is n and noun, in the plural unless n is 1: "1 event", "2 events".
func count(n int64, noun string) string {
	return fmt.Sprintf("%d %s", n, plural(int(n), noun, noun+"s"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func roundDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < time.Millisecond:
		return d.String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// eventJSON is the --json form of an event.
type eventJSON struct {
	ID            string            `json:"id"`
	Status        outbox.Status     `json:"status"`
	Topic         string            `json:"topic"`
	Type          string            `json:"type"`
	AggregateID   string            `json:"aggregate_id"`
	Priority      int               `json:"priority"`
	CreatedAt     time.Time         `json:"created_at"`
	SyncedAt      *time.Time        `json:"synced_at,omitempty"`
	DeadAt        *time.Time        `json:"dead_at,omitempty"`
	Attempts      int               `json:"attempts"`
	NextAttemptAt *time.Time        `json:"next_attempt_at,omitempty"`
	LastError     string            `json:"last_error,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Payload       *string           `json:"payload,omitempty"`        // when it is valid UTF-8
	PayloadBase64 *string           `json:"payload_base64,omitempty"` // otherwise
}

func toJSON(ev *outbox.Event, withPayload bool) eventJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	d := ev.Delivery
	j := eventJSON{
		ID: ev.ID, Status: d.Status(), Topic: ev.Topic, Type: ev.Type, AggregateID: ev.AggregateID,
		Priority: ev.Priority, CreatedAt: ev.CreatedAt, SyncedAt: opt(d.SyncedAt), DeadAt: opt(d.DeadAt),
		Attempts: d.Attempts, LastError: d.LastError, Headers: ev.Headers,
	}
	if d.Status() == outbox.StatusPending {
		j.NextAttemptAt = opt(d.NextAttemptAt)
	}
	if withPayload {
		if utf8.Valid(ev.Payload) {
			s := string(ev.Payload)
			j.Payload = &s
		} else {
			s := base64.StdEncoding.EncodeToString(ev.Payload)
			j.PayloadBase64 = &s
		}
	}
	return j
}

func parseStatus(s string) (outbox.Status, error) {
	switch s {
	case "all":
		return "", nil
	case string(outbox.StatusPending), string(outbox.StatusDead), string(outbox.StatusSynced):
		return outbox.Status(s), nil
	}
	return "", usagef("--status %q: want pending, dead, synced or all", s)
}

func listCommand(fs *flag.FlagSet) body {
	status := fs.String("status", "all", "all (newest first), pending (oldest first), dead or synced")
	typ := fs.String("type", "", "only events of this type")
	limit := fs.Int("limit", sqlstore.DefaultListLimit, fmt.Sprintf("at most this many events (up to %d)", sqlstore.MaxListLimit))
	asJSON := fs.Bool("json", false, "print JSON, one array")
	var f sqlstore.ListFilter
	return body{
		check: func(*env, []string) error {
			st, err := parseStatus(*status)
			if err != nil {
				return err
			}
			if *limit < 1 || *limit > sqlstore.MaxListLimit {
				return usagef("--limit %d is outside 1..%d", *limit, sqlstore.MaxListLimit)
			}
			f = sqlstore.ListFilter{Status: st, Type: *typ, Limit: *limit}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error { return list(ctx, e, f, *asJSON) },
	}
}

func list(ctx context.Context, e *env, f sqlstore.ListFilter, asJSON bool) error {
	events, err := call(ctx, e, e.store.List, f)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]eventJSON, len(events))
		for i, ev := range events {
			out[i] = toJSON(ev, false)
		}
		return writeJSON(e, out)
	}
	if len(events) == 0 {
		what := "events"
		if f.Status != "" {
			what = string(f.Status) + " events"
		}
		if f.Type != "" {
			what += " of type " + f.Type
		}
		e.printf("no %s\n", what)
		return nil
	}
	printEvents(e, events)
	return nil
}

func printEvents(e *env, events []*outbox.Event) {
	if len(events) == 0 {
		e.printf("no events\n")
		return
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATUS\tTYPE\tTOPIC\tAGGREGATE\tATTEMPTS\tCREATED\tLAST ERROR")
	for _, ev := range events {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", ev.ID, ev.Delivery.Status(), ev.Type, ev.Topic,
			ev.AggregateID, ev.Delivery.Attempts, ev.CreatedAt.UTC().Format(time.RFC3339), oneLine(ev.Delivery.LastError, 60))
	}
	_ = w.Flush()
}

// oneLine cuts s to n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func showCommand(fs *flag.FlagSet) body {
	asJSON := fs.Bool("json", false, "print JSON")
	return body{
		takesArgs: true,
		check: func(_ *env, args []string) error {
			if len(args) != 1 {
				return usagef("want one event ID, got %d arguments", len(args))
			}
			return nil
		},
		run: func(ctx context.Context, e *env, args []string) error { return show(ctx, e, args[0], *asJSON) },
	}
}

func show(ctx context.Context, e *env, id string, asJSON bool) error {
	ev, err := call(ctx, e, e.store.Get, id)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(e, toJSON(ev, true))
	}
	d := ev.Delivery
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	tm := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "id\t%s\n", ev.ID)
	fmt.Fprintf(w, "status\t%s\n", d.Status())
	fmt.Fprintf(w, "topic\t%s\n", ev.Topic)
	fmt.Fprintf(w, "type\t%s\n", ev.Type)
	fmt.Fprintf(w, "aggregate\t%s\n", ev.AggregateID)
	fmt.Fprintf(w, "priority\t%d\n", ev.Priority)
	fmt.Fprintf(w, "created\t%s\n", tm(ev.CreatedAt))
	fmt.Fprintf(w, "synced\t%s\n", tm(d.SyncedAt))
	fmt.Fprintf(w, "dead\t%s\n", tm(d.DeadAt))
	fmt.Fprintf(w, "attempts\t%d\n", d.Attempts)
	if d.Status() == outbox.StatusPending {
		fmt.Fprintf(w, "next attempt\t%s\n", tm(d.NextAttemptAt))
	}
	fmt.Fprintf(w, "last error\t%s\n", oneLine(d.LastError, 500))
	for _, k := range slices.Sorted(maps.Keys(ev.Headers)) {
		fmt.Fprintf(w, "header %s\t%s\n", k, ev.Headers[k])
	}
	_ = w.Flush()
	if utf8.Valid(ev.Payload) {
		e.printf("payload (%d bytes):\n%s\n", len(ev.Payload), ev.Payload)
	} else {
		e.printf("payload (%d bytes, base64):\n%s\n", len(ev.Payload), base64.StdEncoding.EncodeToString(ev.Payload))
	}
	return nil
}

// maxBatch is the most events requeue --rate re-queues in one batch: a
// batch is listed first, and List returns at most sqlstore.MaxListLimit
// events. A variable so that tests can go past it with few events.
var maxBatch = sqlstore.MaxListLimit

func requeueCommand(fs *flag.FlagSet) body {
	var ids stringsFlag
	fs.Var(&ids, "id", "a dead event's ID (repeatable, or comma-separated; IDs may also follow the flags)")
	typ := fs.String("type", "", "dead events of this type")
	all := fs.Bool("all", false, "every dead event")
	dryRun := fs.Bool("dry-run", false, "show what would be re-queued, change nothing")
	rate := fs.Float64("rate", 0, "re-queue at most this many events per second (0: all at once)")
	batch := fs.Int("batch", min(500, maxBatch), fmt.Sprintf("events per statement with --rate (up to %d)", maxBatch))
	var f sqlstore.RequeueFilter
	return body{
		takesArgs: true,
		check: func(_ *env, args []string) error {
			f = sqlstore.RequeueFilter{IDs: splitList(append(ids, args...)), Type: *typ, All: *all}
			switch {
			case f.All && (len(f.IDs) > 0 || f.Type != ""):
				return usagef("--all selects every dead event; it cannot be combined with --id or --type")
			case !f.All && len(f.IDs) == 0 && f.Type == "":
				return usagef("say what to re-queue: --id ID, --type TYPE or --all")
			case *rate < 0 || math.IsNaN(*rate) || math.IsInf(*rate, 0):
				return usagef("--rate %v is not a finite number of events per second, 0 or more", *rate)
			case *batch < 1 || *batch > maxBatch:
				return usagef("--batch %d is outside 1..%d", *batch, maxBatch)
			}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error {
			switch {
			case *dryRun:
				return requeueDryRun(ctx, e, f)
			case *rate > 0:
				return requeueAtRate(ctx, e, f, *rate, *batch)
			}
			n, err := call(ctx, e, e.store.Requeue, f)
			if err != nil {
				return err
			}
			e.printf("requeued %s\n", count(int64(n), "event"))
			return nil
		},
	}
}

// deadSelection returns the dead events f selects, and the IDs of f
// that are not dead (with their status). Without IDs it returns the
// newest limit dead events (of f.Type, if set); limit does not apply
// to IDs.
func deadSelection(ctx context.Context, e *env, f sqlstore.RequeueFilter, limit int) ([]*outbox.Event, []string, error) {
	if len(f.IDs) == 0 {
		evs, err := call(ctx, e, e.store.List, sqlstore.ListFilter{Status: outbox.StatusDead, Type: f.Type, Limit: limit})
		return evs, nil, err
	}
	var dead []*outbox.Event
	var skipped []string
	for _, id := range f.IDs {
		ev, err := call(ctx, e, e.store.Get, id)
		switch {
		case errors.Is(err, sqlstore.ErrNotFound):
			skipped = append(skipped, id+" (not found)")
		case err != nil:
			return nil, nil, err
		case ev.Delivery.Status() != outbox.StatusDead:
			skipped = append(skipped, fmt.Sprintf("%s (%s)", id, ev.Delivery.Status()))
		case f.Type != "" && ev.Type != f.Type:
			skipped = append(skipped, fmt.Sprintf("%s (type %s)", id, ev.Type))
		default:
			dead = append(dead, ev)
		}
	}
	return dead, skipped, nil
}

func requeueDryRun(ctx context.Context, e *env, f sqlstore.RequeueFilter) error {
	const shown = 50
	if len(f.IDs) > 0 {
		evs, skipped, err := deadSelection(ctx, e, f, 0)
		if err != nil {
			return err
		}
		e.printf("dry run: would requeue %s\n", count(int64(len(evs)), "event"))
		printEvents(e, evs[:min(len(evs), shown)])
		if len(evs) > shown {
			e.printf("… and %d more\n", len(evs)-shown)
		}
		for _, s := range skipped {
			e.printf("skipped, not dead: %s\n", s)
		}
		return nil
	}
	// By type or all: count them all, show the newest few.
	n, err := call(ctx, e, e.store.CountDead, f.Type)
	if err != nil {
		return err
	}
	evs, _, err := deadSelection(ctx, e, f, shown)
	if err != nil {
		return err
	}
	e.printf("dry run: would requeue %s\n", count(int64(n), "event"))
	printEvents(e, evs)
	if more := n - int64(len(evs)); more > 0 {
		e.printf("… and %d more\n", more)
	}
	return nil
}

// requeueAtRate re-queues the selection a batch at a time, pausing so as
// to stay under rate events per second. With IDs it goes through them;
// by type or all it counts the dead events first (no limit) and goes
// on, a batch of the newest dead at a time, until it has re-queued as
// many as that count, so that events that died again meanwhile are not
// re-queued in a loop. If dead events of the selection remain at the
// end (dead since it started, or re-queued and dead again), it says
// how many.
func requeueAtRate(ctx context.Context, e *env, f sqlstore.RequeueFilter, rate float64, batch int) error {
	step := max(1, int(min(float64(batch), rate))) // rate may be far above any int
	byIDs := len(f.IDs) > 0
	var target int64
	if !byIDs {
		n, err := call(ctx, e, e.store.CountDead, f.Type)
		if err != nil {
			return err
		}
		target = n
	}
	ids := f.IDs
	var total int64
	more := func() bool {
		if byIDs {
			return len(ids) > 0
		}
		return total < target
	}
	for more() {
		var chunk []string
		if byIDs {
			n := min(step, len(ids))
			chunk, ids = ids[:n], ids[n:]
		} else {
			evs, _, err := deadSelection(ctx, e, sqlstore.RequeueFilter{Type: f.Type}, int(min(int64(step), target-total)))
			if err != nil {
				return err
			}
			for _, ev := range evs {
				chunk = append(chunk, ev.ID)
			}
			if len(chunk) == 0 {
				break // re-queued meanwhile by someone else: nothing left
			}
		}
		start := time.Now()
		n, err := call(ctx, e, e.store.Requeue, sqlstore.RequeueFilter{IDs: chunk, Type: f.Type})
		total += int64(n)
		if err != nil {
			e.printf("requeued %s before the error\n", count(total, "event"))
			return err
		}
		e.printf("requeued %d (%d so far)\n", n, total)
		if n == 0 && !byIDs {
			break // raced with another operator: nothing left to do
		}
		pause := time.Duration(float64(len(chunk))/rate*float64(time.Second)) - time.Since(start)
		if pause > 0 && more() {
			select {
			case <-ctx.Done():
				e.printf("requeued %s, interrupted\n", count(total, "event"))
				return ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	e.printf("requeued %s\n", count(total, "event"))
	if !byIDs {
		// The re-queue is done: a failed count only loses the reminder.
		left, err := call(ctx, e, e.store.CountDead, f.Type)
		if err != nil {
			fmt.Fprintf(e.stderr, "outbox requeue: cannot count the dead events left: %v\n", err)
		} else if left > 0 {
			e.printf("%d dead events of this selection remain (dead again, or since the count): run again to re-queue them\n", left)
		}
	}
	return nil
}

func purgeCommand(fs *flag.FlagSet) body {
	olderThan := fs.String("older-than", "", "delete events synced longer ago than this: a Go duration (720h) or days (30d); required")
	batch := fs.Int("batch", 1000, "events deleted per statement")
	var age time.Duration
	return body{
		check: func(*env, []string) error {
			if *olderThan == "" {
				return usagef("--older-than is required (e.g. 720h or 30d)")
			}
			var err error
			if age, err = parseAge(*olderThan); err != nil {
				return err
			}
			if *batch < 1 {
				return usagef("--batch %d is not positive", *batch)
			}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error { return purge(ctx, e, age, *batch, *olderThan) },
	}
}

// purge deletes the events synced longer than age ago, batch at a time;
// asked is age as the operator wrote it.
func purge(ctx context.Context, e *env, age time.Duration, batch int, asked string) error {
	total := 0
	for {
		n, err := bounded(ctx, e, func(ctx context.Context) (int, error) { return e.store.Purge(ctx, age, batch) })
		total += n
		if err != nil {
			e.printf("purged %s before the error\n", count(int64(total), "event"))
			return err
		}
		if n < batch {
			break
		}
		if ctx.Err() != nil {
			e.printf("purged %s, interrupted\n", count(int64(total), "event"))
			return ctx.Err()
		}
	}
	e.printf("purged %s synced more than %s ago\n", count(int64(total), "event"), asked)
	return nil
}

// parseAge reads a Go duration or a whole number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 && n < 1<<20 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usagef("--older-than %q: want a duration such as 720h or 30d", s)
	}
	return d, nil
}

func migrateCommand(fs *flag.FlagSet) body {
	printSQL := fs.Bool("print", false, "print the schema's SQL instead of applying it")
	dialect := fs.String("dialect", "", "with --print and no --db: postgres, mysql or sqlite")
	period := fs.Duration("time-partitions", 0, "Postgres: create a new table partitioned by save time, each partition this wide (e.g. 24h; see docs/databases-and-migrations.md)")
	ahead := fs.Duration("ahead", 0, "with --time-partitions: how far past now to create partitions (0: two days)")
	var sql string
	return body{
		offline: printSQL,
		check: func(e *env, _ []string) error {
			switch {
			case *period < 0 || *ahead < 0:
				return usagef("--time-partitions %v and --ahead %v must not be negative", *period, *ahead)
			case *ahead > 0 && *period == 0:
				return usagef("--ahead goes with --time-partitions")
			case *period > 0 && *printSQL:
				return usagef("--print prints the default layout only; create a time-partitioned table with migrate --time-partitions")
			}
			if !*printSQL {
				if *dialect != "" {
					return usagef("--dialect goes with --print; to apply, the --db URL names the database")
				}
				return nil
			}
			d := sqlstore.Dialect(*dialect)
			switch {
			case d == "" && e.dbURL == "":
				return usagef("--print needs --dialect or --db")
			case d == "":
				db, err := parseDB(e.dbURL)
				if err != nil {
					return usageError{err.Error()}
				}
				d = db.dialect
			}
			var err error
			if sql, err = sqlstore.Schema(d, e.table); err != nil {
				return usageError{err.Error()}
			}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error {
			if *printSQL {
				e.printf("%s\n", sql)
				return nil
			}
			if *period > 0 {
				s, err := sqlstore.New(e.db, sqlstore.WithDialect(e.dbase.dialect), sqlstore.WithTable(e.table), sqlstore.WithTimePartitions(*period, *ahead))
				if err != nil {
					return usageError{err.Error()}
				}
				e.store = s
			}
			return migrate(ctx, e)
		},
	}
}

func migrate(ctx context.Context, e *env) error {
	if err := do(ctx, e, e.store.Migrate); err != nil {
		return err
	}
	v, err := bounded(ctx, e, e.store.Version)
	if err != nil {
		return err
	}
	e.printf("table %s is at schema version %d\n", e.table, v)
	tp, err := bounded(ctx, e, e.store.TimePartitions)
	if err != nil || !tp.Partitioned {
		return err
	}
	e.printf("partitioned by save time: %d partitions of %s, runway %s\n", tp.Partitions, roundDuration(tp.Period), roundDuration(tp.Runway))
	return nil
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
