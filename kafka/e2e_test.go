package kafka_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/sqlstore"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"
)

// TestRelayEndToEnd saves events with sqlstore, relays them with an outbox.Outbox
// over the kafka Publisher and reads them back from Kafka, on SQLite and,
// with OUTBOX_TEST_POSTGRES set, on Postgres.
func TestRelayEndToEnd(t *testing.T) {
	t.Parallel()
	kafka.EachStoreDB(t, "outbox_kafka_e2e_", testRelay)
}

func testRelay(t *testing.T, db *sqlx.DB, table string) {
	ctx := context.Background()
	brokers, topic := e2eCluster(t)

	store, err := sqlstore.New(db, sqlstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	cfg := kafka.NewConfig()
	cfg.Metadata.AllowAutoTopicCreation = false
	cfg.Metadata.Retry.Max = 1
	pub, err := kafka.New(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ob, err := outbox.New(store, pub)
	if err != nil {
		t.Fatal(err)
	}

	const n, aggregates = 60, 6
	var events []*outbox.Event
	for i := range n {
		events = append(events, &outbox.Event{
			Topic: topic, Type: "stock.updated",
			AggregateID: fmt.Sprintf("sku-%d", i%aggregates),
			Payload:     []byte(fmt.Sprint(i / aggregates)),
			Headers:     map[string]string{"seq": fmt.Sprint(i)},
		})
	}
	poison := &outbox.Event{Topic: topic + "-missing", Type: "stock.updated", AggregateID: "sku-x", Payload: []byte("?")}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Save(ctx, tx, append(events, poison)...); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	res, err := ob.SyncPending(ctx, 1000)
	if err != nil {
		t.Fatalf("SyncPending: %v", err)
	}
	if res.Claimed != n+1 || res.Synced != n || res.Dead != 1 || res.Failed != 0 {
		t.Fatalf("SyncPending = %+v, want %d synced and the event to a missing topic buried", res, n)
	}
	stats, err := store.Stats(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Pending != 0 || stats.Synced != n || stats.Dead != 1 {
		t.Errorf("Stats = %+v", stats)
	}
	dead, err := store.Get(ctx, poison.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dead.Delivery.Status() != outbox.StatusDead || !strings.Contains(dead.Delivery.LastError, "does not exist") {
		t.Errorf("poison event delivery = %+v", dead.Delivery)
	}

	want := map[string]*outbox.Event{}
	for _, e := range events {
		want[e.ID] = e
	}
	next := map[string]int{}
	for _, r := range consumeAll(t, brokers, topic, n) {
		hs := make([]kafka.Header, len(r.Headers))
		for i, h := range r.Headers {
			hs[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
		got, err := kafka.DecodeRecord(r.Topic, r.Key, r.Value, hs)
		if err != nil {
			t.Fatal(err)
		}
		w := want[got.ID]
		if w == nil || string(got.Payload) != string(w.Payload) || got.Headers["seq"] != w.Headers["seq"] || !got.CreatedAt.Equal(w.CreatedAt.Truncate(time.Microsecond)) {
			// The store keeps CreatedAt to the microsecond; the relay
			// publishes what it reads back.
			t.Fatalf("consumed %+v, want %+v", got, w)
		}
		if string(got.Payload) != fmt.Sprint(next[got.AggregateID]) {
			t.Fatalf("aggregate %s out of order: got %s", got.AggregateID, got.Payload)
		}
		next[got.AggregateID]++
	}
}

// e2eCluster returns brokers and a fresh topic: on the cluster of
// OUTBOX_TEST_KAFKA when set, else on a kfake cluster of the test's own.
func e2eCluster(t *testing.T) ([]string, string) {
	t.Helper()
	topic := fmt.Sprintf("outbox-e2e-%08x", rand.Uint32())
	if env := os.Getenv("OUTBOX_TEST_KAFKA"); env != "" {
		brokers := strings.Split(env, ",")
		admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: -1}, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
			if err != nil {
				t.Error(err)
				return
			}
			defer admin.Close()
			if err := admin.DeleteTopic(topic); err != nil {
				t.Errorf("delete topic %s: %v", topic, err)
			}
		})
		return brokers, topic
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs(), topic
}

func consumeAll(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	if len(recs) != n {
		t.Fatalf("consumed %d records, want %d", len(recs), n)
	}
	return recs
}
