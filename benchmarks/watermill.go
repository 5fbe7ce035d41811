package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wredis "github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// runWatermill measures Watermill's forwarder (the outbox component of
// Watermill) relaying a Postgres backlog to Redis Streams: watermill-sql's
// default Postgres schema and offsets adapter in, watermill-redisstream
// out. Once with its defaults (SubscribeBatchSize 100), once with the
// batch size the SDK runs with.
func runWatermill(ctx context.Context, b *bench) error {
	if b.pg == nil {
		return nil
	}
	for _, batch := range []int{0, b.cfg.batch} {
		r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.watermill(ctx, b.cfg.events, batch) })
		if err != nil {
			return err
		}
		b.res.add(r)
		b.logf("%s: %.0f events/s", r.Scenario, r.EventsPerSec)
	}
	return nil
}

func (b *bench) watermill(ctx context.Context, n, batch int) (*Result, error) {
	id := b.name("wm")
	msgTable := `"` + id + `_messages"`
	offTable := `"` + id + `_offsets"`
	b.own(b.pg, msgTable)
	b.own(b.pg, offTable)
	defer b.drop(b.pg, msgTable)
	defer b.drop(b.pg, offTable)
	schema := wsql.DefaultPostgreSQLSchema{
		GenerateMessagesTableName: func(string) string { return msgTable },
		SubscribeBatchSize:        batch, // 0: Watermill's default, 100
	}
	offsets := wsql.DefaultPostgreSQLOffsetsAdapter{
		GenerateMessagesOffsetsTableName: func(string) string { return offTable },
	}
	logger := watermill.NopLogger{}
	const fwdTopic = "outbox"
	dest := b.stream("wm")
	defer b.rdb.Del(ctx, dest)

	sqlPub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(b.pg.DB), wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return nil, err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	pl := newEvents(1, 1, 256, "")[0].Payload
	for done := 0; done < n; done += 1000 {
		msgs := make([]*message.Message, min(1000, n-done))
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), pl)
			msgs[i].Metadata.Set("type", "stock.updated")
			msgs[i].Metadata.Set("aggregate_id", "sku-"+strconv.Itoa((done+i)%1000))
		}
		if err := pub.Publish(dest, msgs...); err != nil {
			return nil, fmt.Errorf("watermill fill: %w", err)
		}
	}

	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(b.pg.DB), wsql.SubscriberConfig{
		ConsumerGroup:    id,
		SchemaAdapter:    schema,
		OffsetsAdapter:   offsets,
		InitializeSchema: true,
	}, logger)
	if err != nil {
		return nil, err
	}
	// Watermill's Redis publisher closes the client it is given: give it
	// its own.
	client := redis.NewClient(&redis.Options{Addr: b.cfg.redis})
	out, err := wredis.NewPublisher(wredis.PublisherConfig{Client: client}, logger)
	if err != nil {
		return nil, err
	}
	fwd, err := forwarder.NewForwarder(sub, out, logger, forwarder.Config{ForwarderTopic: fwdTopic, CloseTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(rctx) }()
	deadline := time.Now().Add(15 * time.Minute)
	var got int64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got, err = b.rdb.XLen(ctx, dest).Result()
		if err != nil {
			return nil, err
		}
		if got >= int64(n) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	_ = fwd.Close()
	cancel()
	<-done
	_ = sub.Close()
	_ = out.Close()
	if got < int64(n) {
		return nil, fmt.Errorf("watermill: forwarded %d of %d", got, n)
	}
	name := "watermill_forwarder_defaults"
	if batch > 0 {
		name = fmt.Sprintf("watermill_forwarder_batch_%d", batch)
	}
	return throughput(name, n, d), nil
}
