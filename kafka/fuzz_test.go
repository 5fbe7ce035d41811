package kafka

import (
	"errors"
	"testing"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/fuzzevent"
)

// FuzzParseCompression checks that a codec name is either known or
// refused with ErrInvalidConfig.
func FuzzParseCompression(f *testing.F) {
	for _, s := range []string{"none", "gzip", "snappy", "lz4", "zstd", " GZIP ", "", "brotli", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseCompression(s); err != nil && !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Fatalf("ParseCompression(%q): error %v does not wrap ErrInvalidConfig", s, err)
		}
	})
}

// FuzzMessageRoundTrip checks that DecodeRecord gives back every event
// the publisher encodes as a record, whatever its bytes.
func FuzzMessageRoundTrip(f *testing.F) {
	f.Add("evt-1", "stock.updated", "sku-1", []byte{0, 0xff, 0xc3, 0x28}, "traceparent", "00-ab-cd-01", int64(1735787045123456789))
	f.Add("x", "t", "", []byte(nil), "k", "", int64(0))
	f.Add("é", "ü", "\x00", []byte("\r\n"), "header:nested", "v", int64(-1))
	f.Fuzz(func(t *testing.T, id, typ, agg string, payload []byte, hk, hv string, nanos int64) {
		e := fuzzevent.New(t, "topic", id, typ, agg, payload, hk, hv, nanos)
		m := message(e, "topic")
		var key, value []byte
		var err error
		if m.Key != nil {
			if key, err = m.Key.Encode(); err != nil {
				t.Fatal(err)
			}
		}
		if m.Value != nil {
			if value, err = m.Value.Encode(); err != nil {
				t.Fatal(err)
			}
		}
		hs := make([]Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = Header{Key: string(h.Key), Value: h.Value}
		}
		got, err := DecodeRecord("topic", key, value, hs)
		if err != nil {
			t.Fatalf("DecodeRecord of an encoded event: %v", err)
		}
		if len(e.Payload) == 0 {
			e.Payload, got.Payload = nil, nil
		}
		if !equalEvents(got, e) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
	})
}
