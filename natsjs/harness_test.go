package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/eventsync/outbox"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// envNATS names the variable that points the tests at a NATS server with
// JetStream.
const envNATS = "OUTBOX_TEST_NATS"

// harness is one test's connection and its own stream.
type harness struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string // the stream's name
	subject string // the subject prefix the stream captures: subject + ".>"
}

// newHarness connects to OUTBOX_TEST_NATS and creates a stream of this
// test alone, capturing "<subject>.>", deleted when the test ends. It
// skips when the variable is unset and fails when the server cannot be
// reached.
func newHarness(t testing.TB, window time.Duration) *harness {
	t.Helper()
	url := os.Getenv(envNATS)
	if url == "" {
		t.Skipf("NATS tests are off: set %s=nats://127.0.0.1:4222 (a server with JetStream) to run them", envNATS)
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("%s is set but NATS cannot be reached: %v", envNATS, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := randomHex(t)
	h := &harness{nc: nc, js: js, stream: "OUTBOX_TEST_" + id, subject: "outboxtest." + id}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: h.stream, Subjects: []string{h.subject + ".>"}, Duplicates: window, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatalf("create stream %s: %v", h.stream, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, h.stream); err != nil {
			t.Errorf("delete stream %s: %v", h.stream, err)
		}
	})
	return h
}

// messages returns every message of the harness's stream, in order.
func (h *harness) messages(t testing.TB) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, h.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// ids returns the id header of every message of the stream, in order.
func (h *harness) ids(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, m := range h.messages(t) {
		out = append(out, m.Header.Get(HeaderID))
	}
	return out
}

func (h *harness) publisher(t testing.TB, opts ...Option) *Publisher {
	t.Helper()
	p, err := New(h.nc, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func randomHex(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func event(topic, aggregate, payload string) *outbox.Event {
	return &outbox.Event{
		ID: outbox.NewID(), Topic: topic, Type: "stock.updated", AggregateID: aggregate,
		Payload: []byte(payload), CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
}

func failedOf(t testing.TB, err error) map[string]error {
	t.Helper()
	if err == nil {
		return nil
	}
	pe, ok := err.(*outbox.PublishError)
	if !ok {
		t.Fatalf("Publish error is %T (%v), want *outbox.PublishError", err, err)
	}
	return pe.Failed
}

// connectAgain opens a second connection to the harness's server, closed
// when the test ends.
func connectAgain(h *harness) (*nats.Conn, error) {
	return nats.Connect(h.nc.ConnectedUrl(), nats.MaxReconnects(0))
}
