package natsjs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names of a message. The first four are those of the redisstream
// fields and the kafka headers; the data is the payload.
const (
	HeaderID          = wire.ID          // "id": the event ID; also sent as Nats-Msg-Id
	HeaderType        = wire.Type        // "type": the event type, such as "stock.updated"
	HeaderAggregateID = wire.AggregateID // "aggregate_id": the aggregate ID, possibly empty
	HeaderCreatedAt   = wire.CreatedAt   // "created_at": when the event was saved: RFC 3339 in UTC with all nine fractional digits
	// HeaderPrefix starts the name of each of the event's own headers. It
	// is "header." where the other adapters use "header:", because a NATS
	// header name cannot hold a colon.
	HeaderPrefix = "header."
	// HeaderMsgID is JetStream's deduplication header; it carries the
	// event ID.
	HeaderMsgID = jetstream.MsgIDHeader
)

// ErrMalformed is wrapped by every error of Decode.
var ErrMalformed = errors.New("natsjs: malformed message")

// errUnsendable is wrapped by the permanent error of an event that NATS
// headers cannot carry.
var errUnsendable = errors.New("cannot be carried by NATS headers")

// HeaderName returns the NATS header name that carries the event header
// key: HeaderPrefix and the key, with each byte a NATS header name cannot
// hold (control, space, non-ASCII and "()/,:;<=>?@[\]{}, and '%' itself)
// percent-encoded: "traceparent" travels as "header.traceparent", "a:b"
// as "header.a%3Ab".
func HeaderName(key string) string {
	var b strings.Builder
	b.Grow(len(HeaderPrefix) + len(key))
	b.WriteString(HeaderPrefix)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c <= ' ' || c >= 0x7f || c == '%' || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// message builds the NATS message of e on subject.
func message(e *outbox.Event, subject string) (*nats.Msg, error) {
	h := make(nats.Header, 5+len(e.Headers))
	h[HeaderMsgID] = []string{e.ID}
	h[HeaderID] = []string{e.ID}
	h[HeaderType] = []string{e.Type}
	h[HeaderAggregateID] = []string{e.AggregateID}
	h[HeaderCreatedAt] = []string{wire.FormatTime(e.CreatedAt)}
	for k, v := range e.Headers {
		if !headerValueOK(v) {
			return nil, fmt.Errorf("header %q: its value has a line break or leading or trailing white space, which %w", k, errUnsendable)
		}
		h[HeaderName(k)] = []string{v}
	}
	for _, f := range [...]struct{ name, v string }{{"ID", e.ID}, {"Type", e.Type}, {"AggregateID", e.AggregateID}} {
		if !headerValueOK(f.v) {
			return nil, fmt.Errorf("%s: the value has a line break or leading or trailing white space, which %w", f.name, errUnsendable)
		}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: e.Payload}, nil
}

// headerValueOK reports whether NATS carries v unchanged: the client
// trims white space around a value and turns line breaks into spaces.
func headerValueOK(v string) bool {
	if strings.ContainsAny(v, "\r\n") {
		return false
	}
	return v == strings.TrimSpace(v)
}

// DecodeMsg turns a message a Publisher wrote back into an event; see
// Decode.
func DecodeMsg(m *nats.Msg) (*outbox.Event, error) {
	if m == nil {
		return nil, wire.Malformed(ErrMalformed, "", "nil message")
	}
	return Decode(m.Subject, m.Header, m.Data)
}

// Decode turns the subject, headers and data of a message a Publisher
// wrote (from a *nats.Msg or a jetstream.Msg) back into an event. The
// subject becomes the Topic (with SubjectByAggregate, the topic plus the
// aggregate token). The id, type and created_at headers are required;
// headers it does not know are ignored. Errors wrap ErrMalformed.
func Decode(subject string, h nats.Header, data []byte) (*outbox.Event, error) {
	e := &outbox.Event{Topic: subject}
	if len(data) > 0 {
		e.Payload = data
	}
	e.ID = h.Get(HeaderID)
	e.Type = h.Get(HeaderType)
	e.AggregateID = h.Get(HeaderAggregateID)
	created := h.Get(HeaderCreatedAt)
	t, err := wire.Check(ErrMalformed, "header", e.ID, e.Type, created, created != "")
	if err != nil {
		return nil, err
	}
	e.CreatedAt = t
	for name, vs := range h {
		rest, ok := strings.CutPrefix(name, HeaderPrefix)
		if !ok || len(vs) == 0 {
			continue
		}
		key, err := unescape(rest)
		if err != nil || key == "" {
			return nil, wire.Malformed(ErrMalformed, e.ID, "header name %q is not a valid encoded key", name)
		}
		if e.Headers == nil {
			e.Headers = make(map[string]string)
		}
		e.Headers[key] = vs[0]
	}
	return e, nil
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("short escape")
		}
		c, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", err
		}
		b.WriteByte(byte(c))
		i += 2
	}
	return b.String(), nil
}
