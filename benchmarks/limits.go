package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsync/outbox/kafka"
)

// runLimits measures what the database and the broker can do alone: the
// ceilings every relay figure is compared with.
func runLimits(ctx context.Context, b *bench) error {
	if b.pg != nil {
		for _, workers := range []int{1, 2} {
			r, err := median(b.cfg.runs, func(int) (*Result, error) {
				return b.dbLimit(ctx, b.pg, "pg", workers, b.cfg.events)
			})
			if err != nil {
				return err
			}
			b.res.add(r)
		}
	}
	if b.my != nil {
		r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.dbLimit(ctx, b.my, "mysql", 1, b.cfg.events) })
		if err != nil {
			return err
		}
		b.res.add(r)
	}
	r, err := median(b.cfg.runs, func(int) (*Result, error) {
		db, err := b.sqlite(ctx)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return b.dbLimit(ctx, db, "sqlite", 1, b.cfg.events)
	})
	if err != nil {
		return err
	}
	b.res.add(r)

	if b.pg != nil {
		r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.readXaddLimit(ctx, b.cfg.events) })
		if err != nil {
			return err
		}
		b.res.add(r)
	}
	for _, per := range []int{1000, 1} {
		n := b.cfg.events
		if per == 1 {
			n = min(n, 20_000) // one round trip per event: a smaller sample says as much
		}
		r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.xaddLimit(ctx, n, per) })
		if err != nil {
			return err
		}
		b.res.add(r)
	}
	r, err = median(b.cfg.runs, func(int) (*Result, error) { return kafkaLimit(ctx, b.cfg.events, 1000) })
	if err != nil {
		return err
	}
	b.res.add(r)
	return nil
}

// claimMarkSQL returns the statement that claims and marks up to 1,000
// due events of table in one go and returns what a relay would publish,
// for the dialects with UPDATE ... RETURNING.
func claimMarkSQL(table, now string) string {
	return "UPDATE " + table + " SET synced_at = " + now + " WHERE seq IN (SELECT seq FROM " + table +
		" WHERE synced_at IS NULL AND dead_at IS NULL ORDER BY priority DESC, seq LIMIT 1000{lock}) RETURNING id, topic, event_type, aggregate_id, payload, headers, created_at"
}

// dbLimit drains a backlog of n events from the SDK's table with the
// fewest statements the database allows: one claim+mark per 1,000 rows,
// reading every column a relay publishes, with no broker. It is the
// ceiling of any relay on that database.
func (b *bench) dbLimit(ctx context.Context, db *sqlx.DB, what string, workers, n int) (*Result, error) {
	st, table, err := b.newStore(ctx, db, "limit_"+what)
	if err != nil {
		return nil, err
	}
	defer b.drop(db, table)
	if err := fillStore(ctx, db, st, n, defaultAggregates, "t"); err != nil {
		return nil, err
	}
	var stmt string
	switch what {
	case "pg":
		stmt = strings.Replace(claimMarkSQL(table, "now()"), "{lock}", " FOR UPDATE SKIP LOCKED", 1)
	case "sqlite":
		stmt = strings.Replace(claimMarkSQL(table, "strftime('%Y-%m-%d %H:%M:%f','now')"), "{lock}", "", 1)
	}
	pass := func() (int, error) {
		if stmt != "" {
			rows, err := db.QueryContext(ctx, stmt)
			if err != nil {
				return 0, err
			}
			defer rows.Close()
			k := 0
			var id, topic, typ, agg string
			var pl []byte
			var headers, created any
			for rows.Next() {
				if err := rows.Scan(&id, &topic, &typ, &agg, &pl, &headers, &created); err != nil {
					return k, err
				}
				k++
			}
			return k, rows.Err()
		}
		// MySQL: no UPDATE ... RETURNING; a READ COMMITTED transaction that
		// locks, reads and marks.
		tx, err := db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return 0, err
		}
		defer tx.Rollback()
		rows, err := tx.QueryContext(ctx, "SELECT seq, id, topic, event_type, aggregate_id, payload, headers, created_at FROM "+table+
			" WHERE synced_at IS NULL AND dead_at IS NULL ORDER BY priority DESC, seq LIMIT 1000 FOR UPDATE SKIP LOCKED")
		if err != nil {
			return 0, err
		}
		var seqs []string
		for rows.Next() {
			var seq int64
			var id, topic, typ, agg string
			var pl []byte
			var headers, created any
			if err := rows.Scan(&seq, &id, &topic, &typ, &agg, &pl, &headers, &created); err != nil {
				rows.Close()
				return 0, err
			}
			seqs = append(seqs, fmt.Sprint(seq))
		}
		rows.Close()
		if len(seqs) == 0 {
			return 0, tx.Commit()
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+table+" SET synced_at = UTC_TIMESTAMP(6) WHERE seq IN ("+strings.Join(seqs, ",")+")"); err != nil {
			return 0, err
		}
		return len(seqs), tx.Commit()
	}
	var pgCPU func() time.Duration
	if what == "pg" {
		pgCPU = backendCPU(ctx, db, 16) // the bench's pool: at most 16 connections
	}
	start := time.Now()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				k, err := pass()
				if err != nil {
					errs <- err
					return
				}
				total.Add(int64(k))
				if k == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("%s claim+mark: %w", what, err)
	}
	if int(total.Load()) != n {
		return nil, fmt.Errorf("%s claim+mark: drained %d of %d", what, total.Load(), n)
	}
	r := throughput(fmt.Sprintf("limit_%s_claim_mark_%dw", what, workers), n, d)
	if pgCPU != nil {
		r.Note = fmt.Sprintf("CPU per 1,000: Postgres backends %.1f ms", pgCPU().Seconds()*1000*1000/float64(n))
	}
	return r, nil
}

// xaddLimit adds n entries shaped like the publisher's (same fields and
// payload) with per XADDs in each pipelined round trip.
func (b *bench) xaddLimit(ctx context.Context, n, per int) (*Result, error) {
	key := b.stream("limit_xadd")
	defer b.rdb.Del(ctx, key)
	events := newEvents(per, 1000, 256, key)
	created := time.Now().UTC().Format(time.RFC3339Nano)
	start := time.Now()
	for done := 0; done < n; done += per {
		pipe := b.rdb.Pipeline()
		for _, e := range events {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
				"id", "01890a5d-ac96-774b-bcce-b302099a8057", "type", e.Type, "aggregate_id", e.AggregateID,
				"created_at", created, "payload", e.Payload}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	d := time.Since(start)
	name := "limit_redis_xadd_pipelined_1000"
	if per == 1 {
		name = "limit_redis_xadd_1_per_round_trip"
	}
	return throughput(name, n, d), nil
}

// newKafka starts an in-process Kafka cluster (kfake) with one topic.
func newKafka(topic string, partitions int32) (*kfake.Cluster, error) {
	return kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
}

// kafkaLimit sends n records in SendMessages calls of per records through
// a sarama SyncProducer configured as the kafka publisher's defaults.
func kafkaLimit(ctx context.Context, n, per int) (*Result, error) {
	c, err := newKafka("limit", 6)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cfg := kafka.NewConfig()
	prod, err := sarama.NewSyncProducer(c.ListenAddrs(), cfg)
	if err != nil {
		return nil, err
	}
	defer prod.Close()
	events := newEvents(per, 1000, 256, "limit")
	start := time.Now()
	for done := 0; done < n; done += per {
		msgs := make([]*sarama.ProducerMessage, len(events))
		for i, e := range events {
			msgs[i] = &sarama.ProducerMessage{Topic: "limit", Key: sarama.StringEncoder(e.AggregateID), Value: sarama.ByteEncoder(e.Payload),
				Headers: []sarama.RecordHeader{{Key: []byte("id"), Value: []byte("01890a5d-ac96-774b-bcce-b302099a8057")}, {Key: []byte("type"), Value: []byte(e.Type)}}}
		}
		if err := prod.SendMessages(msgs); err != nil {
			return nil, err
		}
	}
	return throughput("limit_kafka_sarama_batch_1000", n, time.Since(start)), nil
}

// readXaddLimit is the ceiling of a relay that writes nothing per event
// (watermarks): read the events in save order, 1,000 at a time from the
// last seq read, and add each batch to a Redis stream in one pipelined
// round trip. One worker, no claim, no mark.
func (b *bench) readXaddLimit(ctx context.Context, n int) (*Result, error) {
	st, table, err := b.newStore(ctx, b.pg, "limit_read")
	if err != nil {
		return nil, err
	}
	defer b.drop(b.pg, table)
	if err := fillStore(ctx, b.pg, st, n, defaultAggregates, "t"); err != nil {
		return nil, err
	}
	key := b.stream("limit_read_xadd")
	defer b.rdb.Del(ctx, key)
	stmt := "SELECT seq, id, event_type, aggregate_id, payload, created_at FROM " + table +
		" WHERE seq > $1 AND synced_at IS NULL AND dead_at IS NULL ORDER BY seq LIMIT 1000"
	start := time.Now()
	var last int64
	total := 0
	for {
		rows, err := b.pg.QueryContext(ctx, stmt, last)
		if err != nil {
			return nil, err
		}
		pipe := b.rdb.Pipeline()
		k := 0
		for rows.Next() {
			var id, typ, agg string
			var pl []byte
			var created time.Time
			if err := rows.Scan(&last, &id, &typ, &agg, &pl, &created); err != nil {
				rows.Close()
				return nil, err
			}
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{
				"id", id, "type", typ, "aggregate_id", agg,
				"created_at", created.UTC().Format(time.RFC3339Nano), "payload", pl}})
			k++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if k == 0 {
			break
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
		total += k
	}
	d := time.Since(start)
	if total != n {
		return nil, fmt.Errorf("read+xadd: read %d of %d", total, n)
	}
	return throughput("limit_pg_read_in_order_xadd_pipelined", n, d), nil
}
