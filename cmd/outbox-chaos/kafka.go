//go:build unix

package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/eventsync/outbox/kafka"
)

// kafkaPartitions is how many partitions each of the run's topics has. An
// aggregate's events share a key, so a partition, and keep their order.
const kafkaPartitions = 3

// proxies are the broker proxies of a run: one for Redis, one per broker
// for Kafka. A fault acts on all of them at once.
type proxies []*testproxy.Proxy

func (ps proxies) Cut() {
	for _, p := range ps {
		p.Cut()
	}
}

func (ps proxies) Restore() {
	for _, p := range ps {
		p.Restore()
	}
}

func (ps proxies) SetDelay(d time.Duration) {
	for _, p := range ps {
		p.SetDelay(d)
	}
}

func (ps proxies) Close() {
	for _, p := range ps {
		p.Close()
	}
}

// setupKafka starts an in-process kfake cluster unless real brokers are
// given, creates the run's topics, and puts a proxy in front of every
// broker the cluster's metadata names. Relays dial every broker through
// its proxy (see kafkaVia), so a cut or a delay reaches all their
// connections, bootstrap and per-broker alike.
func (r *run) setupKafka(ctx context.Context, undo *[]func()) error {
	brokers := r.cfg.KafkaBrokers
	if len(brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(3))
		if err != nil {
			return fmt.Errorf("kfake: %w", err)
		}
		*undo = append(*undo, c.Close)
		brokers = c.ListenAddrs()
	}
	r.kafkaDirect = brokers

	cfg := sarama.NewConfig()
	cfg.Net.DialTimeout = 5 * time.Second
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		return fmt.Errorf("connect to Kafka: %w", err)
	}
	defer admin.Close()
	for _, t := range topics {
		name := r.prefix + t
		if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: kafkaPartitions, ReplicationFactor: -1}, false); err != nil {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
		*undo = append(*undo, func() {
			if len(r.cfg.KafkaBrokers) == 0 {
				return // the cluster goes away with the run
			}
			admin, err := sarama.NewClusterAdmin(brokers, cfg)
			if err == nil {
				err = admin.DeleteTopic(name)
				admin.Close()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "outbox-chaos: delete topic %s: %v\n", name, err)
			}
		})
	}

	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return fmt.Errorf("connect to Kafka: %w", err)
	}
	defer client.Close()
	via := map[string]string{}
	for _, b := range client.Brokers() {
		p, err := testproxy.Start(b.Addr())
		if err != nil {
			return err
		}
		*undo = append(*undo, func() { p.Close() })
		r.brokerProxy = append(r.brokerProxy, p)
		via[b.Addr()] = p.Addr()
	}
	for _, b := range brokers { // a bootstrap address the metadata names differently
		if _, ok := via[b]; !ok {
			p, err := testproxy.Start(b)
			if err != nil {
				return err
			}
			*undo = append(*undo, func() { p.Close() })
			r.brokerProxy = append(r.brokerProxy, p)
			via[b] = p.Addr()
		}
	}
	r.kafkaVia = formatVia(via)
	return ctx.Err()
}

// formatVia and parseVia carry the broker-to-proxy map to the relays as
// one flag: broker=proxy,broker=proxy.
func formatVia(via map[string]string) string {
	var parts []string
	for _, b := range slices.Sorted(maps.Keys(via)) {
		parts = append(parts, b+"="+via[b])
	}
	return strings.Join(parts, ",")
}

func parseVia(s string) (map[string]string, error) {
	via := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		b, p, ok := strings.Cut(part, "=")
		if !ok || b == "" || p == "" {
			return nil, fmt.Errorf("-kafka-via %q: want broker=proxy,...", s)
		}
		via[b] = p
	}
	return via, nil
}

// kafkaPublisher is the publisher of a relay and of the parent's
// immediate path: the kafka package's, with short timeouts so that a cut
// shows quickly, every connection dialled through the broker's proxy,
// and topics under prefix. Records are keyed by aggregate ID, so an
// aggregate's events share a partition.
func kafkaPublisher(viaFlag, prefix string) (*kafka.Publisher, error) {
	via, err := parseVia(viaFlag)
	if err != nil {
		return nil, err
	}
	c := kafka.NewConfig()
	c.Metadata.AllowAutoTopicCreation = false
	c.Metadata.Retry.Max = 1
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	c.Producer.Retry.Backoff = 50 * time.Millisecond
	// Producer.Retry.Max stays the publisher's default: the run checks the
	// order the kafka publisher keeps as users configure it.
	c.Net.DialTimeout = 500 * time.Millisecond
	c.Net.ReadTimeout = 2 * time.Second
	c.Net.WriteTimeout = 2 * time.Second
	c.Net.Proxy.Enable = true
	c.Net.Proxy.Dialer = dialerFunc(func(network, addr string) (net.Conn, error) {
		if p, ok := via[addr]; ok {
			addr = p
		}
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		return d.Dial(network, addr)
	})
	return kafka.New(slices.Sorted(maps.Keys(via)), c,
		kafka.WithTopic(func(e *outbox.Event) string { return prefix + e.Topic }),
		kafka.WithLazyConnect())
}

type dialerFunc func(network, addr string) (net.Conn, error)

func (f dialerFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// readTopics reads every record of the run's topics straight from the
// brokers (no proxy) with a franz-go client, an implementation
// independent of the one that wrote them, up to the end offsets taken
// first. Deliveries are keyed by topic and partition, in offset order.
func (r *run) readTopics(ctx context.Context) (map[string][]delivery, error) {
	client, err := sarama.NewClient(r.kafkaDirect, sarama.NewConfig())
	if err != nil {
		return nil, fmt.Errorf("connect to Kafka: %w", err)
	}
	want := map[string]int64{} // topic/partition -> end offset
	var names []string
	for _, t := range topics {
		name := r.prefix + t
		names = append(names, name)
		parts, err := client.Partitions(name)
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("partitions of %s: %w", name, err)
		}
		for _, p := range parts {
			end, err := client.GetOffset(name, p, sarama.OffsetNewest)
			if err != nil {
				client.Close()
				return nil, fmt.Errorf("end offset of %s/%d: %w", name, p, err)
			}
			if end > 0 {
				want[fmt.Sprintf("%s/%d", name, p)] = end
			}
		}
	}
	client.Close()

	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafkaDirect...), kgo.ConsumeTopics(names...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out := map[string][]delivery{}
	var ferr error
	for len(want) > 0 && ferr == nil {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read topics: %d partitions not read to the end: %w", len(want), ctx.Err())
		}
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			hs := make([]kafka.Header, len(rec.Headers))
			for i, h := range rec.Headers {
				hs[i] = kafka.Header{Key: h.Key, Value: h.Value}
			}
			key := fmt.Sprintf("%s/%d", rec.Topic, rec.Partition)
			end, ok := want[key]
			if !ok || rec.Offset >= end {
				return
			}
			e, err := kafka.DecodeRecord(rec.Topic, rec.Key, rec.Value, hs)
			if err != nil {
				ferr = fmt.Errorf("decode %s@%d: %w", key, rec.Offset, err)
				return
			}
			out[key] = append(out[key], delivery{id: e.ID, aggregate: e.AggregateID})
			if rec.Offset+1 >= end {
				delete(want, key)
			}
		})
	}
	return out, ferr
}
