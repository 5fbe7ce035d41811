package kafka

import (
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

func recordOf(e *outbox.Event) (key, value []byte, hs []Header) {
	m := message(e, e.Topic)
	if m.Key != nil {
		key, _ = m.Key.Encode()
	}
	if m.Value != nil {
		value, _ = m.Value.Encode()
	}
	for _, h := range m.Headers {
		hs = append(hs, Header{Key: string(h.Key), Value: h.Value})
	}
	return key, value, hs
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	e := &outbox.Event{
		ID: "id-1", Topic: "t", Type: "x.y", AggregateID: "agg", Payload: []byte("p"),
		Headers:   map[string]string{"b": "2", "a": "1"},
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
	}
	key, value, hs := recordOf(e)
	var names []string
	for _, h := range hs {
		names = append(names, h.Key)
	}
	want := []string{HeaderID, HeaderType, HeaderAggregateID, HeaderCreatedAt, "header:a", "header:b"}
	if len(names) != len(want) {
		t.Fatalf("headers %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("headers %v, want %v", names, want)
		}
	}
	if string(hs[3].Value) != "2026-01-02T02:04:05.000000006Z" {
		t.Errorf("created_at = %s", hs[3].Value)
	}
	got, err := DecodeRecord("t", key, value, hs)
	if err != nil {
		t.Fatal(err)
	}
	if !equalEvents(got, &outbox.Event{ID: e.ID, Topic: e.Topic, Type: e.Type, AggregateID: e.AggregateID,
		Payload: e.Payload, Headers: e.Headers, CreatedAt: e.CreatedAt.UTC()}) {
		t.Errorf("decoded %+v", got)
	}
	if _, err := Decode(&sarama.ConsumerMessage{Topic: "t", Key: key, Value: value}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode without headers = %v", err)
	}
	if _, err := Decode(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode(nil) = %v", err)
	}
}

// TestEncodeFixedWidth checks that created_at has all nine fractional
// digits whatever the time, as on the other brokers.
func TestEncodeFixedWidth(t *testing.T) {
	t.Parallel()
	for in, want := range map[time.Time]string{
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC):                          "2026-01-02T03:04:05.000000000Z",
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC):                  "2026-01-02T03:04:05.120000000Z",
		time.Date(2026, 1, 2, 4, 4, 5, 123456789, time.FixedZone("X", 3600)): "2026-01-02T03:04:05.123456789Z",
	} {
		_, _, hs := recordOf(&outbox.Event{ID: "i", Topic: "t", Type: "x", CreatedAt: in})
		if got := string(hs[3].Value); hs[3].Key != HeaderCreatedAt || got != want {
			t.Errorf("%v: header %s = %s, want %s", in, hs[3].Key, got, want)
		}
	}
}

// TestDecodeOldLayout decodes records as the publisher wrote them before
// v1, with created_at in time.RFC3339Nano (trailing zeros of the fraction
// dropped), which topics may still hold.
func TestDecodeOldLayout(t *testing.T) {
	t.Parallel()
	for created, want := range map[string]time.Time{
		"2026-01-02T03:04:05Z":           time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"2026-01-02T03:04:05.12Z":        time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC),
		"2026-01-02T03:04:05.000000006Z": time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	} {
		old := &sarama.ConsumerMessage{
			Topic: "stock", Key: []byte("sku-1"), Value: []byte("p"),
			Headers: []*sarama.RecordHeader{
				{Key: []byte("id"), Value: []byte("evt-1")},
				{Key: []byte("type"), Value: []byte("stock.updated")},
				{Key: []byte("aggregate_id"), Value: []byte("sku-1")},
				{Key: []byte("created_at"), Value: []byte(created)},
				{Key: []byte("header:tenant"), Value: []byte("acme")},
			},
		}
		got, err := Decode(old)
		if err != nil {
			t.Fatalf("created_at %s: %v", created, err)
		}
		wantEvent := &outbox.Event{ID: "evt-1", Topic: "stock", Type: "stock.updated", AggregateID: "sku-1",
			Payload: []byte("p"), Headers: map[string]string{"tenant": "acme"}, CreatedAt: want}
		if !equalEvents(got, wantEvent) {
			t.Errorf("created_at %s: decoded %+v, want %+v", created, got, wantEvent)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	t.Parallel()
	base := func() []Header {
		return []Header{
			{HeaderID, []byte("id")}, {HeaderType, []byte("t")}, {HeaderAggregateID, []byte("k")},
			{HeaderCreatedAt, []byte("2026-01-02T03:04:05Z")},
		}
	}
	if _, err := DecodeRecord("t", []byte("k"), nil, base()); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	tests := map[string]struct {
		key []byte
		hs  func() []Header
	}{
		"no id":           {[]byte("k"), func() []Header { return base()[1:] }},
		"empty type":      {[]byte("k"), func() []Header { h := base(); h[1].Value = nil; return h }},
		"no created_at":   {[]byte("k"), func() []Header { return base()[:3] }},
		"bad created_at":  {[]byte("k"), func() []Header { h := base(); h[3].Value = []byte("yesterday"); return h }},
		"duplicate id":    {[]byte("k"), func() []Header { return append(base(), Header{HeaderID, []byte("x")}) }},
		"key mismatch":    {[]byte("other"), base},
		"empty header":    {[]byte("k"), func() []Header { return append(base(), Header{HeaderPrefix, []byte("v")}) }},
		"non-UTF-8 value": {[]byte("k"), func() []Header { return append(base(), Header{"header:x", []byte{0xff}}) }},
	}
	for name, tt := range tests {
		if _, err := DecodeRecord("t", tt.key, nil, tt.hs()); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	// Headers of other tools are ignored; a missing key with an
	// aggregate_id header is fine only when both are empty.
	e, err := DecodeRecord("t", []byte("k"), nil, append(base(), Header{"traceparent", []byte("x")}))
	if err != nil || len(e.Headers) != 0 {
		t.Errorf("foreign header: %+v, %v", e, err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("agg"), []byte("payload"), "id", "type", "agg", "2026-01-02T03:04:05.123Z", "header:k", "v")
	f.Add([]byte(nil), []byte(nil), "", "", "", "", "", "")
	f.Add([]byte("x"), []byte{0}, "id", "t", "y", "not a time", "header:", "\xff")
	f.Fuzz(func(t *testing.T, key, value []byte, id, typ, agg, created, hk, hv string) {
		hs := []Header{{HeaderID, []byte(id)}, {HeaderType, []byte(typ)}, {HeaderAggregateID, []byte(agg)},
			{HeaderCreatedAt, []byte(created)}, {hk, []byte(hv)}}
		e, err := DecodeRecord("topic", key, value, hs)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What decodes must encode to a record that decodes the same.
		k2, v2, hs2 := recordOf(e)
		e2, err := DecodeRecord("topic", k2, v2, hs2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !equalEvents(e, e2) {
			t.Fatalf("round trip: %+v != %+v", e, e2)
		}
	})
}
