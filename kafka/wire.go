package kafka

import (
	"strings"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/wire"
)

// The record header names, the same as the field names of the redisstream
// adapter. The record key is the aggregate ID and the value is the payload.
const (
	HeaderID          = wire.ID           // "id": the event ID (a UUIDv7 unless the service set its own)
	HeaderType        = wire.Type         // "type": the event type, such as "stock.updated"
	HeaderAggregateID = wire.AggregateID  // "aggregate_id": the aggregate ID, also the record key
	HeaderCreatedAt   = wire.CreatedAt    // "created_at": when the event was saved: RFC 3339 in UTC with all nine fractional digits
	HeaderPrefix      = wire.HeaderPrefix // "header:": prefix of each of the event's own headers: "header:<key>"
)

// Header is one Kafka record header, independent of the client library,
// for DecodeRecord.
type Header struct {
	Key   string // the header's name
	Value []byte // its value, as the record carries it
}

// message builds the record for e on topic. The key is the aggregate ID,
// or nil when it is empty (such events have no order to keep and spread
// over the partitions).
func message(e *outbox.Event, topic string) *sarama.ProducerMessage {
	hs := make([]sarama.RecordHeader, 0, 4+len(e.Headers))
	hs = append(hs,
		sarama.RecordHeader{Key: []byte(HeaderID), Value: []byte(e.ID)},
		sarama.RecordHeader{Key: []byte(HeaderType), Value: []byte(e.Type)},
		sarama.RecordHeader{Key: []byte(HeaderAggregateID), Value: []byte(e.AggregateID)},
		sarama.RecordHeader{Key: []byte(HeaderCreatedAt), Value: []byte(wire.FormatTime(e.CreatedAt))},
	)
	for _, k := range wire.AppendSortedKeys(nil, e.Headers) {
		hs = append(hs, sarama.RecordHeader{Key: []byte(HeaderPrefix + k), Value: []byte(e.Headers[k])})
	}
	m := &sarama.ProducerMessage{Topic: topic, Headers: hs}
	if e.AggregateID != "" {
		m.Key = sarama.StringEncoder(e.AggregateID)
	}
	if e.Payload != nil {
		m.Value = sarama.ByteEncoder(e.Payload)
	}
	return m
}

// Decode turns a record this package published back into an event: the
// topic, the key, the value as the payload and the headers. Headers it does
// not know (added by other tools) are ignored. A record that lacks the id,
// type or created_at header, repeats one, has a malformed created_at or an
// aggregate_id header that disagrees with the key, is an error wrapping
// ErrMalformed. created_at may be any RFC 3339 time: records written
// before v1, whose created_at has no trailing zeros in its fraction, still
// decode.
func Decode(msg *sarama.ConsumerMessage) (*outbox.Event, error) {
	if msg == nil {
		return nil, wire.Malformed(ErrMalformed, "", "nil message")
	}
	hs := make([]Header, 0, len(msg.Headers))
	for _, h := range msg.Headers {
		if h == nil {
			continue
		}
		hs = append(hs, Header{Key: string(h.Key), Value: h.Value})
	}
	return DecodeRecord(msg.Topic, msg.Key, msg.Value, hs)
}

// DecodeRecord is Decode for any Kafka client: pass the record's topic,
// key, value and headers.
func DecodeRecord(topic string, key, value []byte, headers []Header) (*outbox.Event, error) {
	e := &outbox.Event{Topic: topic, Payload: value}
	seen := make(map[string]bool, len(headers))
	var hasAgg bool
	var created string
	for _, h := range headers {
		if seen[h.Key] {
			return nil, malformed(e, "header %q appears more than once", h.Key)
		}
		seen[h.Key] = true
		switch {
		case h.Key == HeaderID:
			e.ID = string(h.Value)
		case h.Key == HeaderType:
			e.Type = string(h.Value)
		case h.Key == HeaderAggregateID:
			e.AggregateID, hasAgg = string(h.Value), true
		case h.Key == HeaderCreatedAt:
			created = string(h.Value)
		case strings.HasPrefix(h.Key, HeaderPrefix):
			k := h.Key[len(HeaderPrefix):]
			if k == "" {
				return nil, malformed(e, "header %q has an empty event header name", h.Key)
			}
			if !utf8.Valid(h.Value) {
				return nil, malformed(e, "header %q is not valid UTF-8", h.Key)
			}
			if e.Headers == nil {
				e.Headers = make(map[string]string)
			}
			e.Headers[k] = string(h.Value)
		}
	}
	t, err := wire.Check(ErrMalformed, "header", e.ID, e.Type, created, seen[HeaderCreatedAt])
	if err != nil {
		return nil, err
	}
	e.CreatedAt = t
	if !hasAgg {
		e.AggregateID = string(key)
	} else if string(key) != e.AggregateID {
		return nil, malformed(e, "key %q differs from header %q (%q)", key, HeaderAggregateID, e.AggregateID)
	}
	return e, nil
}

func malformed(e *outbox.Event, format string, args ...any) error {
	return wire.Malformed(ErrMalformed, e.ID, format, args...)
}
