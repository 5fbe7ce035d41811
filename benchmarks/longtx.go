package main

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
)

// runLongTx measures delivery while transactions stay open for minutes:
// a relay (Run, woken by notifications) on a Store WithWatermarks, and a
// writer saving one event per transaction every 5 ms. After the first
// minute, three transactions are opened and held to the end: one in
// another database of the server that took a transaction ID and writes
// nothing, one in this database with nothing written, and one in this
// database that saved an outbox event of its own. The latency of the
// writer's events (commit -> broker ack) is reported for the first minute
// (no long transaction) and for the last one, with the heartbeat's
// duration, which reads and writes the partitions table whose dead row
// versions the open transactions keep. Only run when named in -only (it
// lasts -longtx-for).
func runLongTx(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	// Watermarks only: a relay that marks per row reads the pending
	// events by seq and has no horizon a transaction could hold.
	for _, marks := range []bool{true} {
		r, err := b.longTx(ctx, marks)
		if err != nil {
			return err
		}
		for _, x := range r {
			b.res.add(x)
			b.logf("%s: p50 %.0f µs, p99 %.0f µs; %s", x.Scenario, x.P50us, x.P99us, x.Note)
		}
	}
	return nil
}

// beatTimer passes the relay's heartbeats on and records how long each
// took.
type beatTimer struct {
	*sqlstore.Store
	mu    sync.Mutex
	beats []beat
}

type beat struct {
	at   time.Time
	took time.Duration
}

func (t *beatTimer) Heartbeat(ctx context.Context) (time.Duration, bool, error) {
	start := time.Now()
	d, r, err := t.Store.Heartbeat(ctx)
	t.mu.Lock()
	t.beats = append(t.beats, beat{start, time.Since(start)})
	t.mu.Unlock()
	return d, r, err
}

var _ storage.Owner = (*beatTimer)(nil)

func (b *bench) longTx(ctx context.Context, marks bool) ([]*Result, error) {
	total := b.cfg.longTxFor
	warm := min(time.Minute, total/4)
	st, table, err := b.newStore(ctx, b.pg, "longtx", marksOpt(marks)...)
	if err != nil {
		return nil, err
	}
	defer b.drop(b.pg, table)
	topic := b.stream("longtx")
	defer b.rdb.Del(ctx, topic)
	pub, closePub, err := b.redisPublisher()(topic)
	if err != nil {
		return nil, err
	}
	defer closePub()
	rec := &ackRecorder{Publisher: pub, acks: map[string]time.Time{}}
	bt := &beatTimer{Store: st}
	ob, err := outbox.New(bt, rec, outbox.WithBatchSize(b.cfg.batch))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = ob.Run(rctx) })
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)

	type commit struct {
		id string
		at time.Time
	}
	var commits []commit
	start := time.Now()
	var opened time.Time
	var holders []func()
	defer func() {
		for _, h := range holders {
			h()
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; time.Since(start) < total; i++ {
		<-tick.C
		if opened.IsZero() && time.Since(start) >= warm {
			if holders, err = b.openLongTxs(ctx, ob, topic); err != nil {
				return nil, err
			}
			opened = time.Now()
		}
		e := &outbox.Event{Topic: topic, Type: "stock.updated", AggregateID: fmt.Sprintf("sku-%d", i%100), Payload: []byte(`{"quantity":8}`)}
		tx, err := b.pg.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		if err := ob.Save(ctx, tx, e); err != nil {
			_ = tx.Rollback()
			return nil, err
		}
		if err := tx.Commit(); err != nil {
			return nil, err
		}
		commits = append(commits, commit{e.ID, time.Now()})
	}
	// Wait for the last events.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := rec.ackedAt(commits[len(commits)-1].id); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mode := "per_row"
	if marks {
		mode = "watermarks"
	}
	window := func(name string, from, to time.Time) *Result {
		var lat []time.Duration
		missing := 0
		for _, c := range commits {
			if c.at.Before(from) || !c.at.Before(to) {
				continue
			}
			at, ok := rec.ackedAt(c.id)
			if !ok {
				missing++
				continue
			}
			lat = append(lat, at.Sub(c.at))
		}
		slices.Sort(lat)
		bt.mu.Lock()
		var beats []time.Duration
		for _, x := range bt.beats {
			if !x.at.Before(from) && x.at.Before(to) {
				beats = append(beats, x.took)
			}
		}
		bt.mu.Unlock()
		slices.Sort(beats)
		r := &Result{Scenario: "longtx_" + mode + "_" + name, Events: len(lat), Runs: 1,
			P50us: percentile(lat, 50), P99us: percentile(lat, 99)}
		r.Note = fmt.Sprintf("commit -> ack, relay woken by notifications; heartbeats %d, p50 %.1f ms, max %.1f ms",
			len(beats), percentile(beats, 50)/1000, percentile(beats, 100)/1000)
		if missing > 0 {
			r.Note += fmt.Sprintf("; %d events NOT acknowledged", missing)
		}
		return r
	}
	end := commits[len(commits)-1].at.Add(time.Nanosecond)
	return []*Result{
		window("first_minute_no_long_tx", start, opened),
		window(fmt.Sprintf("last_minute_long_tx_open_%s", end.Sub(opened).Round(time.Minute)), end.Add(-warm), end),
	}, nil
}

// openLongTxs opens the three long transactions and returns what ends
// them.
func (b *bench) openLongTxs(ctx context.Context, ob *outbox.Outbox, topic string) ([]func(), error) {
	var ends []func()
	// Another database of the server: the maintenance database postgres,
	// where this only takes a transaction ID.
	u, err := url.Parse(b.cfg.postgres)
	if err != nil {
		return nil, err
	}
	u.Path = "/postgres"
	other, err := sqlx.Open("pgx", u.String())
	if err != nil {
		return nil, err
	}
	ends = append(ends, func() { other.Close() })
	for _, h := range []struct {
		db    *sqlx.DB
		event bool
	}{{other, false}, {b.pg, false}, {b.pg, true}} {
		tx, err := h.db.BeginTx(ctx, nil)
		if err != nil {
			return ends, err
		}
		ends = append([]func(){func() { _ = tx.Rollback() }}, ends...)
		if _, err := tx.ExecContext(ctx, "SELECT txid_current()"); err != nil {
			return ends, err
		}
		if h.event {
			e := &outbox.Event{Topic: topic, Type: "held.open", AggregateID: "long-tx", Payload: []byte(`{}`)}
			if err := ob.Save(ctx, tx, e); err != nil {
				return ends, err
			}
		}
	}
	return ends, nil
}
