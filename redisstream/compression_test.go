package redisstream

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/eventsync/outbox"
)

// compressible returns n bytes of repetitive JSON.
func compressible(n int) []byte {
	return []byte(strings.Repeat(`{"sku":"sku-000042","quantity":17},`, n/35+1)[:n])
}

func TestCompressionRoundTrip(t *testing.T) {
	for _, codec := range []Codec{Gzip, Zstd} {
		t.Run(string(codec), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, h *harness) {
				key := h.key("compressed")
				pub := newPublisher(t, h.client, WithCompression(codec, 100))
				small, big, random := event(key, "a"), event(key, "a"), event(key, "a")
				small.Payload = compressible(100) // at the threshold: sent as is
				big.Payload = compressible(16 << 10)
				random.Payload = make([]byte, 4096) // incompressible: sent as is
				_, _ = rand.Read(random.Payload)
				random.Headers = map[string]string{"tenant": "acme"}
				if err := pub.Publish(context.Background(), []*outbox.Event{small, big, random}); err != nil {
					t.Fatalf("Publish: %v", err)
				}

				msgs, err := h.client.XRange(context.Background(), key, "-", "+").Result()
				if err != nil || len(msgs) != 3 {
					t.Fatalf("XRANGE: %d entries, %v", len(msgs), err)
				}
				wantEncoding := []string{"", string(codec), ""}
				for i, m := range msgs {
					got, _ := m.Values[FieldContentEncoding].(string)
					if got != wantEncoding[i] {
						t.Errorf("entry %d: %s = %q, want %q", i, FieldContentEncoding, got, wantEncoding[i])
					}
				}
				if n := len(msgs[1].Values[FieldPayload].(string)); n >= len(big.Payload)/4 {
					t.Errorf("compressed payload field is %d bytes for %d bytes of repetitive JSON", n, len(big.Payload))
				}
				for i, e := range readStream(t, h.client, key) {
					want := []*outbox.Event{small, big, random}[i]
					if !sameEvent(e, want) {
						t.Errorf("entry %d decoded as %+v, want %+v", i, e, want)
					}
				}
			})
		})
	}
}

func TestCompressionWireOrder(t *testing.T) {
	p := &Publisher{stream: StreamByTopic, codec: Zstd, threshold: 10}
	e := event("s", "a")
	e.Payload = compressible(1000)
	e.Headers = map[string]string{"b": "2", "a": "1"}
	args, err := p.xaddArgs("s", e)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := 3; i < len(args); i += 2 {
		names = append(names, args[i].(string))
	}
	want := "id type aggregate_id created_at payload content_encoding header:a header:b"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("fields %q, want %q", got, want)
	}
}

func TestCompressionDefaultThreshold(t *testing.T) {
	p := newPublisher(t, miniHarness(t).client, WithCompression(Gzip, 0))
	if p.threshold != DefaultCompressionThreshold {
		t.Errorf("threshold %d, want %d", p.threshold, DefaultCompressionThreshold)
	}
	e := event("s", "a")
	e.Payload = compressible(DefaultCompressionThreshold)
	args, _ := p.xaddArgs("s", e)
	for _, a := range args {
		if a == FieldContentEncoding {
			t.Fatalf("a payload of exactly the threshold was compressed")
		}
	}
	e.Payload = compressible(DefaultCompressionThreshold + 1)
	args, _ = p.xaddArgs("s", e)
	if args[len(args)-2] != FieldContentEncoding || args[len(args)-1] != "gzip" {
		t.Errorf("a payload over the threshold was not compressed: %v", args[len(args)-2:])
	}
}

func TestCompressionOptionErrors(t *testing.T) {
	c := miniHarness(t).client
	for _, opt := range []Option{WithCompression("lz4", 0), WithCompression(Gzip, -1), WithCompression("", 10)} {
		if _, err := New(c, opt); !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Errorf("New: %v, want ErrInvalidConfig", err)
		}
	}
}

func TestDecodeContentEncodingErrors(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{FieldID: "x", FieldType: "t", FieldCreatedAt: "2025-01-02T03:04:05Z", FieldPayload: "not compressed"}
	}
	for _, enc := range []string{"gzip", "zstd", "brotli"} {
		v := base()
		v[FieldContentEncoding] = enc
		if _, err := Decode(v); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s over garbage: %v, want ErrMalformed", enc, err)
		}
	}
	// An empty payload compressed is still an empty payload.
	for _, codec := range []Codec{Gzip, Zstd} {
		var c []byte
		switch codec {
		case Gzip:
			c = mustGzip(t, nil)
		case Zstd:
			c = zstdEncoder().EncodeAll(nil, nil)
		}
		v := base()
		v[FieldPayload], v[FieldContentEncoding] = string(c), string(codec)
		e, err := Decode(v)
		if err != nil || e.Payload != nil {
			t.Errorf("%s of nothing: payload %q, %v", codec, e.Payload, err)
		}
	}
}

func mustGzip(t *testing.T, p []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
