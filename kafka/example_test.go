package kafka_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Publish an event to an in-process Kafka cluster and read it back with
// another client.
func Example() {
	cluster, err := kfake.NewCluster(kfake.SeedTopics(3, "stock"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	pub, err := kafka.New(cluster.ListenAddrs(), nil) // nil: kafka.NewConfig()
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()

	ctx := context.Background()
	err = pub.Publish(ctx, []*outbox.Event{{
		ID:          "01900000-0000-7000-8000-000000000001",
		Topic:       "stock",
		Type:        "stock.updated",
		AggregateID: "sku-42",
		Payload:     []byte(`{"qty":7}`),
		Headers:     map[string]string{"tenant": "acme"},
		CreatedAt:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}})
	if err != nil {
		log.Fatal(err)
	}

	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics("stock"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	var records []*kgo.Record
	for len(records) == 0 {
		records = consumer.PollFetches(ctx).Records()
	}
	rec := records[0]
	fmt.Printf("key %s, value %s\n", rec.Key, rec.Value)
	var headers []kafka.Header
	for _, h := range rec.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
		headers = append(headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	e, err := kafka.DecodeRecord(rec.Topic, rec.Key, rec.Value, headers)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Type, e.AggregateID, e.Headers["tenant"])
	// Output:
	// key sku-42, value {"qty":7}
	// id: 01900000-0000-7000-8000-000000000001
	// type: stock.updated
	// aggregate_id: sku-42
	// created_at: 2026-01-02T03:04:05.000000000Z
	// header:tenant: acme
	// stock.updated sku-42 acme
}
