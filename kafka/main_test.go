package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/leaktest"
	"github.com/eventsync/outbox/internal/testproxy"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// envKafka names a real cluster (comma-separated broker addresses) to run
// the tests against instead of an in-process kfake cluster.
const envKafka = "OUTBOX_TEST_KAFKA"

func TestMain(m *testing.M) {
	leaktest.Main(m) // sarama's own background goroutines excepted
}

// cluster is where one test's records go: its own kfake cluster, or the
// shared real cluster of envKafka, on which every test makes its own
// topics.
type cluster struct {
	brokers []string
	fake    *kfake.Cluster // nil on a real cluster
}

func newCluster(t testing.TB, opts ...kfake.Opt) *cluster {
	t.Helper()
	if env := os.Getenv(envKafka); env != "" {
		return &cluster{brokers: strings.Split(env, ",")}
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(3)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &cluster{brokers: c.ListenAddrs(), fake: c}
}

var topicSeq struct {
	sync.Mutex
	n int
}

// topic creates a topic with a name unique to the test and deletes it when
// the test ends.
func (c *cluster) topic(t testing.TB, partitions int32) string {
	t.Helper()
	return c.createTopic(t, topicName(t), partitions, nil)
}

// topicName returns a topic name unique to the test. Nothing creates it.
func topicName(t testing.TB) string {
	topicSeq.Lock()
	topicSeq.n++
	n := topicSeq.n
	topicSeq.Unlock()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, t.Name())
	name = fmt.Sprintf("outbox-%s-%d-%08x", name, n, rand.Uint32())
	if len(name) > 200 {
		name = name[len(name)-200:]
	}
	return name
}

// createTopic creates the topic name with the given topic configs (nil
// for the broker's defaults) and deletes it when the test ends.
func (c *cluster) createTopic(t testing.TB, name string, partitions int32, configs map[string]*string) string {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(c.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatalf("cluster admin: %v", err)
	}
	defer admin.Close()
	if err := admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: -1, ConfigEntries: configs}, false); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	c.deleteTopicLater(t, name)
	return name
}

// deleteTopicLater deletes the topic name, if it exists, when the test
// ends. A kfake cluster is thrown away with its topics.
func (c *cluster) deleteTopicLater(t testing.TB, name string) {
	if c.fake != nil {
		return
	}
	t.Cleanup(func() {
		admin, err := sarama.NewClusterAdmin(c.brokers, sarama.NewConfig())
		if err != nil {
			t.Errorf("cluster admin: %v", err)
			return
		}
		defer admin.Close()
		if err := admin.DeleteTopic(name); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			t.Errorf("delete topic %s: %v", name, err)
		}
	})
}

// testConfig is NewConfig with short retries, so that failures show
// within seconds, and without asking the cluster to create topics.
func testConfig() *sarama.Config {
	c := NewConfig()
	c.Metadata.AllowAutoTopicCreation = false
	c.Metadata.Retry.Max = 1
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	c.Producer.Retry.Backoff = 50 * time.Millisecond
	c.Net.DialTimeout = 2 * time.Second
	c.Net.ReadTimeout = 5 * time.Second
	c.Net.WriteTimeout = 5 * time.Second
	return c
}

func openPublisher(t testing.TB, brokers []string, cfg *sarama.Config, opts ...Option) *Publisher {
	t.Helper()
	p, err := New(brokers, cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// proxied puts a testproxy in front of every broker of c and returns a
// config whose connections, to the bootstrap address and to every broker
// the metadata names, all go through the proxies.
type proxied struct {
	proxies map[string]*testproxy.Proxy // broker address -> its proxy
	cfg     *sarama.Config
}

func (c *cluster) proxied(t testing.TB) *proxied {
	t.Helper()
	client, err := sarama.NewClient(c.brokers, sarama.NewConfig())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	px := &proxied{proxies: map[string]*testproxy.Proxy{}, cfg: testConfig()}
	for _, b := range client.Brokers() {
		p, err := testproxy.Start(b.Addr())
		if err != nil {
			t.Fatalf("proxy: %v", err)
		}
		t.Cleanup(func() { p.Close() })
		px.proxies[b.Addr()] = p
	}
	client.Close()
	px.cfg.Net.Proxy.Enable = true
	px.cfg.Net.Proxy.Dialer = dialerFunc(func(network, addr string) (net.Conn, error) {
		if p, ok := px.proxies[addr]; ok {
			addr = p.Addr()
		}
		d := net.Dialer{Timeout: 2 * time.Second}
		return d.Dial(network, addr)
	})
	return px
}

func (px *proxied) cut() {
	for _, p := range px.proxies {
		p.Cut()
	}
}

func (px *proxied) restore() {
	for _, p := range px.proxies {
		p.Restore()
	}
}

func (px *proxied) setDelay(d time.Duration) {
	for _, p := range px.proxies {
		p.SetDelay(d)
	}
}

// bootstrap is an address that reaches the cluster through a proxy.
func (px *proxied) bootstrap() []string {
	for addr := range px.proxies {
		return []string{addr}
	}
	return nil
}

type dialerFunc func(network, addr string) (net.Conn, error)

func (f dialerFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// consume reads n records of topic from the start with a franz-go client,
// an implementation independent of the one that wrote them.
func consume(t testing.TB, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("kgo: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records of %s before the timeout", len(recs), n, topic)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	if len(recs) != n {
		t.Fatalf("consumed %d records of %s, want %d", len(recs), topic, n)
	}
	return recs
}

func decodeKgo(t testing.TB, r *kgo.Record) *outbox.Event {
	t.Helper()
	hs := make([]Header, len(r.Headers))
	for i, h := range r.Headers {
		hs[i] = Header{Key: h.Key, Value: h.Value}
	}
	e, err := DecodeRecord(r.Topic, r.Key, r.Value, hs)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	return e
}

// event returns a valid event as Save would leave it.
func event(topic, aggregate, typ string, payload string) *outbox.Event {
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       topic,
		Type:        typ,
		AggregateID: aggregate,
		Payload:     []byte(payload),
		CreatedAt:   time.Now().UTC(),
	}
}

func failedOf(t testing.TB, err error) map[string]error {
	t.Helper()
	if err == nil {
		return nil
	}
	pe, ok := err.(*outbox.PublishError)
	if !ok {
		t.Fatalf("Publish error is %T (%v), want *outbox.PublishError", err, err)
	}
	return pe.Failed
}
