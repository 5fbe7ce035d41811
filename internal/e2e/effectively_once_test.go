package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metrics "github.com/rcrowley/go-metrics"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/inbox"
	"github.com/eventsync/outbox/inbox/kafkaconsumer"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/natsjs"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

func init() {
	// sarama registers go-metrics meters, which tick from a process-wide
	// goroutine that never stops; these tests need no metrics, and nil
	// meters start no goroutine, so goleak stays strict.
	metrics.UseNilMetrics = true
}

// crashBetweenAckAndMark saves one event, publishes it through a store
// whose first mark fails after the broker's ack, and lets a relay publish
// it again once the lease ends: the crash window of guarantee 3. It
// returns the event, synced.
func crashBetweenAckAndMark(t *testing.T, db *sqlx.DB, store *sqlstore.Store, pub outbox.Publisher, topic string) *outbox.Event {
	t.Helper()
	ctx := context.Background()
	flaky := &markFailsOnce{Store: store}
	timeout, lease := time.Second, 1200*time.Millisecond
	ob := newOutbox(t, flaky, pub, outbox.WithTimeout(timeout), outbox.WithLease(lease))
	ev := newEvents(topic, 1)[0]
	saveCommitted(t, db, ob, ev)
	if _, err := ob.SyncPending(ctx, 10); err == nil {
		t.Fatal("a failed mark was not reported")
	}
	time.Sleep(lease + 50*time.Millisecond)
	res, err := ob.SyncPending(ctx, 10)
	mustNoErr(t, err, "sync after the lease")
	if res.Synced != 1 || status(t, store, ev.ID).Delivery.Status() != outbox.StatusSynced {
		t.Fatalf("after the lease: %+v", res)
	}
	return ev
}

// With idempotent Redis publication the republished event adds no entry:
// the stream holds its ID once.
func TestMarkFailsAfterPublishIdempotentRedis(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		b := newBroker(t)
		pub, err := redisstream.New(b.client, redisstream.WithIdempotence(time.Minute), redisstream.WithDedupKeyPrefix(b.prefix+"dedup:"))
		mustNoErr(t, err, "redisstream.New")
		stream := b.prefix + "inventory"
		ev := crashBetweenAckAndMark(t, db, store, pub, stream)
		if got := b.ids(t, stream); !slices.Equal(got, []string{ev.ID}) {
			t.Fatalf("stream holds %v, want the event once", got)
		}
	})
}

// With JetStream, the republished message carries the same Nats-Msg-Id
// and the stream's duplicate window drops it: the stream holds the ID
// once.
func TestMarkFailsAfterPublishJetStream(t *testing.T) {
	url := os.Getenv("OUTBOX_TEST_NATS")
	if url == "" {
		t.Skip("set OUTBOX_TEST_NATS=nats://127.0.0.1:4222 (a server with JetStream) to run against NATS")
	}
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		nc, err := nats.Connect(url, nats.MaxReconnects(0))
		if err != nil {
			t.Fatalf("OUTBOX_TEST_NATS is set but NATS cannot be reached: %v", err)
		}
		t.Cleanup(nc.Close)
		pub, err := natsjs.New(nc)
		mustNoErr(t, err, "natsjs.New")
		id := randomHex(6)
		name, subject := "E2E_"+strings.ToUpper(id), "e2e."+id
		ctx := context.Background()
		stream, err := pub.JetStream().CreateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{subject + ".>"}, Duplicates: time.Minute, Storage: jetstream.MemoryStorage,
		})
		mustNoErr(t, err, "create stream")
		t.Cleanup(func() {
			if err := pub.JetStream().DeleteStream(context.Background(), name); err != nil {
				t.Errorf("delete stream %s: %v", name, err)
			}
		})
		ev := crashBetweenAckAndMark(t, db, store, pub, subject+".inventory")
		info, err := stream.Info(ctx)
		mustNoErr(t, err, "stream info")
		if info.State.Msgs != 1 {
			t.Fatalf("stream holds %d messages, want the event once", info.State.Msgs)
		}
		m, err := stream.GetMsg(ctx, info.State.FirstSeq)
		mustNoErr(t, err, "get message")
		if got := m.Header.Get(natsjs.HeaderID); got != ev.ID {
			t.Fatalf("stream holds %s, want %s", got, ev.ID)
		}
	})
}

// Kafka keeps both copies of the republished event, and the consumer's
// inbox, in the consumer's own database, processes the ID once, while
// several consumers of the group redeliver.
func TestMarkFailsAfterPublishKafkaInboxProcessesOnce(t *testing.T) {
	forEachDatabase(t, func(t *testing.T, db *sqlx.DB, store *sqlstore.Store) {
		ctx := context.Background()
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "inventory"))
		mustNoErr(t, err, "kfake")
		t.Cleanup(cluster.Close)
		brokers := cluster.ListenAddrs()
		pub, err := kafka.New(brokers, nil)
		mustNoErr(t, err, "kafka.New")
		t.Cleanup(func() { pub.Close() })
		ev := crashBetweenAckAndMark(t, db, store, pub, "inventory")

		table := "inbox_" + randomHex(6)
		in, err := inbox.New(db, inbox.WithTable(table))
		mustNoErr(t, err, "inbox.New")
		mustNoErr(t, in.Migrate(ctx), "inbox migrate")
		t.Cleanup(func() {
			for _, tb := range []string{table, table + "_migrations", table + "_effects"} {
				if _, err := db.Exec("DROP TABLE IF EXISTS " + tb); err != nil {
					t.Errorf("drop %s: %v", tb, err)
				}
			}
		})
		effects := table + "_effects"
		_, err = db.ExecContext(ctx, "CREATE TABLE "+effects+" (event_id VARCHAR(64) NOT NULL)")
		mustNoErr(t, err, "create effects table")

		// Read the topic from the start, as a consumer that lost its
		// offsets (or a rebalance) would: both copies are delivered.
		cfg := sarama.NewConfig()
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		group, err := sarama.NewConsumerGroup(brokers, "billing-"+randomHex(4), cfg)
		mustNoErr(t, err, "consumer group")
		t.Cleanup(func() { group.Close() })
		cons, err := kafkaconsumer.New(group, []string{"inventory"})
		mustNoErr(t, err, "kafkaconsumer.New")
		var mu sync.Mutex
		var deliveries, ran int
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- cons.Run(runCtx, func(ctx context.Context, e *outbox.Event) error {
				ok, err := in.Handle(ctx, e, func(ctx context.Context, tx *sqlx.Tx, e *outbox.Event) error {
					_, err := tx.ExecContext(ctx, tx.Rebind("INSERT INTO "+effects+" (event_id) VALUES (?)"), e.ID)
					return err
				})
				if err != nil {
					return err
				}
				mu.Lock()
				deliveries++
				if ok {
					ran++
				}
				mu.Unlock()
				return nil
			})
		}()
		waitFor(t, "both copies to be consumed", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return deliveries >= 2
		})
		stop()
		mustNoErr(t, <-done, "consumer Run")
		if deliveries != 2 || ran != 1 {
			t.Fatalf("%d deliveries, handler committed %d times; want 2 and 1", deliveries, ran)
		}
		var n int
		mustNoErr(t, db.QueryRowx(db.Rebind("SELECT COUNT(*) FROM "+effects+" WHERE event_id = ?"), ev.ID).Scan(&n), "count effects")
		if n != 1 {
			t.Fatalf("the handler's write happened %d times, want once", n)
		}
	})
}
