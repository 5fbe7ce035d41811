package outbox

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits on the identifying fields of an event. They match the column
// sizes of the sqlstore schema, so an over-long value is refused by Save
// with a clear error instead of by the database.
const (
	MaxIDLength   = 64  // bytes in Event.ID
	MaxNameLength = 255 // bytes in Event.Topic, Event.Type and Event.AggregateID

	MinPriority = -32768 // lowest Event.Priority
	MaxPriority = 32767  // highest Event.Priority
)

// Event is one message to deliver. Service code fills Topic, Type,
// AggregateID, Payload and optionally Headers; Save fills ID (a UUIDv7)
// and CreatedAt when they are empty, and keeps them when the caller set
// them.
type Event struct {
	// ID identifies the event end to end; consumers drop duplicates by it.
	ID string
	// Topic names the destination: a Redis stream key, a Kafka topic.
	Topic string
	// Type is the event's kind, such as "stock.updated".
	Type string
	// AggregateID is the entity the event is about. Events with the same
	// aggregate ID are delivered in the order they were saved.
	AggregateID string
	// Payload is delivered as is; the outbox never parses it.
	Payload []byte
	// Headers travel with the event (Redis fields, Kafka headers).
	Headers map[string]string
	// CreatedAt is when the event was saved, in UTC, to the microsecond.
	CreatedAt time.Time
	// Priority orders claims: due events of higher priority are claimed
	// first (per-aggregate order still holds). Between MinPriority and
	// MaxPriority; defaults to 0.
	Priority int

	// Delivery is filled by a Store when it reads an event back; Save
	// ignores it.
	Delivery Delivery
}

// Delivery is the state of an event on its way to the broker.
type Delivery struct {
	Attempts      int       // failed publish attempts so far
	LastError     string    // the error of the last failed attempt
	NextAttemptAt time.Time // when the relay may try again
	SyncedAt      time.Time // when the broker acknowledged it; zero while pending
	DeadAt        time.Time // when it was buried; zero unless dead
}

// Status is where an event stands.
type Status string

// The statuses of an event.
const (
	StatusPending Status = "pending" // committed, not yet acknowledged by the broker
	StatusSynced  Status = "synced"  // acknowledged by the broker
	StatusDead    Status = "dead"    // buried after too many or a permanent failure
)

// Status reports the delivery status.
func (d Delivery) Status() Status {
	switch {
	case !d.SyncedAt.IsZero():
		return StatusSynced
	case !d.DeadAt.IsZero():
		return StatusDead
	default:
		return StatusPending
	}
}

// prepare validates the events of one Save call and fills their ID and
// CreatedAt. It changes nothing unless every event is valid.
func prepare(events []*Event, maxPayload int, now time.Time) error {
	for i, e := range events {
		if err := validate(i, e, maxPayload); err != nil {
			return err
		}
	}
	for _, e := range events {
		if e.ID == "" {
			e.ID = NewID()
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = now
		}
		// Microseconds: what every supported database keeps, so the time
		// published at once equals the time the relay would publish.
		e.CreatedAt = e.CreatedAt.UTC().Truncate(time.Microsecond)
	}
	return nil
}

func validate(i int, e *Event, maxPayload int) error {
	if e == nil {
		return &ValidationError{Index: i, Field: "event", Reason: "is nil"}
	}
	bad := func(field, format string, args ...any) error {
		return &ValidationError{Index: i, ID: e.ID, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if len(e.ID) > MaxIDLength {
		return bad("ID", "is %d bytes, longer than %d", len(e.ID), MaxIDLength)
	}
	if e.Topic == "" {
		return bad("Topic", "is required")
	}
	if e.Type == "" {
		return bad("Type", "is required")
	}
	for _, f := range [...]struct{ name, value string }{
		{"ID", e.ID}, {"Topic", e.Topic}, {"Type", e.Type}, {"AggregateID", e.AggregateID},
	} {
		if f.name != "ID" && len(f.value) > MaxNameLength {
			return bad(f.name, "is %d bytes, longer than %d", len(f.value), MaxNameLength)
		}
		if !utf8.ValidString(f.value) {
			return bad(f.name, "is not valid UTF-8")
		}
	}
	if e.Priority < MinPriority || e.Priority > MaxPriority {
		return bad("Priority", "%d is outside %d..%d", e.Priority, MinPriority, MaxPriority)
	}
	if len(e.Payload) > maxPayload {
		return bad("Payload", "is %d bytes, over the limit of %d (see WithMaxPayloadBytes)", len(e.Payload), maxPayload)
	}
	for k, v := range e.Headers {
		if k == "" {
			return bad("Headers", "has an empty key")
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad("Headers", "key %q has text that is not valid UTF-8", k)
		}
	}
	return nil
}

var idGen struct {
	sync.Mutex
	lastMS  int64
	counter uint16
}

// NewID returns a new UUIDv7 (RFC 9562) as a 36-character string. IDs made
// by one process sort in the order they were made: the 12 bits after the
// millisecond timestamp count up within a millisecond.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("outbox: crypto/rand failed: " + err.Error())
	}
	idGen.Lock()
	ms := time.Now().UnixMilli()
	if ms <= idGen.lastMS {
		ms = idGen.lastMS
		idGen.counter++
		if idGen.counter > 0x0fff { // counter exhausted: borrow the next millisecond
			ms++
			idGen.counter = 0
		}
	} else {
		idGen.counter = binary.BigEndian.Uint16(b[6:8]) & 0x07ff // random start, room to count
	}
	idGen.lastMS = ms
	counter := idGen.counter
	idGen.Unlock()

	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(ms))
	copy(b[0:6], t[2:8])
	b[6] = 0x70 | byte(counter>>8)&0x0f
	b[7] = byte(counter)
	b[8] = 0x80 | b[8]&0x3f

	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}
