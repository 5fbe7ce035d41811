package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/eventsync/outbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher is an outbox.Publisher that publishes each event as one
// JetStream message whose Nats-Msg-Id is the event ID, so that the
// stream's duplicate window drops a second copy. It is safe for
// concurrent use and never closes the connection it was given.
type Publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg config
}

var (
	_ outbox.Publisher = (*Publisher)(nil)
	_ outbox.Pinger    = (*Publisher)(nil)
)

// New returns a Publisher on nc, a connection the caller owns and closes
// (after the last Publish). The streams must exist: create them with the
// subjects the events map to (see WithSubject) and a Duplicates window
// that covers how long a relay may take to publish an event again (see
// the package documentation). New does no I/O. An invalid option is an
// error wrapping outbox.ErrInvalidConfig that names the option and its
// limit.
func New(nc *nats.Conn, opts ...Option) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("natsjs: %w: the NATS connection is nil", outbox.ErrInvalidConfig)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(cfg.ackTimeout),
		jetstream.WithPublishAsyncMaxPending(cfg.maxPending),
	)
	if err != nil {
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	return &Publisher{nc: nc, js: js, cfg: cfg}, nil
}

// JetStream returns the JetStream context the Publisher publishes with,
// for managing streams on the same connection.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Publish sends every event without waiting (PublishMsgAsync), in slice
// order on one connection, then waits for all the acknowledgements: a
// batch costs about one round trip.
//
// It returns nil when JetStream acknowledged every message, a duplicate
// dropped by the stream's duplicate window included (the event is stored
// already). Otherwise it returns an *outbox.PublishError naming exactly
// the events not acknowledged: refused by the server (no stream for the
// subject, a stream limit), not answered within the ack timeout, lost
// with the connection, or still unanswered when ctx ended. An outcome it
// cannot know counts as a failure; the relay's retry then carries the
// same Nats-Msg-Id, so the stream keeps one copy within its window.
//
// Events that cannot be sent at all (an invalid subject, a message over
// the server's max_payload, a header NATS cannot carry) fail with an
// error marked outbox.Permanent, and the later events of their aggregate
// in the batch fail with outbox.ErrHeldBack, so that none overtakes
// them. A nil or empty batch is a no-op; a nil event is an error and
// nothing is sent.
func (p *Publisher) Publish(ctx context.Context, events []*outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("natsjs: publish: event %d of %d is nil; nothing was sent", i, len(events))
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsjs: publish %d events: nothing was sent: %w", len(events), context.Cause(ctx))
	}

	var b outbox.BatchErrors
	type inflight struct {
		e   *outbox.Event
		f   jetstream.PubAckFuture
		sub string
	}
	sent := make([]inflight, 0, len(events))
	maxPayload := p.nc.MaxPayload()
	for _, e := range events {
		if b.HeldBack(e) {
			continue
		}
		subject := p.cfg.subject(e)
		if !validSubject(subject) {
			b.Fail(e, outbox.Permanent(fmt.Errorf("natsjs: event %s (type %q) maps to the invalid subject %q", e.ID, e.Type, subject)))
			continue
		}
		m, err := message(e, subject)
		if err != nil {
			b.Fail(e, outbox.Permanent(fmt.Errorf("natsjs: event %s: %w", e.ID, err)))
			continue
		}
		if maxPayload > 0 {
			if size := msgSize(m); size > maxPayload {
				b.Fail(e, outbox.Permanent(fmt.Errorf("natsjs: event %s is %d bytes as a message, over the server's max_payload of %d: %w",
					e.ID, size, maxPayload, nats.ErrMaxPayload)))
				continue
			}
		}
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			b.Fail(e, unreachable(fmt.Errorf("natsjs: publish %s to %q: %w", e.ID, subject, err)))
			continue
		}
		sent = append(sent, inflight{e: e, f: f, sub: subject})
	}

	acked := 0
	var ctxErr error
	for _, s := range sent {
		if ctxErr != nil {
			// Do not wait any longer, but take what already arrived.
			select {
			case <-s.f.Ok():
				acked++
			default:
				b.Fail(s.e, ctxErr)
			}
			continue
		}
		select {
		case <-s.f.Ok():
			acked++
		case err := <-s.f.Err():
			b.Fail(s.e, unreachable(fmt.Errorf("natsjs: publish %s to %q: %w", s.e.ID, s.sub, err)))
		case <-ctx.Done():
			ctxErr = outbox.Unavailable(fmt.Errorf("natsjs: outcome unknown, the message may still be stored: %w", context.Cause(ctx)))
			b.Fail(s.e, ctxErr)
		}
	}
	return b.Err()
}

// unreachable marks err outbox.Unavailable when it says the server or the
// stream could not be reached in time, which is not the message's fault.
func unreachable(err error) error {
	for _, t := range []error{nats.ErrTimeout, nats.ErrNoResponders, nats.ErrConnectionClosed,
		nats.ErrDisconnected, jetstream.ErrAsyncPublishTimeout, jetstream.ErrNoStreamResponse, context.DeadlineExceeded} {
		if errors.Is(err, t) {
			return outbox.Unavailable(err)
		}
	}
	return err
}

// msgSize is the size the server checks against max_payload: headers and
// data.
func msgSize(m *nats.Msg) int64 {
	n := len(m.Data) + len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}

// validSubject reports whether s can be published to: non-empty tokens
// separated by '.', no white space, no wildcard.
func validSubject(s string) bool {
	if s == "" || len(s) > 0 && (s[0] == '.' || s[len(s)-1] == '.') {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c == 0x7f || c == '*' || c == '>':
			return false
		case c == '.' && i > 0 && s[i-1] == '.':
			return false
		}
	}
	return true
}

// Ping asks JetStream for the account's information: it fails when the
// server cannot be reached or JetStream is not enabled. The relay's
// circuit breaker probes with it (outbox.Pinger).
func (p *Publisher) Ping(ctx context.Context) error {
	if _, err := p.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("natsjs: ping: %w", err)
	}
	return nil
}
