// Package wire defines, once for every broker adapter, what an event looks
// like on the wire: the names of the fields that carry its metadata (Redis
// stream fields, Kafka record headers, NATS message headers), the layout
// of its created-at time, and the checks every decoder makes. It depends
// on the standard library only; the adapters re-export the names under
// their own, broker-specific identifiers (redisstream.FieldID,
// kafka.HeaderID, natsjs.HeaderID are all ID).
package wire

import (
	"fmt"
	"slices"
	"time"
)

// The names of the fields every message carries, the same on every broker.
const (
	ID          = "id"           // the event ID; consumers drop duplicates by it
	Type        = "type"         // the event type, such as "stock.updated"
	AggregateID = "aggregate_id" // the aggregate ID, possibly empty
	CreatedAt   = "created_at"   // when the event was saved, in TimeLayout
	Payload     = "payload"      // the payload, where it is a field (Redis); elsewhere the message body
	// HeaderPrefix starts the name of each of the event's own headers:
	// "traceparent" travels as "header:traceparent". NATS, whose header
	// names cannot hold a colon, uses "header." instead (natsjs).
	HeaderPrefix = "header:"
)

// TimeLayout is the layout of the created_at value every adapter writes:
// RFC 3339 in UTC with all nine fractional digits, so that values have a
// fixed width and sort as text ("2026-01-02T03:04:05.120000000Z").
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// FormatTime returns t in UTC, formatted with TimeLayout.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime parses a created_at value and returns it in UTC. It accepts
// TimeLayout and every other RFC 3339 time, with or without a fraction and
// with any offset: the kafka adapter wrote time.RFC3339Nano before v1 (no
// trailing zeros in the fraction), and events in topics then still decode.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// AppendSortedKeys appends the keys of headers to dst in the order they
// are written: sorted, so that the same event always encodes the same.
// Pass a small array's slice as dst to encode without allocating.
func AppendSortedKeys(dst []string, headers map[string]string) []string {
	start := len(dst)
	for k := range headers {
		dst = append(dst, k)
	}
	slices.Sort(dst[start:])
	return dst
}

// Malformed returns an error wrapping sentinel (the adapter's
// ErrMalformed) that names the event, when its ID is known, and the
// problem: "kafka: malformed message: event \"x\": header \"type\" is
// missing or empty".
func Malformed(sentinel error, id, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if id != "" {
		return fmt.Errorf("%w: event %q: %s", sentinel, id, msg)
	}
	return fmt.Errorf("%w: %s", sentinel, msg)
}

// Check checks what every message must carry and returns its created-at
// time in UTC: a non-empty ID and type, and a created_at value (present
// when hasCreated) that parses. kind is what carries the fields ("field"
// or "header"), for the message. Errors are Malformed errors wrapping
// sentinel.
func Check(sentinel error, kind, id, typ, created string, hasCreated bool) (time.Time, error) {
	switch {
	case id == "":
		return time.Time{}, Malformed(sentinel, "", "%s %q is missing or empty", kind, ID)
	case typ == "":
		return time.Time{}, Malformed(sentinel, id, "%s %q is missing or empty", kind, Type)
	case !hasCreated:
		return time.Time{}, Malformed(sentinel, id, "%s %q is missing", kind, CreatedAt)
	}
	t, err := ParseTime(created)
	if err != nil {
		return time.Time{}, Malformed(sentinel, id, "%s %q is %.64q, not an RFC 3339 time", kind, CreatedAt, created)
	}
	return t, nil
}
