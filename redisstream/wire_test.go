package redisstream

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/fuzzevent"
)

// asEntry turns appendFields' output into what go-redis hands a consumer:
// a map of field names to string values.
func asEntry(t testing.TB, fields []any) map[string]any {
	t.Helper()
	if len(fields)%2 != 0 {
		t.Fatalf("odd number of field items: %d", len(fields))
	}
	m := make(map[string]any, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		switch v := fields[i+1].(type) {
		case string:
			m[fields[i].(string)] = v
		case []byte:
			m[fields[i].(string)] = string(v)
		default:
			t.Fatalf("field %v has a %T value", fields[i], v)
		}
	}
	return m
}

func validEntry() map[string]any {
	return map[string]any{
		FieldID: "evt-1", FieldType: "t", FieldAggregateID: "a",
		FieldCreatedAt: "2025-01-02T03:04:05.000000001Z", FieldPayload: "p",
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	with := func(change func(m map[string]any)) map[string]any {
		m := validEntry()
		change(m)
		return m
	}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string // in the error; "" for success
	}{
		{"valid", validEntry(), ""},
		{"byte values", with(func(m map[string]any) { m[FieldPayload] = []byte{0, 1}; m[FieldID] = []byte("x") }), ""},
		{"no aggregate or payload", with(func(m map[string]any) { delete(m, FieldAggregateID); delete(m, FieldPayload) }), ""},
		{"unknown field ignored", with(func(m map[string]any) { m["schema"] = "2" }), ""},
		{"time without fraction", with(func(m map[string]any) { m[FieldCreatedAt] = "2025-01-02T03:04:05Z" }), ""},
		{"time with offset", with(func(m map[string]any) { m[FieldCreatedAt] = "2025-01-02T04:04:05.5+01:00" }), ""},
		{"nil map", nil, `"id" is missing`},
		{"empty map", map[string]any{}, `"id" is missing`},
		{"missing id", with(func(m map[string]any) { delete(m, FieldID) }), `"id" is missing`},
		{"empty id", with(func(m map[string]any) { m[FieldID] = "" }), `"id" is missing or empty`},
		{"missing type", with(func(m map[string]any) { delete(m, FieldType) }), `"type" is missing`},
		{"missing created_at", with(func(m map[string]any) { delete(m, FieldCreatedAt) }), `"created_at" is missing`},
		{"bad created_at", with(func(m map[string]any) { m[FieldCreatedAt] = "yesterday" }), `"created_at" is "yesterday", not an RFC 3339 time`},
		{"unix created_at", with(func(m map[string]any) { m[FieldCreatedAt] = "1735787045" }), `not an RFC 3339 time`},
		{"long bad created_at is cut", with(func(m map[string]any) { m[FieldCreatedAt] = strings.Repeat("x", 10000) }), `not an RFC 3339 time`},
		{"non-string value", with(func(m map[string]any) { m[FieldPayload] = 42 }), `"payload" is a int`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(tc.values)
			if tc.want == "" {
				if err != nil || e == nil {
					t.Fatalf("Decode = %v, %v", e, err)
				}
				if e.CreatedAt.Location() != time.UTC {
					t.Errorf("CreatedAt in %v, want UTC", e.CreatedAt.Location())
				}
				return
			}
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode = %v, want an ErrMalformed mentioning %q", err, tc.want)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	t.Parallel()
	e, err := Decode(map[string]any{
		FieldID: "evt-1", FieldType: "stock.updated", FieldAggregateID: "sku-1",
		FieldCreatedAt: "2025-01-02T04:04:05.000000007+01:00", FieldPayload: "\x00\xff",
		"header:tenant": "acme", "header:": "empty key", "headers": "not a header",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &outbox.Event{
		ID: "evt-1", Type: "stock.updated", AggregateID: "sku-1", Payload: []byte{0, 0xff},
		Headers:   map[string]string{"tenant": "acme", "": "empty key"},
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 7, time.UTC),
	}
	if !sameEvent(e, want) {
		t.Errorf("Decode =\n %+v\nwant\n %+v", e, want)
	}
}

func TestAppendFieldsOrder(t *testing.T) {
	t.Parallel()
	e := &outbox.Event{
		ID: "i", Type: "t", AggregateID: "a", Payload: []byte("p"),
		Headers:   map[string]string{"z": "1", "a": "2", "m": "3", "b": "4", "y": "5", "c": "6", "x": "7", "d": "8", "w": "9", "e": "10"},
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -7200)),
	}
	var names []string
	fields := appendFields(nil, e)
	for i := 0; i < len(fields); i += 2 {
		names = append(names, fields[i].(string))
	}
	want := "id type aggregate_id created_at payload header:a header:b header:c header:d header:e header:m header:w header:x header:y header:z"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("field order:\n got %s\nwant %s", got, want)
	}
	if got := fields[7]; got != "2025-01-02T05:04:05.000000000Z" {
		t.Errorf("created_at = %v, want UTC with nine digits", got)
	}
	for range 20 { // map order varies between runs; the wire order must not
		again := appendFields(nil, e)
		for i := range fields {
			if s, ok := fields[i].(string); ok && again[i] != s {
				t.Fatalf("run differs at item %d: %v vs %v", i, again[i], s)
			}
		}
	}
}

// FuzzRoundTrip checks that Decode gives back every event appendFields
// encodes, whatever its bytes.
func FuzzRoundTrip(f *testing.F) {
	f.Add("evt-1", "stock.updated", "sku-1", []byte{0, 0xff, 0xc3, 0x28}, "traceparent", "00-ab-cd-01", int64(1735787045123456789))
	f.Add("x", "t", "", []byte(nil), "k", "", int64(0))
	f.Add("é", "ü", "\x00", []byte("\r\n"), "header:nested", "v", int64(-1))
	f.Fuzz(func(t *testing.T, id, typ, agg string, payload []byte, hk, hv string, nanos int64) {
		e := fuzzevent.New(t, "", id, typ, agg, payload, hk, hv, nanos)
		got, err := Decode(asEntry(t, appendFields(nil, e)))
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
	f.Add("evt-1", "t", "2025-01-02T03:04:05.000000001Z", "header:k", "v")
	f.Add("", "t", "2025-01-02T03:04:05Z", "payload", "")
	f.Add("id", "", "not a time", "header:", "")
	f.Fuzz(func(t *testing.T, id, typ, created, name, value string) {
		m := map[string]any{FieldID: id, FieldType: typ, FieldCreatedAt: created, name: value}
		e, err := Decode(m)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if e.ID == "" || e.Type == "" || e.CreatedAt.Location() != time.UTC {
			t.Fatalf("Decode accepted %v as %+v", m, e)
		}
	})
}
