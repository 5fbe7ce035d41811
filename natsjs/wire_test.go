package natsjs

import (
	"errors"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/nats-io/nats.go"
)

func TestHeaderNameRoundTrip(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"traceparent", "a:b", "sp ace", "100%", "ünï", "x{y}"} {
		name := HeaderName(k)
		for i := 0; i < len(name); i++ {
			if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
				t.Fatalf("HeaderName(%q) = %q holds byte %q", k, name, c)
			}
		}
		e := &outbox.Event{ID: "1", Type: "t", CreatedAt: time.Unix(1, 5).UTC(), Headers: map[string]string{k: "v"}}
		m, err := message(e, "s")
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		if got.Headers[k] != "v" || !got.CreatedAt.Equal(e.CreatedAt) {
			t.Errorf("key %q: decoded %+v", k, got)
		}
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	t.Parallel()
	good := func() nats.Header {
		return nats.Header{"id": {"1"}, "type": {"t"}, "created_at": {"2025-01-02T03:04:05.000000000Z"}}
	}
	cases := map[string]func(nats.Header){
		"no id":        func(h nats.Header) { delete(h, "id") },
		"no type":      func(h nats.Header) { delete(h, "type") },
		"no time":      func(h nats.Header) { delete(h, "created_at") },
		"bad time":     func(h nats.Header) { h["created_at"] = []string{"yesterday"} },
		"bad escape":   func(h nats.Header) { h["header.%zz"] = []string{"v"} },
		"empty key":    func(h nats.Header) { h["header."] = []string{"v"} },
		"short escape": func(h nats.Header) { h["header.%4"] = []string{"v"} },
	}
	for name, mod := range cases {
		h := good()
		mod(h)
		if _, err := Decode("s", h, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Decode("s", good(), nil); err != nil {
		t.Errorf("good message: %v", err)
	}
	if _, err := DecodeMsg(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil message: %v", err)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"": "_", "_": "%5F", "sku-1": "sku-1", "a.b*c>d e%": "a%2Eb%2Ac%3Ed%20e%25"} {
		if got := AggregateToken(in); got != want {
			t.Errorf("AggregateToken(%q) = %q, want %q", in, got, want)
		}
		if s := SubjectByAggregate(&outbox.Event{Topic: "t", AggregateID: in}); !validSubject(s) {
			t.Errorf("SubjectByAggregate for %q = %q is not a valid subject", in, s)
		}
	}
	for s, want := range map[string]bool{"a": true, "a.b": true, "": false, "a..b": false, ".a": false, "a.": false, "a.*": false, "a.>": false, "a b": false} {
		if got := validSubject(s); got != want {
			t.Errorf("validSubject(%q) = %v", s, got)
		}
	}
}

func TestUnsendableValues(t *testing.T) {
	t.Parallel()
	for _, e := range []*outbox.Event{
		{ID: "1", Type: " t", CreatedAt: time.Now()},
		{ID: "1", Type: "t", AggregateID: "a\r\nb", CreatedAt: time.Now()},
		{ID: "1", Type: "t", Headers: map[string]string{"k": "v "}, CreatedAt: time.Now()},
	} {
		if _, err := message(e, "s"); !errors.Is(err, errUnsendable) {
			t.Errorf("%+v: %v, want errUnsendable", e, err)
		}
	}
}
