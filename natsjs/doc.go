// Package natsjs is an outbox.Publisher that delivers events to NATS
// JetStream through nats.go.
//
// # Usage
//
// Hand New the *nats.Conn your service already has; the publisher never
// closes it. Create the stream first, with a duplicate window:
//
//	nc, err := nats.Connect("nats://localhost:4222")
//	defer nc.Close()
//	pub, err := natsjs.New(nc)
//	_, err = pub.JetStream().CreateStream(ctx, jetstream.StreamConfig{
//		Name:       "INVENTORY",
//		Subjects:   []string{"inventory.>"},
//		Duplicates: 10 * time.Minute,
//	})
//	ob, err := outbox.New(store, pub)
//
// Each event becomes one message on the subject named by its Topic (see
// WithSubject and SubjectByAggregate for one subject per aggregate). A
// batch is published asynchronously, in slice order on one connection,
// and Publish then waits for every acknowledgement: about one round trip
// per batch.
//
// # Wire format
//
// The message data is the payload, unchanged. The headers:
//
//	header              value
//	------------------  ---------------------------------------------------
//	Nats-Msg-Id         the event ID: JetStream's deduplication key
//	id                  the event ID
//	type                the event type, such as "stock.updated"
//	aggregate_id        the aggregate ID (may be empty)
//	created_at          when the event was saved: RFC 3339, UTC, nine
//	                    fractional digits ("2025-01-02T03:04:05.123456789Z")
//	header.<key>        one per event header (HeaderName encodes the key)
//
// The names are those of the redisstream fields and kafka headers, except
// that event headers are "header.<key>", not "header:<key>": a NATS header
// name cannot hold a colon. NATS trims white space around a header value
// and turns line breaks into spaces, so an event whose ID, type, aggregate
// ID or header value has either is not sent: it fails permanently (the
// relay buries it) instead of arriving changed. Go consumers turn a
// message back into an event with Decode or DecodeMsg.
//
// # Duplicates
//
// Every message carries the event ID as Nats-Msg-Id. JetStream stores the
// first message with a given ID and, within the stream's Duplicates window
// (two minutes unless configured), acknowledges any later one as a
// duplicate without storing it; Publish counts that acknowledgement as
// success. So a relay that crashes between JetStream's ack and the mark in
// the database, or a publish whose outcome was unknown, adds no second
// copy to the stream as long as the retry comes within the window. Set the
// window longer than the relay's lease (outbox.WithLease) plus its
// longest backoff (outbox.WithBackoff) if you want the guarantee to hold
// through outages; past the window a retry stores a second copy with the
// same id, and consumers fall back on their own deduplication (package
// inbox).
//
// # Errors
//
// A message the server refuses (no stream for the subject, a stream
// limit), one not acknowledged within WithAckTimeout, and one in flight
// when the connection drops or ctx ends fail alone, reported in an
// *outbox.PublishError; the others of the batch count as delivered. No
// server reply is marked permanent: an operator can create the stream or
// raise the limit, and a retry then succeeds. An event that fails before
// it is sent holds back the later events of its aggregate in the batch
// (outbox.ErrHeldBack). One that fails after it was sent cannot hold back
// the later ones already sent; they fail too when the cause is the
// stream or the connection, which is the usual case, as an aggregate's
// events share one subject and so one stream.
package natsjs
