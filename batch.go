package outbox

import (
	"fmt"
	"maps"
)

// BatchErrors keeps a Publisher's batch in per-aggregate order: it collects
// the failures of a batch, holds back the events that come after a failed
// event of their aggregate, and builds the error Publish returns. The
// redisstream, kafka and natsjs publishers use it; a publisher of your own
// gets the order part of the Publisher contract right by using it too.
//
// Use one BatchErrors per Publish call. Go through the batch in slice
// order and, before you send an event, ask HeldBack; skip the event if it
// says so. Report each event that fails, before or after it was sent, with
// Fail. When the batch is done, return Err:
//
//	var b outbox.BatchErrors
//	for _, e := range events {
//		if b.HeldBack(e) {
//			continue // an earlier event of its aggregate failed
//		}
//		if err := send(ctx, e); err != nil {
//			b.Fail(e, err)
//		}
//	}
//	return b.Err()
//
// A publisher that sends the whole batch before it learns of any failure
// (one pipelined round trip) asks HeldBack while it prepares the batch:
// an event it cannot even send then holds back the later events of its
// aggregate. A failure reported after all of them were sent holds back
// nothing, because nothing is left to send.
//
// Events with an empty AggregateID have no order to keep: they are never
// held back and hold back nothing.
//
// When the whole batch failed in a way that leaves no event acknowledged
// and none individually to blame (the connection was refused, the outcome
// of the round trip is unknown), return a plain error instead of Err: it
// stands for every event of the batch.
//
// The zero value is ready to use. A BatchErrors is not safe for concurrent
// use.
type BatchErrors struct {
	failed map[string]error  // event ID -> why it was not acknowledged
	first  map[string]string // aggregate ID -> ID of its first failed event
	held   map[string]error  // aggregate ID -> the error of its held-back events
}

// Fail records that the broker did not acknowledge e, because of err. Mark
// err with Permanent when no retry can fix it, and with Unavailable when
// the broker or the connection caused it rather than the event; Err
// reports it unchanged. The first event of an aggregate that fails holds
// back the later events of that aggregate (see HeldBack). A second Fail of
// the same event replaces its error. A nil err is recorded as a failure
// all the same, never as an acknowledgement.
func (b *BatchErrors) Fail(e *Event, err error) {
	if err == nil {
		err = fmt.Errorf("outbox: event %s failed with a nil error", e.ID)
	}
	if b.failed == nil {
		b.failed = make(map[string]error)
	}
	b.failed[e.ID] = err
	if e.AggregateID == "" {
		return
	}
	if _, ok := b.first[e.AggregateID]; ok {
		return
	}
	if b.first == nil {
		b.first = make(map[string]string)
	}
	b.first[e.AggregateID] = e.ID
}

// HeldBack reports whether e must not be sent because an earlier event of
// its aggregate failed (Fail). If so it also records e as failed with an
// error that wraps ErrHeldBack and names that earlier event, so that the
// relay gives e back without counting an attempt; the caller only skips
// it. An event with an empty AggregateID is never held back, and neither
// is the failed event itself.
func (b *BatchErrors) HeldBack(e *Event) bool {
	if e.AggregateID == "" {
		return false
	}
	first, ok := b.first[e.AggregateID]
	if !ok || first == e.ID {
		return false
	}
	err, ok := b.held[e.AggregateID]
	if !ok {
		err = fmt.Errorf("%w (event %s of aggregate %q failed first)", ErrHeldBack, first, e.AggregateID)
		if b.held == nil {
			b.held = make(map[string]error)
		}
		b.held[e.AggregateID] = err
	}
	b.failed[e.ID] = err
	return true
}

// Err returns what Publish returns for the batch: nil when no event failed
// or was held back, otherwise a *PublishError whose Failed names each of
// them with its error. Every other event of the batch counts as
// acknowledged, so report all failures before calling Err. The
// PublishError is a copy: later calls of Fail do not change it.
func (b *BatchErrors) Err() error {
	if len(b.failed) == 0 {
		return nil
	}
	return &PublishError{Failed: maps.Clone(b.failed)}
}
