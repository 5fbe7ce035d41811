package outboxotel_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/outboxotel"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// bundle is what a test works with: an outbox on a fresh SQLite table
// whose Tracing hook reports to an in-memory exporter.
type bundle struct {
	db     *sqlx.DB
	ob     *outbox.Outbox
	tp     *sdktrace.TracerProvider
	spans  *tracetest.InMemoryExporter
	tracer trace.Tracer
	tr     *outboxotel.Tracing
}

func random() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func setup(t *testing.T, pub outbox.Publisher) *bundle {
	t.Helper()
	db, err := sqlx.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "outbox.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := sqlstore.New(db, sqlstore.WithTable("outbox_otel_"+random()))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := newTracing(t, outboxotel.WithTracerProvider(tp))
	ob, err := outbox.New(store, pub, outbox.WithHooks(tr))
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{db: db, ob: ob, tp: tp, spans: exp, tracer: tp.Tracer("test"), tr: tr}
}

// request runs fn inside a span of the test, as a traced request handler
// would, and returns that span's context.
func (b *bundle) request(t *testing.T, fn func(ctx context.Context)) trace.SpanContext {
	t.Helper()
	ctx, span := b.tracer.Start(t.Context(), "POST /stock")
	defer span.End()
	fn(ctx)
	return span.SpanContext()
}

// save commits an event in a transaction of the caller's span without
// publishing it, so the relay does.
func (b *bundle) save(t *testing.T, ctx context.Context, topic string) *outbox.Event {
	t.Helper()
	e := &outbox.Event{Topic: topic, Type: "stock.updated", AggregateID: "sku-1", Payload: []byte(`{"qty":1}`)}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ob.Save(ctx, tx, e); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return e
}

// transact saves an event and publishes it right after commit.
func (b *bundle) transact(t *testing.T, ctx context.Context, topic string) {
	t.Helper()
	_, err := b.ob.Transact(ctx, b.db, func(tx *outbox.Tx) error {
		return tx.Save(ctx, &outbox.Event{Topic: topic, Type: "stock.updated", AggregateID: "sku-1", Payload: []byte(`{"qty":1}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// publishSpan returns the one "outbox publish" span exported so far.
func (b *bundle) publishSpan(t *testing.T) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range b.spans.GetSpans() {
		if s.Name == outboxotel.SpanName {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %q spans, want 1", len(found), outboxotel.SpanName)
	}
	return found[0]
}

// wantTraceparent checks that header carries the span context sc.
func wantTraceparent(t *testing.T, where, header string, sc trace.SpanContext) {
	t.Helper()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if header != want {
		t.Errorf("%s: traceparent %q, want %q (the caller's span)", where, header, want)
	}
}

func linkedTo(s tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, l := range s.Links {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// redisClient returns a client on miniredis, or on OUTBOX_TEST_REDIS when
// set, and a key prefix of the test's own, whose keys are deleted at the
// end.
func redisClient(t *testing.T) (*redis.Client, string) {
	t.Helper()
	prefix := "outbox-otel-test:" + random() + ":"
	url := os.Getenv("OUTBOX_TEST_REDIS")
	if url == "" {
		srv := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { c.Close() })
		return c, prefix
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("OUTBOX_TEST_REDIS is set but Redis is unreachable: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			err = c.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c, prefix
}

// readStream returns the fields of the entries of stream.
func readStream(t *testing.T, c *redis.Client, stream string) []map[string]any {
	t.Helper()
	msgs, err := c.XRange(t.Context(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		out[i] = m.Values
	}
	return out
}

// TestRedisCarriesTraceContext: the caller's span reaches the Redis entry
// as the field header:traceparent, published right after commit, and the
// publish span is the caller's child.
func TestRedisCarriesTraceContext(t *testing.T) {
	t.Parallel()
	c, prefix := redisClient(t)
	pub, err := redisstream.New(c)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pub)
	stream := prefix + "stock"
	sc := b.request(t, func(ctx context.Context) { b.transact(t, ctx, stream) })

	entries := readStream(t, c, stream)
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	tp, _ := entries[0][redisstream.HeaderPrefix+"traceparent"].(string)
	wantTraceparent(t, "redis field header:traceparent", tp, sc)
	e, err := redisstream.Decode(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := trace.SpanContextFromContext(b.tr.Extract(context.Background(), e.Headers)); got.TraceID() != sc.TraceID() || !got.IsRemote() {
		t.Errorf("Extract: %v, want the caller's trace as a remote span context", got)
	}

	s := b.publishSpan(t)
	if s.Parent.SpanID() != sc.SpanID() {
		t.Errorf("immediate publish span's parent %v, want the caller's span %v", s.Parent.SpanID(), sc.SpanID())
	}
	if !linkedTo(s, sc) {
		t.Errorf("publish span links %v, want the caller's span", s.Links)
	}
	if s.SpanKind != trace.SpanKindProducer {
		t.Errorf("span kind %v, want producer", s.SpanKind)
	}
}

// TestRelaySpanLinksEachEvent: the relay publishes events saved under
// different requests in one batch; its span is a root linked to each.
func TestRelaySpanLinksEachEvent(t *testing.T) {
	t.Parallel()
	c, prefix := redisClient(t)
	pub, err := redisstream.New(c)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pub)
	stream := prefix + "stock"
	first := b.request(t, func(ctx context.Context) { b.save(t, ctx, stream) })
	second := b.request(t, func(ctx context.Context) { b.save(t, ctx, stream) })
	b.save(t, context.Background(), stream) // untraced: no header, no link

	res, err := b.ob.SyncPending(context.Background(), 0)
	if err != nil || res.Synced != 3 {
		t.Fatalf("SyncPending: %+v, %v", res, err)
	}
	entries := readStream(t, c, stream)
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3", len(entries))
	}
	for i, sc := range []trace.SpanContext{first, second} {
		tp, _ := entries[i][redisstream.HeaderPrefix+"traceparent"].(string)
		wantTraceparent(t, "relayed entry", tp, sc)
	}
	if _, ok := entries[2][redisstream.HeaderPrefix+"traceparent"]; ok {
		t.Errorf("an event saved without a span carries a traceparent: %v", entries[2])
	}
	s := b.publishSpan(t)
	if s.Parent.IsValid() {
		t.Errorf("relay span has parent %v, want a root", s.Parent)
	}
	if len(s.Links) != 2 || !linkedTo(s, first) || !linkedTo(s, second) {
		t.Errorf("relay span links %v, want the two callers' spans", s.Links)
	}
	if s.Status.Code != 0 {
		t.Errorf("status %v for a batch that went through", s.Status)
	}
}

// TestKafkaCarriesTraceContext: the caller's span reaches the Kafka record
// as the header header:traceparent.
func TestKafkaCarriesTraceContext(t *testing.T) {
	t.Parallel()
	topic := "outbox-otel-" + random()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	pub, err := kafka.New(cluster.ListenAddrs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	b := setup(t, pub)
	sc := b.request(t, func(ctx context.Context) { b.transact(t, ctx, topic) })

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) == 0 && ctx.Err() == nil {
		recs = cl.PollFetches(ctx).Records()
	}
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	var tp string
	for _, h := range recs[0].Headers {
		if h.Key == kafka.HeaderPrefix+"traceparent" {
			tp = string(h.Value)
		}
	}
	wantTraceparent(t, "kafka header header:traceparent", tp, sc)
	if s := b.publishSpan(t); !linkedTo(s, sc) {
		t.Errorf("publish span links %v, want the caller's span", s.Links)
	}
}

// TestSaveKeepsOwnTraceContext: an event that already carries a
// traceparent keeps it; without a span nothing is written.
func TestSaveKeepsOwnTraceContext(t *testing.T) {
	t.Parallel()
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := newTracing(t, outboxotel.WithTracerProvider(tp))
	own := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	e1 := &outbox.Event{Headers: map[string]string{"traceparent": own}}
	e2 := &outbox.Event{}
	tr.BeforeSave(context.Background(), []*outbox.Event{e1, e2})
	if e2.Headers != nil {
		t.Errorf("headers %v written without a span", e2.Headers)
	}
	ctx, span := tp.Tracer("test").Start(context.Background(), "x")
	defer span.End()
	tr.BeforeSave(ctx, []*outbox.Event{e1, e2})
	if e1.Headers["traceparent"] != own {
		t.Errorf("own traceparent replaced by %q", e1.Headers["traceparent"])
	}
	wantTraceparent(t, "event without headers", e2.Headers["traceparent"], span.SpanContext())
}

// TestPublishSpanRecordsFailure: a batch the broker failed ends its span
// with status Error.
func TestPublishSpanRecordsFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, outbox.PublisherFunc(func(context.Context, []*outbox.Event) error {
		return context.DeadlineExceeded
	}))
	b.save(t, context.Background(), "stock")
	if _, err := b.ob.SyncPending(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	s := b.publishSpan(t)
	if s.Status.Code.String() != "Error" {
		t.Errorf("status %v, want Error", s.Status)
	}
	if len(s.Events) == 0 || s.Events[0].Name != "exception" {
		t.Errorf("events %v, want the recorded error", s.Events)
	}
}
