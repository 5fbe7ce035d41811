package outboxotel_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxotel"
)

// newTracing returns outboxotel.New(opts...), failing the test on an error.
func newTracing(t *testing.T, opts ...outboxotel.Option) *outboxotel.Tracing {
	t.Helper()
	tr, err := outboxotel.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestInvalidOptions: a nil provider or propagator is an error of New
// naming the option, not a silent default.
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]outboxotel.Option{
		"WithTracerProvider": outboxotel.WithTracerProvider(nil),
		"WithPropagator":     outboxotel.WithPropagator(nil),
	} {
		tr, err := outboxotel.New(opt)
		if tr != nil || !errors.Is(err, outbox.ErrInvalidConfig) || !strings.HasPrefix(err.Error(), "outboxotel: ") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s(nil): %v, %v; want an outboxotel: error wrapping ErrInvalidConfig that names the option", name, tr, err)
		}
	}
	// A later valid option does not hide an invalid one.
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	if _, err := outboxotel.New(outboxotel.WithPropagator(nil), outboxotel.WithTracerProvider(tp)); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("WithPropagator(nil) then a provider: %v, want ErrInvalidConfig", err)
	}
	newTracing(t, nil, outboxotel.WithTracerProvider(tp), outboxotel.WithPropagator(propagation.TraceContext{}))
}

// TestPublishSpanAttributes: the span of a batch counts its published,
// failed and dead events.
func TestPublishSpanAttributes(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := newTracing(t, outboxotel.WithTracerProvider(tp))
	events := []*outbox.Event{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	ctx := tr.BeforePublish(t.Context(), outbox.PublishStart{Events: events})
	tr.AfterPublish(ctx, outbox.PublishDone{Events: events,
		Failed: map[string]error{"b": errors.New("busy"), "c": errors.New("too large")}, Dead: []string{"c"}})
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	got := map[attribute.Key]int64{}
	for _, kv := range spans[0].Attributes {
		got[kv.Key] = kv.Value.AsInt64()
	}
	for k, want := range map[attribute.Key]int64{"outbox.published": 1, "outbox.failed": 2, "outbox.dead": 1, "messaging.batch.message_count": 3} {
		if got[k] != want {
			t.Errorf("attribute %s = %d, want %d (all: %v)", k, got[k], want, spans[0].Attributes)
		}
	}
}
