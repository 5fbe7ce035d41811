// Package fuzzevent builds outbox events from the inputs of the wire
// codecs' round-trip fuzz targets (redisstream, kafka, natsjs), so that
// each target feeds its encoder exactly the events Save accepts.
package fuzzevent

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventsync/outbox"
)

// New returns the event on topic that a fuzz target's inputs describe,
// with one header hk: hv and the creation time nanos after the Unix epoch
// in UTC. It skips t for inputs Save refuses: an empty ID, type or header
// key, or text that is not valid UTF-8.
func New(t *testing.T, topic, id, typ, agg string, payload []byte, hk, hv string, nanos int64) *outbox.Event {
	t.Helper()
	for _, s := range []string{id, typ, agg, hk, hv} {
		if !utf8.ValidString(s) {
			t.Skip("Save refuses text that is not valid UTF-8")
		}
	}
	if id == "" || typ == "" || hk == "" {
		t.Skip("Save refuses an empty ID, type or header key")
	}
	return &outbox.Event{
		ID: id, Topic: topic, Type: typ, AggregateID: agg, Payload: payload,
		Headers:   map[string]string{hk: hv},
		CreatedAt: time.Unix(0, nanos).UTC(),
	}
}
