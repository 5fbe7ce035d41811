package natsjs

import (
	"bytes"
	"errors"
	"net/textproto"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/fuzzevent"
	"github.com/nats-io/nats.go"
)

// FuzzRoundTrip checks that Decode gives back every event message
// encodes, whatever its bytes, after the headers went through the NATS
// wire format; that every header name is one NATS accepts; that msgSize
// is the size of what goes on the wire; and that message refuses an
// event only for a reason the package documents, never sending it
// altered.
func FuzzRoundTrip(f *testing.F) {
	f.Add("evt-1", "stock.updated", "sku-1", []byte{0, 0xff, 0xc3, 0x28}, "traceparent", "00-ab-cd-01", int64(1735787045123456789))
	f.Add("x", "t", "", []byte(nil), "a:b c%", "", int64(0))
	f.Add("é", "ü", "\x00", []byte("\r\n"), "header.nested", "in side", int64(-1))
	f.Add("x", "t", "a\r\nb", []byte(nil), "k", "v ", int64(1))
	f.Fuzz(func(t *testing.T, id, typ, agg string, payload []byte, hk, hv string, nanos int64) {
		e := fuzzevent.New(t, "orders", id, typ, agg, payload, hk, hv, nanos)
		m, err := message(e, e.Topic)
		if err != nil {
			if !errors.Is(err, errUnsendable) {
				t.Fatalf("message: error %v does not wrap errUnsendable", err)
			}
			for _, v := range []string{id, typ, agg, hv} {
				if strings.ContainsAny(v, "\r\n") || strings.TrimFunc(v, unicode.IsSpace) != v {
					return // refused for a documented reason
				}
			}
			t.Fatalf("message refused %+v, whose values NATS carries unchanged: %v", e, err)
		}
		for name := range m.Header {
			if !validHeaderName(name) {
				t.Fatalf("header name %q is not one NATS accepts", name)
			}
		}
		hdr := wireHeaders(m.Header)
		if got, want := msgSize(m), int64(len(hdr)+len(m.Data)); got != want {
			t.Fatalf("msgSize = %d, but %d bytes go on the wire", got, want)
		}
		h, err := nats.DecodeHeadersMsg(hdr)
		if err != nil {
			t.Fatalf("DecodeHeadersMsg of %q: %v", hdr, err)
		}
		got, err := Decode(m.Subject, h, m.Data)
		if err != nil {
			t.Fatalf("Decode of an encoded event: %v", err)
		}
		if len(e.Payload) == 0 {
			e.Payload = nil
		}
		if !sameEvent(got, e) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
		}
	})
}

// FuzzDecode checks that Decode never panics and either fails with
// ErrMalformed or returns an event with its required fields.
func FuzzDecode(f *testing.F) {
	f.Add("orders", "evt-1", "t", "2025-01-02T03:04:05.000000001Z", "header.k", "v", []byte("{}"))
	f.Add("orders", "", "t", "2025-01-02T03:04:05Z", "header.%4", "", []byte(nil))
	f.Add("", "id", "", "not a time", "header.", "", []byte{0xff})
	f.Fuzz(func(t *testing.T, subject, id, typ, created, name, value string, data []byte) {
		h := nats.Header{HeaderID: {id}, HeaderType: {typ}, HeaderCreatedAt: {created}}
		h[name] = append(h[name], value)
		e, err := Decode(subject, h, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if e.ID == "" || e.Type == "" || e.Topic != subject || e.CreatedAt.Location() != time.UTC {
			t.Fatalf("Decode accepted %v as %+v", h, e)
		}
		if (len(data) == 0) != (e.Payload == nil) {
			t.Fatalf("Decode of %d bytes of data gave payload %q", len(data), e.Payload)
		}
		for k := range e.Headers {
			if k == "" {
				t.Fatalf("Decode accepted %v with an empty header key", h)
			}
		}
	})
}

// wireHeaders encodes h as nats.go (v1.55, Msg.headerBytes) puts headers
// on the wire: the "NATS/1.0" line, one "name: value" line per value with
// the value trimmed of ASCII white space and its line breaks turned into
// spaces, and a blank line.
func wireHeaders(h nats.Header) []byte {
	newlines := strings.NewReplacer("\r", " ", "\n", " ")
	var b bytes.Buffer
	b.WriteString("NATS/1.0\r\n")
	for name, vs := range h {
		for _, v := range vs {
			b.WriteString(name + ": " + newlines.Replace(textproto.TrimString(v)) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// validHeaderName reports whether nats.go publishes a message with the
// header name: printable ASCII without white space and without any of
// "()/,:;<=>?@[\]{}.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < '!' || c > '~' || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// sameEvent reports whether a and b have the same fields, times compared
// as instants.
func sameEvent(a, b *outbox.Event) bool {
	return a.ID == b.ID && a.Topic == b.Topic && a.Type == b.Type && a.AggregateID == b.AggregateID &&
		bytes.Equal(a.Payload, b.Payload) && (a.Payload == nil) == (b.Payload == nil) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.CreatedAt.Location() == b.CreatedAt.Location() &&
		mapsEqual(a.Headers, b.Headers)
}
