package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxtest"
)

// TestConformance runs the shared outbox.Publisher suite against an
// in-process kfake cluster (or the cluster of OUTBOX_TEST_KAFKA), with the
// publisher behind proxies so the outage test cuts only its own
// connections.
func TestConformance(t *testing.T) {
	outboxtest.TestPublisher(t, outboxtest.PublisherHarness{New: conformanceSetup})
}

func conformanceSetup(t *testing.T) outboxtest.PublisherSetup {
	c := newCluster(t)
	px := c.proxied(t)
	pub := openPublisher(t, px.bootstrap(), px.cfg)
	topics := map[string]string{}
	return outboxtest.PublisherSetup{
		Publisher: pub,
		Topic: func(name string) string {
			if topics[name] == "" {
				topics[name] = c.topic(t, 3)
			}
			return topics[name]
		},
		Read: func(ctx context.Context, topic string, n int) ([]*outbox.Event, error) {
			return readTopic(ctx, c.brokers, topic, n)
		},
		Refuse: func(name string) string {
			// Never created, and the test config lets no one create it:
			// the broker answers UNKNOWN_TOPIC_OR_PARTITION per record.
			return fmt.Sprintf("outbox-missing-%s-%08x", name, rand.Uint32())
		},
		Down: px.cut,
		Up:   px.restore,
	}
}

// readTopic consumes topic from the start with franz-go until it holds at
// least n records, and returns them decoded, partition by partition in
// offset order (the order Kafka keeps, per aggregate).
func readTopic(ctx context.Context, brokers []string, topic string, n int) ([]*outbox.Event, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	byPartition := map[int32][]*outbox.Event{}
	var partitions []int32
	total := 0
	for total < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %d of %d records: %w", total, n, err)
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", topic, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			hs := make([]Header, len(r.Headers))
			for i, h := range r.Headers {
				hs[i] = Header{Key: h.Key, Value: h.Value}
			}
			e, err := DecodeRecord(r.Topic, r.Key, r.Value, hs)
			if err != nil {
				derr = err
				return
			}
			if _, ok := byPartition[r.Partition]; !ok {
				partitions = append(partitions, r.Partition)
			}
			byPartition[r.Partition] = append(byPartition[r.Partition], e)
			total++
		})
		if derr != nil {
			return nil, derr
		}
	}
	var out []*outbox.Event
	for _, p := range partitions {
		out = append(out, byPartition[p]...)
	}
	return out, nil
}
