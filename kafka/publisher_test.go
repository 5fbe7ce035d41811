package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/twmb/franz-go/pkg/kfake"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 3)
	p := openPublisher(t, c.brokers, nil)

	withHeaders := event(topic, "order-1", "order.created", `{"qty":3}`)
	withHeaders.Headers = map[string]string{"traceparent": "00-abc-def-01", "tenant": "acme", "a:b": "c"}
	noAggregate := event(topic, "", "ping", "x")
	noPayload := event(topic, "order-2", "order.deleted", "")
	noPayload.Payload = nil
	events := []*outbox.Event{withHeaders, noAggregate, noPayload}
	if err := p.Publish(context.Background(), events); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	byID := map[string]*outbox.Event{}
	for _, e := range events {
		byID[e.ID] = e
	}
	for _, r := range consume(t, c.brokers, topic, len(events)) {
		got := decodeKgo(t, r)
		want := byID[got.ID]
		if want == nil {
			t.Fatalf("unexpected record %q", got.ID)
		}
		if !bytes.Equal(r.Key, []byte(want.AggregateID)) || (want.AggregateID == "" && r.Key != nil) {
			t.Errorf("key = %q, want %q", r.Key, want.AggregateID)
		}
		if !bytes.Equal(r.Value, want.Payload) {
			t.Errorf("value = %q, want %q", r.Value, want.Payload)
		}
		names := map[string]string{}
		for _, h := range r.Headers {
			names[h.Key] = string(h.Value)
		}
		wantNames := map[string]string{
			"id": want.ID, "type": want.Type, "aggregate_id": want.AggregateID,
			"created_at": want.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000000Z"),
		}
		for k, v := range want.Headers {
			wantNames["header:"+k] = v
		}
		if !reflect.DeepEqual(names, wantNames) {
			t.Errorf("headers = %v, want %v", names, wantNames)
		}
		if !equalEvents(got, want) {
			t.Errorf("decoded %+v, want %+v", got, want)
		}
	}
}

// TestRoundTripSaramaConsumer reads the records back with sarama's own
// consumer and Decode.
func TestRoundTripSaramaConsumer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	p := openPublisher(t, c.brokers, nil)
	want := event(topic, "agg", "thing.done", "payload")
	want.Headers = map[string]string{"k": "v"}
	if err := p.Publish(context.Background(), []*outbox.Event{want}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	consumer, err := sarama.NewConsumer(c.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case msg := <-pc.Messages():
		got, err := Decode(msg)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !equalEvents(got, want) {
			t.Errorf("decoded %+v, want %+v", got, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message")
	}
}

func equalEvents(a, b *outbox.Event) bool {
	return a.ID == b.ID && a.Topic == b.Topic && a.Type == b.Type && a.AggregateID == b.AggregateID &&
		bytes.Equal(a.Payload, b.Payload) && a.CreatedAt.Equal(b.CreatedAt) && a.CreatedAt.Location() == time.UTC &&
		(len(a.Headers) == 0 && len(b.Headers) == 0 || reflect.DeepEqual(a.Headers, b.Headers))
}

func TestPerAggregateOrder(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 6)
	p := openPublisher(t, c.brokers, nil)

	const n, aggregates = 1000, 20
	events := make([]*outbox.Event, n)
	for i := range events {
		agg := fmt.Sprintf("agg-%d", i%aggregates)
		events[i] = event(topic, agg, "step", fmt.Sprint(i/aggregates))
	}
	if err := p.Publish(context.Background(), events); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	next := map[string]int{}
	partitionOf := map[string]int32{}
	partitions := map[int32]bool{}
	// Records of one partition come in offset order.
	for _, r := range consume(t, c.brokers, topic, n) {
		e := decodeKgo(t, r)
		if want := fmt.Sprint(next[e.AggregateID]); string(e.Payload) != want {
			t.Fatalf("aggregate %s: got step %s, want %s", e.AggregateID, e.Payload, want)
		}
		next[e.AggregateID]++
		if p, ok := partitionOf[e.AggregateID]; ok && p != r.Partition {
			t.Fatalf("aggregate %s in partitions %d and %d", e.AggregateID, p, r.Partition)
		}
		partitionOf[e.AggregateID] = r.Partition
		partitions[r.Partition] = true
	}
	if len(next) != aggregates {
		t.Errorf("saw %d aggregates, want %d", len(next), aggregates)
	}
	if len(partitions) < 3 {
		t.Errorf("the aggregates used only %d partitions", len(partitions))
	}
}

func TestPartialFailure(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 3)
	cfg := testConfig()
	cfg.Producer.MaxMessageBytes = 64 << 10
	p := openPublisher(t, c.brokers, cfg)

	good1 := event(topic, "a", "t", "1")
	missing := event(topic+"-does-not-exist", "b", "t", "2")
	tooBig := event(topic, "c", "t", strings.Repeat("x", 64<<10))
	heldBack := event(topic, "c", "t", "after the big one")
	good2 := event(topic, "d", "t", "3")
	events := []*outbox.Event{good1, missing, tooBig, heldBack, good2}

	failed := failedOf(t, p.Publish(context.Background(), events))
	if len(failed) != 3 {
		t.Fatalf("failed = %v, want 3 events", failed)
	}
	if err := failed[missing.ID]; !outbox.IsPermanent(err) || !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Errorf("missing topic: %v, want a permanent ErrUnknownTopicOrPartition", err)
	}
	if err := failed[tooBig.ID]; !outbox.IsPermanent(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge) {
		t.Errorf("too big: %v, want a permanent ErrMessageSizeTooLarge", err)
	}
	if err := failed[heldBack.ID]; !errors.Is(err, outbox.ErrHeldBack) || outbox.IsPermanent(err) {
		t.Errorf("held back: %v, want outbox.ErrHeldBack, not permanent", err)
	}
	recs := consume(t, c.brokers, topic, 2)
	got := map[string]bool{}
	for _, r := range recs {
		got[decodeKgo(t, r).ID] = true
	}
	if !got[good1.ID] || !got[good2.ID] {
		t.Errorf("consumed %v, want %s and %s", got, good1.ID, good2.ID)
	}
}

// TestBrokerSizeLimit: a record under the producer's limit but over the
// broker's is refused by the broker with MESSAGE_TOO_LARGE, which is
// permanent. The limit is the topic's max.message.bytes, which overrides
// the broker's message.max.bytes, so the test runs on a real cluster too
// whatever its brokers allow.
func TestBrokerSizeLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	limit := "10000"
	topic := c.createTopic(t, topicName(t), 1, map[string]*string{"max.message.bytes": &limit})
	p := openPublisher(t, c.brokers, testConfig())
	big := event(topic, "a", "t", strings.Repeat("y", 20000))
	small := event(topic, "b", "t", "ok")
	failed := failedOf(t, p.Publish(context.Background(), []*outbox.Event{big}))
	if err := failed[big.ID]; !outbox.IsPermanent(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge) {
		t.Fatalf("failed = %v, want a permanent ErrMessageSizeTooLarge", failed)
	}
	if err := p.Publish(context.Background(), []*outbox.Event{small}); err != nil {
		t.Fatalf("Publish after the refusal: %v", err)
	}
}

func TestClusterOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 3)
	px := c.proxied(t)
	p := openPublisher(t, px.bootstrap(), px.cfg)
	ctx := context.Background()

	before := []*outbox.Event{event(topic, "a", "t", "0")}
	if err := p.Publish(ctx, before); err != nil {
		t.Fatalf("Publish before the outage: %v", err)
	}

	px.cut()
	during := []*outbox.Event{event(topic, "a", "t", "1"), event(topic, "b", "t", "1"), event(topic, "c", "t", "1")}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := p.Publish(pctx, during)
	cancel()
	failed := failedOf(t, err)
	if len(failed) != len(during) {
		t.Fatalf("during the outage failed = %v, want all %d", failed, len(during))
	}
	for id, err := range failed {
		if outbox.IsPermanent(err) {
			t.Errorf("event %s: permanent error %v for an outage", id, err)
		}
	}

	px.restore()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.Publish(ctx, during)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the outage: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Records failed during the outage were never written, so the topic
	// holds exactly the first event and the retried ones.
	recs := consume(t, c.brokers, topic, 1+len(during))
	seen := map[string]int{}
	for _, r := range recs {
		seen[decodeKgo(t, r).ID]++
	}
	for _, e := range append(before, during...) {
		if seen[e.ID] != 1 {
			t.Errorf("event %s consumed %d times", e.ID, seen[e.ID])
		}
	}
}

// TestClusterRestart stops the kfake cluster and starts a new one on the
// same ports: a broker that lost everything, the producer's ID included.
func TestClusterRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.NumBrokers(1))
	if c.fake == nil {
		t.Skip("needs kfake: it stops the cluster and starts a new one on the same ports, which a test cannot do to a real cluster; TestClusterOutage covers a real one behind proxies")
	}
	topic := c.topic(t, 2)
	p := openPublisher(t, c.brokers, testConfig())
	ctx := context.Background()
	if err := p.Publish(ctx, []*outbox.Event{event(topic, "a", "t", "0")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	var ports []int
	for _, addr := range c.brokers {
		_, port, _ := strings.Cut(addr, ":")
		var n int
		fmt.Sscan(port, &n)
		ports = append(ports, n)
	}
	c.fake.Close()

	down := []*outbox.Event{event(topic, "a", "t", "1"), event(topic, "b", "t", "1")}
	failed := failedOf(t, p.Publish(ctx, down))
	if len(failed) != len(down) {
		t.Fatalf("with the cluster down failed = %v, want all", failed)
	}
	for id, err := range failed {
		if outbox.IsPermanent(err) {
			t.Errorf("event %s: permanent error %v for a cluster that is down", id, err)
		}
	}

	c2, err := kfake.NewCluster(kfake.Ports(ports...), kfake.SeedTopics(2, topic))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(c2.Close)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.Publish(ctx, down)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	consume(t, c2.ListenAddrs(), topic, len(down))
}

// TestPublishContextEnds: a batch in flight when ctx ends counts as
// failed (the outcome is unknown), and Publish returns without waiting.
func TestPublishContextEnds(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	px := c.proxied(t)
	p := openPublisher(t, px.bootstrap(), px.cfg)
	if err := p.Publish(context.Background(), []*outbox.Event{event(topic, "a", "t", "warm up")}); err != nil {
		t.Fatal(err)
	}
	px.setDelay(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	events := []*outbox.Event{event(topic, "a", "t", "1"), event(topic, "b", "t", "2")}
	start := time.Now()
	failed := failedOf(t, p.Publish(ctx, events))
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("Publish took %v after its context ended", d)
	}
	if len(failed) != 2 {
		t.Fatalf("failed = %v, want both", failed)
	}
	for _, err := range failed {
		if outbox.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want a transient context.DeadlineExceeded", err)
		}
	}
	px.setDelay(0)

	ended, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := p.Publish(ended, events); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with an ended context = %v", err)
	}
}

func TestLazyConnect(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	px := c.proxied(t)
	px.cut()

	if _, err := New(px.bootstrap(), px.cfg); err == nil {
		t.Fatal("New with the cluster unreachable: nil error")
	}
	p := openPublisher(t, px.bootstrap(), px.cfg, WithLazyConnect())
	events := []*outbox.Event{event(topic, "a", "t", "1")}
	err := p.Publish(context.Background(), events)
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("Publish with the cluster unreachable = %v, want a transient error", err)
	}
	px.restore()
	if err := p.Publish(context.Background(), events); err != nil {
		t.Fatalf("Publish once reachable: %v", err)
	}
	consume(t, c.brokers, topic, 1)
}

func TestClose(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	ctx := context.Background()
	ev := func() []*outbox.Event { return []*outbox.Event{event(topic, "a", "t", "x")} }

	t.Run("own client", func(t *testing.T) {
		p, err := New(c.brokers, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, ev()); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := p.Publish(ctx, ev()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Publish after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("lazy, never connected", func(t *testing.T) {
		p, err := New(c.brokers, nil, WithLazyConnect())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})
	t.Run("user client stays open", func(t *testing.T) {
		client, err := sarama.NewClient(c.brokers, NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		p, err := NewFromClient(client)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, ev()); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if client.Closed() {
			t.Fatal("Close closed the user's client")
		}
		if _, err := client.Partitions(topic); err != nil {
			t.Fatalf("client after Close: %v", err)
		}
	})
	t.Run("user producer stays open", func(t *testing.T) {
		prod, err := sarama.NewSyncProducer(c.brokers, NewConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		p, err := NewFromProducer(prod)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, ev()); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("still open")}); err != nil {
			t.Fatalf("producer after Close: %v", err)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*sarama.Config)
		want   string
	}{
		{"no successes", func(c *sarama.Config) { c.Producer.Return.Successes = false }, "Producer.Return.Successes"},
		{"no errors", func(c *sarama.Config) { c.Producer.Return.Errors = false }, "Producer.Return.Errors"},
		{"no acks", func(c *sarama.Config) { c.Producer.Idempotent = false; c.Producer.RequiredAcks = sarama.NoResponse }, "NoResponse"},
		{"old version", func(c *sarama.Config) { c.Producer.Idempotent = false; c.Version = sarama.V0_10_2_0 }, "Version"},
		{"idempotent, many requests", func(c *sarama.Config) { c.Net.MaxOpenRequests = 5 }, "MaxOpenRequests"},
		{"zero max bytes", func(c *sarama.Config) { c.Producer.MaxMessageBytes = 0 }, "MaxMessageBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewConfig()
			tt.change(cfg)
			_, err := New([]string{"127.0.0.1:1"}, cfg)
			if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "kafka: ") {
				t.Fatalf("New = %v, want a kafka: error wrapping ErrInvalidConfig naming %s", err, tt.want)
			}
		})
	}
	if err := validateConfig(NewConfig()); err != nil {
		t.Errorf("NewConfig does not validate: %v", err)
	}
	lazy := func(opts ...Option) func() error {
		return func() error {
			p, err := New([]string{"127.0.0.1:1"}, nil, append([]Option{WithLazyConnect()}, opts...)...)
			if err == nil {
				p.Close()
			}
			return err
		}
	}
	for name, tc := range map[string]struct {
		f    func() error
		want string
	}{
		"no brokers":     {func() error { _, err := New(nil, nil); return err }, "no broker addresses"},
		"nil client":     {func() error { _, err := NewFromClient(nil); return err }, "client is nil"},
		"nil producer":   {func() error { _, err := NewFromProducer(nil); return err }, "producer is nil"},
		"negative max":   {lazy(WithMaxMessageBytes(-1)), "WithMaxMessageBytes: -1 is negative"},
		"max over limit": {lazy(WithMaxMessageBytes(DefaultMaxMessageBytes + 1)), "WithMaxMessageBytes: 1048577 is over the config's Producer.MaxMessageBytes (1048576)"},
		"nil topic":      {lazy(WithTopic(nil)), "WithTopic: the topic function is nil"},
	} {
		err := tc.f()
		if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "kafka: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a kafka: error wrapping ErrInvalidConfig with %q", name, err, tc.want)
		}
	}
	if err := lazy(WithMaxMessageBytes(DefaultMaxMessageBytes), WithTopic(nil), WithTopic(func(*outbox.Event) string { return "t" }))(); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestNewConfigDefaults(t *testing.T) {
	t.Parallel()
	c := NewConfig()
	if !c.Producer.Idempotent || c.Producer.RequiredAcks != sarama.WaitForAll || c.Net.MaxOpenRequests != 1 ||
		c.Producer.Retry.Max != DefaultRetryMax || !c.Producer.Return.Successes || !c.Producer.Return.Errors ||
		c.Producer.MaxMessageBytes != DefaultMaxMessageBytes || c.Producer.Compression != sarama.CompressionNone ||
		!c.Version.IsAtLeast(sarama.V0_11_0_0) {
		t.Errorf("NewConfig: unexpected defaults %+v", c.Producer)
	}
}

func TestWithTopic(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	p := openPublisher(t, c.brokers, testConfig(), WithTopic(func(e *outbox.Event) string {
		if e.Type == "drop" {
			return ""
		}
		return topic
	}))
	routed := event("logical-name", "a", "t", "x")
	noTopic := event("logical-name", "b", "drop", "y")
	failed := failedOf(t, p.Publish(context.Background(), []*outbox.Event{routed, noTopic}))
	if len(failed) != 1 || !outbox.IsPermanent(failed[noTopic.ID]) {
		t.Fatalf("failed = %v, want only %s, permanent", failed, noTopic.ID)
	}
	if e := decodeKgo(t, consume(t, c.brokers, topic, 1)[0]); e.ID != routed.ID || e.Topic != topic {
		t.Errorf("consumed %+v", e)
	}
}

// No SendMessages call carries two events of one aggregate, and each
// aggregate's events keep their order across the rounds.
func TestRoundsKeepOneEventPerAggregatePerCall(t *testing.T) {
	t.Parallel()
	mk := func(id, agg string) *outbox.Event { return &outbox.Event{ID: id, AggregateID: agg} }
	evs := []*outbox.Event{mk("a1", "A"), mk("b1", "B"), mk("a2", "A"), mk("x", ""), mk("a3", "A"), mk("b2", "B"), mk("y", "")}
	var got []string
	for _, r := range rounds(evs) {
		var ids []string
		for _, e := range r {
			ids = append(ids, e.ID)
		}
		got = append(got, strings.Join(ids, ","))
	}
	if want := []string{"a1,b1,x,y", "a2,b2", "a3"}; !slices.Equal(got, want) {
		t.Fatalf("rounds = %v, want %v", got, want)
	}
}
