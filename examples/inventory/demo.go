package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// The relay's settings in the demo: short, so the story takes seconds.
const (
	demoInterval   = 250 * time.Millisecond
	demoBackoffMin = 100 * time.Millisecond
	demoBackoffMax = time.Second
	demoTimeout    = 2 * time.Second
	demoDrainLimit = 30 * time.Second
)

// demo runs the scripted story of runDemo and keeps its score.
type demo struct {
	a      *app
	out    io.Writer
	failed int
	// committed lists every event the demo's writes committed, in commit
	// order; byID finds its aggregate.
	committed []*outbox.Event
}

// runDemo tells the outbox's story on the embedded defaults: a temporary
// SQLite file and an in-process Redis, both its own, so it never touches
// the user's files or servers. It writes a report to out and returns an
// error if any check failed. main runs it for "inventory demo", and so
// does a test.
func runDemo(ctx context.Context, out io.Writer, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "inventory-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cfg := config{
		DB:        sqliteConfig(filepath.Join(dir, "inventory.db")),
		Publisher: publisherRedis, // RedisURL empty: in-process miniredis
		Topic:     defaultTopic,
		Outbox: []outbox.Option{
			outbox.WithInterval(demoInterval),
			outbox.WithBackoff(demoBackoffMin, demoBackoffMax),
			outbox.WithTimeout(demoTimeout),
		},
	}
	a, err := newApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.close()

	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- a.run(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
	}()

	d := &demo{a: a, out: out}
	d.printf("Inventory demo: a temporary SQLite database and an in-process Redis (miniredis at %s)\n", a.miniredis.Addr())
	d.printf("relay: pass every %v, retry backoff %v..%v; events go to the stream %q\n", demoInterval, demoBackoffMin, demoBackoffMax, cfg.Topic)
	if err := d.story(ctx); err != nil {
		d.check(false, "the story stopped: %v", err)
	}
	d.printf("\n")
	if d.failed > 0 {
		d.printf("FAIL: %d check(s) failed\n", d.failed)
		return fmt.Errorf("%d check(s) failed", d.failed)
	}
	d.printf("PASS: every committed event reached the stream exactly once, in order per stock item\n")
	return nil
}

func (d *demo) story(ctx context.Context) error {
	a := d.a

	d.printf("\n1. Broker up: each change commits with its event, which is published at once\n")
	published, n := 0, 0
	for _, step := range []func() (EventRef, error){
		d.stock(ctx, "s1", "p1", 10),
		d.stock(ctx, "s1", "p2", 5),
		d.stock(ctx, "s2", "p1", 3),
		d.reserve(ctx, "s1", "p1", 2),
		d.reserve(ctx, "s1", "p2", 1),
		d.reserve(ctx, "s2", "p1", 5), // short: refused
		d.stock(ctx, "s1", "p1", 20),
	} {
		ref, err := step()
		if err != nil {
			return err
		}
		if ref.ID != "" {
			n++
			if ref.Published {
				published++
			}
		}
	}
	// The relay may claim a just-committed event before the immediate
	// publication does, or hold one behind an earlier event of its stock
	// item in flight: the publication then hands it to the relay, which
	// delivers it on its own pass.
	stats, err := d.waitPending(ctx, 0, 2*time.Second)
	if err != nil {
		return err
	}
	d.check(stats.Pending == 0 && stats.Synced == int64(n), "%d events committed: %d acknowledged at once, %d handed to the relay and delivered by it, %d pending",
		n, published, stats.Synced-int64(published), stats.Pending)

	d.printf("\n2. Broker down (the in-process Redis is stopped): writes still succeed, events wait in the table\n")
	a.miniredis.Close()
	down, publishedWhileDown := 0, 0
	for _, step := range []func() (EventRef, error){
		d.stock(ctx, "s1", "p2", 8),
		d.reserve(ctx, "s1", "p1", 4),
		d.reserve(ctx, "s1", "p1", 1),
		d.stock(ctx, "s3", "p9", 7),
		d.reserve(ctx, "s3", "p9", 7),
		d.reserve(ctx, "s2", "p1", 3),
	} {
		ref, err := step()
		if err != nil {
			return fmt.Errorf("a write failed while the broker was down: %w", err)
		}
		down++
		if ref.Published {
			publishedWhileDown++
		}
	}
	time.Sleep(3 * demoInterval) // let the relay try, and fail, a few times
	stats, err = a.store.Stats(ctx, time.Hour)
	if err != nil {
		return err
	}
	pending, err := a.store.List(ctx, sqlstore.ListFilter{Status: outbox.StatusPending, Limit: 100})
	if err != nil {
		return err
	}
	attempts := 0
	for _, e := range pending {
		attempts += e.Delivery.Attempts
	}
	d.check(publishedWhileDown == 0 && stats.Pending == int64(down),
		"%d writes committed while Redis was down; %d events pending (oldest %v, %d failed attempts so far)",
		down, stats.Pending, stats.OldestPendingAge.Round(time.Millisecond), attempts)

	d.printf("\n3. Broker back (Redis restarted on the same address): the relay drains the backlog on its own\n")
	if err := a.miniredis.Restart(); err != nil {
		return fmt.Errorf("restart the in-process Redis: %w", err)
	}
	start := time.Now()
	if stats, err = d.waitPending(ctx, 0, demoDrainLimit); err != nil {
		return err
	}
	took := time.Since(start).Round(time.Millisecond)
	d.check(stats.Pending == 0, "%d pending events delivered by the relay %v after Redis came back (%d still pending)", down, took, stats.Pending)

	d.printf("\n4. Final check of the stream %q against the outbox table\n", a.cfg.Topic)
	return d.verify(ctx)
}

// verify reads the whole stream back and compares it with what the demo
// committed.
func (d *demo) verify(ctx context.Context) error {
	entries, err := d.a.redis.XRange(ctx, d.a.cfg.Topic, "-", "+").Result()
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	seen := map[string]int{}
	perAgg := map[string][]string{} // aggregate -> event IDs in stream order
	for _, x := range entries {
		e, err := redisstream.Decode(x.Values)
		if err != nil {
			return fmt.Errorf("stream entry %s: %w", x.ID, err)
		}
		seen[e.ID]++
		perAgg[e.AggregateID] = append(perAgg[e.AggregateID], e.ID)
	}
	want := map[string][]string{}
	missing, dups := 0, 0
	for _, e := range d.committed {
		want[e.AggregateID] = append(want[e.AggregateID], e.ID)
		switch seen[e.ID] {
		case 0:
			missing++
		case 1:
		default:
			dups++
		}
	}
	d.check(len(entries) == len(d.committed) && missing == 0 && dups == 0,
		"%d stream entries for %d committed events: %d missing, %d duplicated", len(entries), len(d.committed), missing, dups)

	outOfOrder := []string{}
	for agg, ids := range want {
		if strings.Join(ids, ",") != strings.Join(perAgg[agg], ",") {
			outOfOrder = append(outOfOrder, fmt.Sprintf("%s arrived as %v", agg, positions(ids, perAgg[agg])))
		}
	}
	d.check(len(outOfOrder) == 0, "events of each of the %d stock items are in commit order%s", len(want), list(" (out of order, by commit position: ", outOfOrder, ")"))

	stats, err := d.a.store.Stats(ctx, time.Hour)
	if err != nil {
		return err
	}
	d.check(stats.Synced == int64(len(d.committed)) && stats.Pending == 0 && stats.Dead == 0,
		"outbox table: %d synced, %d pending, %d dead", stats.Synced, stats.Pending, stats.Dead)
	return nil
}

// stock returns a step that sets a stock level and reports it.
func (d *demo) stock(ctx context.Context, store, product string, q int64) func() (EventRef, error) {
	return func() (EventRef, error) {
		_, ref, err := d.a.api.stock.UpdateStock(ctx, store, product, q)
		if err != nil {
			return ref, err
		}
		d.saved(ref, aggregateID(store, product), fmt.Sprintf("quantity %d", q))
		return ref, nil
	}
}

// reserve returns a step that reserves stock and reports it; a refusal for
// short stock is part of the story, and must write nothing.
func (d *demo) reserve(ctx context.Context, store, product string, q int64) func() (EventRef, error) {
	return func() (EventRef, error) {
		before, err := d.a.store.Stats(ctx, time.Hour)
		if err != nil {
			return EventRef{}, err
		}
		_, remaining, ref, err := d.a.api.reservations.CreateReservation(ctx, store, product, q)
		if errors.Is(err, ErrInsufficientStock) {
			after, err := d.a.store.Stats(ctx, time.Hour)
			if err != nil {
				return EventRef{}, err
			}
			written := (after.Pending + after.Synced + after.Dead) - (before.Pending + before.Synced + before.Dead)
			d.printf("   %-20s %-6s reserve %d: refused, stock is short\n", "(no event)", aggregateID(store, product), q)
			d.check(written == 0, "refused reservation wrote no event")
			return EventRef{}, nil
		}
		if err != nil {
			return ref, err
		}
		d.saved(ref, aggregateID(store, product), fmt.Sprintf("reserve %d, %d left", q, remaining))
		return ref, nil
	}
}

func (d *demo) saved(ref EventRef, agg, what string) {
	d.committed = append(d.committed, &outbox.Event{ID: ref.ID, AggregateID: agg})
	d.printf("   %-20s %-6s %-18s saved, %s\n", ref.Type, agg, what, ref.Outcome)
}

func (d *demo) check(ok bool, format string, args ...any) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		d.failed++
	}
	d.printf("   %s %s\n", mark, fmt.Sprintf(format, args...))
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func list(prefix string, items []string, suffix string) string {
	if len(items) == 0 {
		return ""
	}
	return prefix + strings.Join(items, ", ") + suffix
}

// positions returns, for each ID of got, its 1-based position in want (0
// if absent): [1 2 3] is in order, [1 3 2] is not.
func positions(want, got []string) []int {
	pos := make(map[string]int, len(want))
	for i, id := range want {
		pos[id] = i + 1
	}
	out := make([]int, len(got))
	for i, id := range got {
		out[i] = pos[id]
	}
	return out
}

// waitPending waits up to limit for the pending count to fall to want.
func (d *demo) waitPending(ctx context.Context, want int64, limit time.Duration) (outbox.Stats, error) {
	start := time.Now()
	for {
		stats, err := d.a.store.Stats(ctx, time.Hour)
		if err != nil || stats.Pending <= want || time.Since(start) > limit {
			return stats, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
