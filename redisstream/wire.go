package redisstream

import (
	"errors"
	"strings"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/wire"
)

// Field names of a stream entry. Every entry carries the five fixed fields
// in this order, then one field per event header, sorted by header key.
// Values are Redis bulk strings. The names are those of the kafka and
// natsjs headers.
const (
	// FieldID, "id", holds the event ID; consumers drop duplicates by it.
	FieldID = wire.ID
	// FieldType, "type", holds the event type, such as "stock.updated".
	FieldType = wire.Type
	// FieldAggregateID, "aggregate_id", holds the aggregate ID; it may be
	// empty.
	FieldAggregateID = wire.AggregateID
	// FieldCreatedAt, "created_at", holds when the event was saved: RFC
	// 3339 in UTC with all nine fractional digits
	// ("2026-01-02T03:04:05.120000000Z"), so values have a fixed width and
	// sort as text.
	FieldCreatedAt = wire.CreatedAt
	// FieldPayload, "payload", holds the payload bytes exactly as saved
	// (binary-safe, possibly empty).
	FieldPayload = wire.Payload
	// HeaderPrefix, "header:", starts the field name of each header: the
	// header "traceparent" travels as the field "header:traceparent".
	HeaderPrefix = wire.HeaderPrefix
)

// ErrMalformed is wrapped by every error of Decode.
var ErrMalformed = errors.New("redisstream: malformed message")

// fixedFields is how many field names and values every entry starts with.
const fixedFields = 10

// appendFields appends e's fields, name then value, in wire order. The
// payload is passed as []byte so it is written to Redis byte for byte.
func appendFields(dst []any, e *outbox.Event) []any { return appendEntry(dst, e, e.Payload, "") }

// appendEntry is appendFields with the payload field's bytes given, and
// the FieldContentEncoding field after it when encoding is not empty.
func appendEntry(dst []any, e *outbox.Event, payload []byte, encoding string) []any {
	dst = append(dst,
		FieldID, e.ID,
		FieldType, e.Type,
		FieldAggregateID, e.AggregateID,
		FieldCreatedAt, wire.FormatTime(e.CreatedAt),
		FieldPayload, payload,
	)
	if encoding != "" {
		dst = append(dst, FieldContentEncoding, encoding)
	}
	switch len(e.Headers) {
	case 0:
		return dst
	case 1:
		for k, v := range e.Headers {
			dst = append(dst, HeaderPrefix+k, v)
		}
		return dst
	}
	var buf [8]string
	for _, k := range wire.AppendSortedKeys(buf[:0], e.Headers) {
		dst = append(dst, HeaderPrefix+k, e.Headers[k])
	}
	return dst
}

// Decode turns the fields of a stream entry written by a Publisher (the
// Values of a redis.XMessage) back into an event. Values may be strings or
// byte slices. The id, type and created_at fields are required; a missing
// aggregate_id decodes as "", a missing or empty payload as nil, and fields Decode does not
// know are ignored, so entries written by a later version still decode.
// Topic and Delivery are not part of an entry and are left zero: the
// consumer knows the stream it read from. A payload marked with
// FieldContentEncoding (see WithCompression) is decompressed, so the event
// has the payload as saved. Errors wrap ErrMalformed.
func Decode(values map[string]any) (*outbox.Event, error) {
	e := &outbox.Event{}
	var haveCreated bool
	var created, encoding string
	for name, raw := range values {
		var v string
		switch raw := raw.(type) {
		case string:
			v = raw
		case []byte:
			v = string(raw)
		default:
			return nil, wire.Malformed(ErrMalformed, "", "field %q is a %T, not a string", name, raw)
		}
		switch name {
		case FieldID:
			e.ID = v
		case FieldType:
			e.Type = v
		case FieldAggregateID:
			e.AggregateID = v
		case FieldCreatedAt:
			created, haveCreated = v, true
		case FieldPayload:
			if v != "" {
				e.Payload = []byte(v)
			}
		case FieldContentEncoding:
			encoding = v
		default:
			if k, ok := strings.CutPrefix(name, HeaderPrefix); ok {
				if e.Headers == nil {
					e.Headers = make(map[string]string)
				}
				e.Headers[k] = v
			}
		}
	}
	t, err := wire.Check(ErrMalformed, "field", e.ID, e.Type, created, haveCreated)
	if err != nil {
		return nil, err
	}
	e.CreatedAt = t
	if encoding != "" {
		p, err := decompress(encoding, e.Payload)
		if err != nil {
			return nil, wire.Malformed(ErrMalformed, e.ID, "payload (%s %q): %v", FieldContentEncoding, encoding, err)
		}
		if len(p) == 0 {
			p = nil
		}
		e.Payload = p
	}
	return e, nil
}
