package redisstream

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/outbox"
)

// Field names of a stream entry. Every entry carries the five fixed fields
// in this order, then one field per event header, sorted by header key.
// Values are Redis bulk strings.
const (
	// FieldID holds the event ID; consumers drop duplicates by it.
	FieldID = "id"
	// FieldType holds the event type, such as "stock.updated".
	FieldType = "type"
	// FieldAggregateID holds the aggregate ID; it may be empty.
	FieldAggregateID = "aggregate_id"
	// FieldCreatedAt holds when the event was saved, in UTC, formatted
	// with TimeFormat.
	FieldCreatedAt = "created_at"
	// FieldPayload holds the payload bytes exactly as saved (binary-safe,
	// possibly empty).
	FieldPayload = "payload"
	// HeaderPrefix starts the field name of each header: the header
	// "traceparent" travels as the field "header:traceparent".
	HeaderPrefix = "header:"
)

// TimeFormat is the layout of FieldCreatedAt: RFC 3339 in UTC with all nine
// fractional digits, so values have a fixed width and sort as text.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// ErrMalformedEntry is wrapped by every error of Decode.
var ErrMalformedEntry = errors.New("redisstream: malformed stream entry")

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
		FieldCreatedAt, e.CreatedAt.UTC().Format(TimeFormat),
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
	keys := buf[:0]
	for k := range e.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
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
// has the payload as saved. Errors wrap ErrMalformedEntry.
func Decode(values map[string]any) (*outbox.Event, error) {
	e := &outbox.Event{}
	var haveID, haveType, haveCreated bool
	var created, encoding string
	for name, raw := range values {
		var v string
		switch raw := raw.(type) {
		case string:
			v = raw
		case []byte:
			v = string(raw)
		default:
			return nil, fmt.Errorf("%w: field %q is a %T, not a string", ErrMalformedEntry, name, raw)
		}
		switch name {
		case FieldID:
			e.ID, haveID = v, true
		case FieldType:
			e.Type, haveType = v, true
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
	switch {
	case !haveID || e.ID == "":
		return nil, fmt.Errorf("%w: field %q is missing or empty", ErrMalformedEntry, FieldID)
	case !haveType || e.Type == "":
		return nil, fmt.Errorf("%w: event %q: field %q is missing or empty", ErrMalformedEntry, e.ID, FieldType)
	case !haveCreated:
		return nil, fmt.Errorf("%w: event %q: field %q is missing", ErrMalformedEntry, e.ID, FieldCreatedAt)
	}
	t, err := time.Parse(time.RFC3339Nano, created)
	if err != nil {
		return nil, fmt.Errorf("%w: event %q: field %q is %.64q, not an RFC 3339 time", ErrMalformedEntry, e.ID, FieldCreatedAt, created)
	}
	e.CreatedAt = t.UTC()
	if encoding != "" {
		p, err := decompress(encoding, e.Payload)
		if err != nil {
			return nil, fmt.Errorf("%w: event %q: payload (%s %q): %w", ErrMalformedEntry, e.ID, FieldContentEncoding, encoding, err)
		}
		if len(p) == 0 {
			p = nil
		}
		e.Payload = p
	}
	return e, nil
}
