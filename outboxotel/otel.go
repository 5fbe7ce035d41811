// Package outboxotel carries OpenTelemetry trace context through the
// outbox, on OpenTelemetry's API only: it brings no SDK and no exporter;
// spans go wherever the application's TracerProvider sends them.
//
// Tracing is a hook, passed with outbox.WithHooks:
//
//   - Save writes the caller's trace context into each event's headers
//     (W3C traceparent and tracestate by default). The publishers copy
//     every header, so it reaches Redis as the stream field
//     "header:traceparent" and Kafka as the record header
//     "header:traceparent", where a consumer extracts it.
//
//   - Each published batch gets a producer span, "outbox publish", linked
//     to the trace of every event in it (a batch mixes events of many
//     requests, so links rather than one parent). Right after commit the
//     span is also a child of the caller's span.
//
// Wiring it up:
//
//	tr, err := outboxotel.New() // the global TracerProvider, W3C propagation
//	if err != nil { ... }
//	ob, err := outbox.New(store, pub, outbox.WithHooks(tr))
package outboxotel

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/outbox"
)

// ScopeName is the instrumentation scope of the tracer.
const ScopeName = "github.com/eventsync/outbox/outboxotel"

// SpanName is the name of the span of each published batch.
const SpanName = "outbox publish"

// MaxLinks bounds the links of one span: a batch of up to
// outbox.MaxBatchSize events links at most this many distinct traces.
// (An SDK may keep fewer; the default limit is 128.)
const MaxLinks = 128

// Option configures New.
type Option func(*config)

type config struct {
	tp      trace.TracerProvider
	prop    propagation.TextMapPropagator
	nilTP   bool // WithTracerProvider(nil)
	nilProp bool // WithPropagator(nil)
}

// WithTracerProvider sets where spans go. Defaults to the global
// TracerProvider (otel.GetTracerProvider) at the time New is called; nil
// is refused.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp, c.nilTP = tp, tp == nil }
}

// WithPropagator sets how trace context is written to and read from event
// headers. Defaults to propagation.TraceContext (W3C traceparent and
// tracestate), not the global propagator, which is a no-op unless the
// application sets one. Pass otel.GetTextMapPropagator() to follow the
// application's choice; nil is refused.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop, c.nilProp = p, p == nil }
}

// Tracing is an outbox.SaveHook and outbox.PublishHook that propagates
// trace context through events and traces publication. It is safe for
// concurrent use.
type Tracing struct {
	prop   propagation.TextMapPropagator
	tracer trace.Tracer
}

// spanKey finds, in the context AfterPublish is given, the span that
// BeforePublish of the same Tracing started.
type spanKey struct{ t *Tracing }

var (
	_ outbox.SaveHook    = (*Tracing)(nil)
	_ outbox.PublishHook = (*Tracing)(nil)
)

// New returns the tracing hook. An invalid option is an error wrapping
// outbox.ErrInvalidConfig.
func New(opts ...Option) (*Tracing, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	switch {
	case c.nilTP:
		return nil, fmt.Errorf("outboxotel: %w: WithTracerProvider: the TracerProvider is nil", outbox.ErrInvalidConfig)
	case c.nilProp:
		return nil, fmt.Errorf("outboxotel: %w: WithPropagator: the propagator is nil", outbox.ErrInvalidConfig)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.prop == nil {
		c.prop = propagation.TraceContext{}
	}
	return &Tracing{prop: c.prop, tracer: c.tp.Tracer(ScopeName)}, nil
}

// BeforeSave implements outbox.SaveHook: it writes ctx's trace context
// into the headers of each event. An event that already carries one of
// the propagator's headers keeps its own. Without a span in ctx nothing
// is written.
func (t *Tracing) BeforeSave(ctx context.Context, events []*outbox.Event) {
	carrier := propagation.MapCarrier{}
	t.prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return
	}
	fields := t.prop.Fields()
	for _, e := range events {
		if e == nil || hasAny(e.Headers, fields) {
			continue
		}
		if e.Headers == nil {
			e.Headers = make(map[string]string, len(carrier))
		}
		for k, v := range carrier {
			e.Headers[k] = v
		}
	}
}

func hasAny(h map[string]string, keys []string) bool {
	for _, k := range keys {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// BeforePublish implements outbox.PublishHook: it starts the batch's
// producer span, linked to each distinct trace context found in the
// events' headers, and returns ctx with it, so a traced publisher client
// makes its spans children of it.
func (t *Tracing) BeforePublish(ctx context.Context, b outbox.PublishStart) context.Context {
	if len(b.Events) == 0 || b.Events[0] == nil {
		return ctx
	}
	var links []trace.Link
	type key struct {
		trace trace.TraceID
		span  trace.SpanID
	}
	seen := map[key]bool{}
	for _, e := range b.Events {
		if e == nil || len(e.Headers) == 0 || len(links) >= MaxLinks {
			continue
		}
		sc := trace.SpanContextFromContext(t.prop.Extract(context.Background(), propagation.MapCarrier(e.Headers)))
		k := key{sc.TraceID(), sc.SpanID()}
		if !sc.IsValid() || seen[k] {
			continue
		}
		seen[k] = true
		links = append(links, trace.Link{SpanContext: sc})
	}
	mode := "relay"
	if b.Immediate {
		mode = "immediate"
	}
	ctx, span := t.tracer.Start(ctx, SpanName,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "send"),
			attribute.Int("messaging.batch.message_count", len(b.Events)),
			attribute.String("outbox.mode", mode),
		))
	return context.WithValue(ctx, spanKey{t}, span)
}

// AfterPublish implements outbox.PublishHook: it records the outcome on
// the batch's span and ends it. A batch with failures has status Error.
func (t *Tracing) AfterPublish(ctx context.Context, d outbox.PublishDone) {
	span, ok := ctx.Value(spanKey{t}).(trace.Span)
	if !ok {
		return
	}
	span.SetAttributes(
		attribute.Int("outbox.published", len(d.Events)-len(d.Failed)),
		attribute.Int("outbox.failed", len(d.Failed)),
		attribute.Int("outbox.dead", len(d.Dead)),
	)
	switch {
	case d.BrokerErr != nil:
		span.RecordError(d.BrokerErr)
		span.SetStatus(codes.Error, d.BrokerErr.Error())
	case len(d.Failed) > 0:
		span.SetStatus(codes.Error, fmt.Sprintf("%d of %d events not acknowledged", len(d.Failed), len(d.Events)))
	}
	span.End()
}

// Extract returns ctx with the trace context that Save wrote into the
// headers of a consumed event (decoded by redisstream.Decode or
// kafka.Decode), as a remote span context: start the consumer's span
// from it, or link to it.
func (t *Tracing) Extract(ctx context.Context, headers map[string]string) context.Context {
	return t.prop.Extract(ctx, propagation.MapCarrier(headers))
}
