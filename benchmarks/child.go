package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// childCommand runs the relay alone in a child process, so that its peak
// memory (VmHWM) is the relay's and nothing else's.
const childCommand = "relay-child"

// childReport is what the child prints when the backlog is drained.
type childReport struct {
	Synced     int64 `json:"synced"`
	StartNanos int64 `json:"start_unix_nano"`
	DoneNanos  int64 `json:"done_unix_nano"`
	FirstNanos int64 `json:"first_unix_nano"` // the first event marked
	VmHWMKB    int64 `json:"vmhwm_kb"`
}

func childMain(args []string) int {
	fs := flag.NewFlagSet(childCommand, flag.ContinueOnError)
	dsn := fs.String("postgres", "", "Postgres URL")
	table := fs.String("table", "", "outbox table")
	addr := fs.String("redis", "", "Redis host:port")
	relays := fs.Int("relays", 1, "relays")
	batch := fs.Int("batch", 1000, "batch size")
	expect := fs.Int("expect", 0, "events to wait for")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	marks := fs.Bool("marks", false, "record delivery per partition (sqlstore.WithWatermarks)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "relay-child:", err); return 1 }
	db, err := sqlx.Open("pgx", *dsn)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	opts := append([]sqlstore.Option{sqlstore.WithTable(*table)}, marksOpt(*marks)...)
	st, err := sqlstore.New(db, opts...)
	if err != nil {
		return fail(err)
	}
	client := redis.NewClient(&redis.Options{Addr: *addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
	defer client.Close()
	pub, err := redisstream.New(client)
	if err != nil {
		return fail(err)
	}
	cs := newDrainCounter(*expect)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *relays {
		// Each relay on a store of its own, as relays in processes of
		// their own: they own partitions apart.
		rs := st
		if i > 0 {
			if rs, err = sqlstore.New(db, opts...); err != nil {
				return fail(err)
			}
		}
		w, err := outbox.New(&countingStore{rs, cs}, pub, outbox.WithBatchSize(*batch))
		if err != nil {
			return fail(err)
		}
		wg.Go(func() { _ = w.Run(ctx) })
	}
	fmt.Println("started")
	select {
	case <-cs.done:
	case <-time.After(*timeout):
	}
	done := time.Now()
	cancel()
	wg.Wait()
	rep := childReport{Synced: cs.synced.Load(), StartNanos: start.UnixNano(), DoneNanos: done.UnixNano(), FirstNanos: cs.first.Load(), VmHWMKB: vmHWM()}
	_ = json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// vmHWM reads this process's peak resident set size in KiB (Linux).
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// bulkFill fills a Postgres outbox table with n pending events in one
// INSERT ... SELECT, for the large backlogs.
func (b *bench) bulkFill(ctx context.Context, table string, n int, topic string) error {
	pl := newEvents(1, 1, 256, "")[0].Payload
	_, err := b.pg.ExecContext(ctx, `INSERT INTO `+table+` (id, topic, event_type, aggregate_id, payload, created_at, next_attempt_at)
SELECT gen_random_uuid()::text, $1, 'stock.updated', 'sku-' || lpad((i % 1000)::text, 6, '0'), $2::bytea,
       now() + i * interval '1 microsecond', now() - interval '1 second'
FROM generate_series(1, $3) AS i`, topic, pl, n)
	if err == nil {
		_, err = b.pg.ExecContext(ctx, "ANALYZE "+table)
	}
	return err
}

// startChild starts the relay in a child process of this program and
// waits until it has started.
func (b *bench) startChild(ctx context.Context, table, redisAddr string, relays, expect int, marks bool) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.CommandContext(ctx, self, childCommand, "-postgres", b.cfg.postgres, "-table", table, "-redis", redisAddr,
		"-relays", strconv.Itoa(relays), "-batch", strconv.Itoa(b.cfg.batch), "-expect", strconv.Itoa(expect), "-timeout", b.cfg.drainTimeout.String(), "-marks="+strconv.FormatBool(marks))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "started" {
		_ = cmd.Wait()
		return nil, nil, nil, fmt.Errorf("relay child did not start: %s", stderr.String())
	}
	return cmd, sc, &stderr, nil
}

func waitChild(cmd *exec.Cmd, sc *bufio.Scanner, stderr *bytes.Buffer) (childReport, error) {
	var rep childReport
	if !sc.Scan() {
		_ = cmd.Wait()
		return rep, fmt.Errorf("relay child: no report: %s", stderr.String())
	}
	if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
		return rep, err
	}
	return rep, cmd.Wait()
}

// runOutage fills a large backlog while the broker is unreachable (cut by
// a TCP proxy in front of Redis), lets 2 relays fail against it until
// their circuit breakers open, then restores the broker and times the
// drain from that moment.
func runOutage(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	down := 3 * time.Second
	if b.cfg.quick {
		down = time.Second
	}
	for _, marks := range []bool{false, true} {
		if err := b.outage(ctx, down, marks); err != nil {
			return err
		}
	}
	return nil
}

// outage is one variant of runOutage: per-event marks, or watermarks.
func (b *bench) outage(ctx context.Context, down time.Duration, marks bool) error {
	name := "outage_recovery_pg_redis_2r"
	if marks {
		name += "_watermarks"
	}
	r, err := median(b.cfg.runs, func(int) (*Result, error) {
		st, table, err := b.newStore(ctx, b.pg, "outage", marksOpt(marks)...)
		if err != nil {
			return nil, err
		}
		_ = st
		defer b.drop(b.pg, table)
		topic := b.stream("outage")
		defer b.rdb.Del(ctx, topic)
		if err := b.bulkFill(ctx, table, b.cfg.bigEvents, topic); err != nil {
			return nil, err
		}
		px, err := testproxy.Start(b.cfg.redis)
		if err != nil {
			return nil, err
		}
		defer px.Close()
		px.Cut()
		// The events are due; the relays find the broker down.
		cmd, sc, stderr, err := b.startChild(ctx, table, px.Addr(), 2, b.cfg.bigEvents, marks)
		if err != nil {
			return nil, err
		}
		time.Sleep(down)
		px.Restore()
		back := time.Now()
		rep, err := waitChild(cmd, sc, stderr)
		if err != nil {
			return nil, err
		}
		res := throughput(name, int(rep.Synced), time.Unix(0, rep.DoneNanos).Sub(back))
		res.PeakRSSMB = round(float64(rep.VmHWMKB)/1024, 1)
		res.Note = fmt.Sprintf("broker cut for %s, then restored; seconds are from the restore to the last mark (includes the breaker's wait for its next probe", down)
		if rep.FirstNanos > 0 {
			res.Note += fmt.Sprintf(": the first event was marked %.2f s after the restore", time.Unix(0, rep.FirstNanos).Sub(back).Seconds())
		}
		res.Note += ")"
		if rep.Synced < int64(b.cfg.bigEvents) {
			res.Note += fmt.Sprintf("; NOT DRAINED: %d of %d events synced when it gave up after %s", rep.Synced, b.cfg.bigEvents, b.cfg.drainTimeout)
		}
		return res, nil
	})
	if err != nil {
		return err
	}
	b.res.add(r)
	b.logf("%s: %.1f s", r.Scenario, r.Seconds)
	return nil
}

// runMemory measures the peak RSS of a relay process (2 relays, as in
// the outage) draining the drain backlog and the large backlog.
func runMemory(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	for _, v := range []struct {
		n     int
		marks bool
	}{{b.cfg.events, false}, {b.cfg.bigEvents, false}, {b.cfg.events, true}, {b.cfg.bigEvents, true}} {
		n := v.n
		var runs []*Result
		for range b.cfg.runs {
			st, table, err := b.newStore(ctx, b.pg, "memory", marksOpt(v.marks)...)
			if err != nil {
				return err
			}
			_ = st
			topic := b.stream("memory")
			err = b.bulkFill(ctx, table, n, topic)
			var rep childReport
			if err == nil {
				var cmd *exec.Cmd
				var sc *bufio.Scanner
				var stderr *bytes.Buffer
				cmd, sc, stderr, err = b.startChild(ctx, table, b.cfg.redis, 2, n, v.marks)
				if err == nil {
					rep, err = waitChild(cmd, sc, stderr)
				}
			}
			b.drop(b.pg, table)
			b.rdb.Del(ctx, topic)
			if err != nil {
				return err
			}
			name := fmt.Sprintf("memory_relay_process_%dk_backlog", n/1000)
			if v.marks {
				name += "_watermarks"
			}
			res := throughput(name, int(rep.Synced), time.Unix(0, rep.DoneNanos).Sub(time.Unix(0, rep.StartNanos)))
			res.PeakRSSMB = round(float64(rep.VmHWMKB)/1024, 1)
			if rep.Synced < int64(n) {
				res.Note = fmt.Sprintf("NOT DRAINED: %d of %d events synced when it gave up after %s", rep.Synced, n, b.cfg.drainTimeout)
			}
			runs = append(runs, res)
		}
		slicesSortByRSS(runs)
		r := runs[len(runs)/2]
		r.Runs = b.cfg.runs
		b.res.add(r)
		b.logf("%s: peak RSS %.1f MB", r.Scenario, r.PeakRSSMB)
	}
	return nil
}

func slicesSortByRSS(rs []*Result) {
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			if rs[j].PeakRSSMB < rs[i].PeakRSSMB {
				rs[i], rs[j] = rs[j], rs[i]
			}
		}
	}
}
