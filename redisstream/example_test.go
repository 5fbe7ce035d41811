package redisstream_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/redis/go-redis/v9"
)

// Publish an event to a stream and read it back as a consumer would. The
// example runs against an in-memory Redis; use your own client instead.
func Example() {
	srv, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close() // the publisher never closes the client

	pub, err := redisstream.New(client, redisstream.WithMaxLen(100_000))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	err = pub.Publish(ctx, []*outbox.Event{{
		ID:          "0190a6e4-5c3b-7d2e-8f00-000000000001",
		Topic:       "inventory",
		Type:        "stock.updated",
		AggregateID: "sku-42",
		Payload:     []byte(`{"sku":"sku-42","qty":7}`),
		Headers:     map[string]string{"tenant": "acme"},
		CreatedAt:   time.Date(2025, 1, 2, 3, 4, 5, 600000000, time.UTC),
	}})
	if err != nil {
		log.Fatal(err)
	}

	msgs, err := client.XRange(ctx, "inventory", "-", "+").Result()
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Println(m.Values[redisstream.FieldCreatedAt])
		e, err := redisstream.Decode(m.Values)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.ID, e.Type, e.AggregateID, e.Headers["tenant"], string(e.Payload))
	}
	// Output:
	// 2025-01-02T03:04:05.600000000Z
	// 0190a6e4-5c3b-7d2e-8f00-000000000001 stock.updated sku-42 acme {"sku":"sku-42","qty":7}
}
