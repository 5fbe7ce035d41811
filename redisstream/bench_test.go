package redisstream

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
)

// benchEvent is a typical event: a UUIDv7, a 256-byte payload and two
// headers.
func benchEvent(topic string) *outbox.Event {
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	return &outbox.Event{
		ID:          outbox.NewID(),
		Topic:       topic,
		Type:        "stock.updated",
		AggregateID: "sku-000042",
		Payload:     payload,
		Headers: map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			"tenant":      "acme",
		},
		CreatedAt: time.Now().UTC(),
	}
}

// BenchmarkPublish publishes batches to one stream, against the Redis of
// OUTBOX_TEST_REDIS when it is set and against miniredis otherwise. The
// stream is trimmed (MAXLEN ~ 10000) so a long run does not fill a shared
// server, and deleted at the end.
func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			var h *harness
			if os.Getenv(envRedis) != "" {
				h = realHarness(b)
			} else {
				h = miniHarness(b)
			}
			pub := newPublisher(b, h.client, WithMaxLen(10000))
			batch := make([]*outbox.Event, size)
			for i := range batch {
				batch[i] = benchEvent(h.key("bench"))
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := pub.Publish(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkEncode measures building the XADD arguments of one event.
func BenchmarkEncode(b *testing.B) {
	pub := &Publisher{stream: StreamByTopic, maxLen: 10000, maxLenArg: int64(10000)}
	e := benchEvent("bench")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = pub.xaddArgs(e.Topic, e)
	}
}

// BenchmarkCompress measures each codec on a 256-byte and a 16 KiB JSON
// payload and reports the compressed size as a share of the original.
func BenchmarkCompress(b *testing.B) {
	for _, size := range []int{256, 16 << 10} {
		payload := benchJSON(size)
		for _, codec := range []Codec{Gzip, Zstd} {
			b.Run(fmt.Sprintf("%s/%dB", codec, size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var out []byte
				for b.Loop() {
					out, _ = compress(codec, payload)
				}
				if out == nil {
					out = payload
				}
				b.ReportMetric(float64(len(out))/float64(size), "size-ratio")
			})
		}
	}
}

// BenchmarkDecode measures turning a stream entry back into an event, with
// and without a compressed 16 KiB payload.
func BenchmarkDecode(b *testing.B) {
	for _, codec := range []Codec{"", Gzip, Zstd} {
		name := string(codec)
		if name == "" {
			name = "none"
		}
		b.Run(name, func(b *testing.B) {
			e := benchEvent("bench")
			e.Payload = benchJSON(16 << 10)
			p := &Publisher{stream: StreamByTopic, codec: codec, threshold: DefaultCompressionThreshold}
			args, err := p.xaddArgs("bench", e)
			if err != nil {
				b.Fatal(err)
			}
			values := map[string]any{}
			for i := 3; i+1 < len(args); i += 2 {
				switch v := args[i+1].(type) {
				case []byte:
					values[args[i].(string)] = string(v)
				default:
					values[args[i].(string)] = v
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(values); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchJSON returns size bytes of JSON-like text with varying numbers.
func benchJSON(size int) []byte {
	var sb strings.Builder
	for i := 0; sb.Len() < size; i++ {
		fmt.Fprintf(&sb, `{"sku":"sku-%06d","warehouse":"wh-%d","quantity":%d,"price_cents":%d},`, (i*7919)%1000000, i%8, (i*31)%500, 100+(i*104729)%100000)
	}
	return []byte(sb.String()[:size])
}
