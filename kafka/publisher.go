package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

// Publisher is an outbox.Publisher that writes each event as one Kafka
// record through a sarama SyncProducer. It is safe for concurrent use.
type Publisher struct {
	opts     options
	maxBytes int
	// autoCreate is the producer's Metadata.AllowAutoTopicCreation: when
	// set, an unknown topic is a transient failure (see classify).
	autoCreate bool
	connect    func() (sarama.SyncProducer, func() error, error)
	topicErrs  topicErrors // what opened sarama's breaker of each topic

	mu       sync.Mutex
	producer sarama.SyncProducer
	release  func() error // closes what the publisher opened; nil if nothing
	attempt  *connectAttempt
	closed   bool
	wg       sync.WaitGroup // Publish calls, sends and connects in progress
}

type connectAttempt struct {
	done chan struct{}
	err  error
}

var _ outbox.Publisher = (*Publisher)(nil)

// New returns a Publisher that opens its own sarama client and producer to
// brokers with cfg, and closes both in Close. A nil cfg means NewConfig().
// A cfg of your own (TLS, SASL, version, compression) must have
// Producer.Return.Successes and Producer.Return.Errors set, must not use
// RequiredAcks NoResponse and must pass sarama's validation; otherwise New
// returns an error wrapping outbox.ErrInvalidConfig that names the field.
// New does not change cfg. Unless WithLazyConnect is given, New connects
// at once and returns the error if the cluster cannot be reached.
//
// cfg.Metadata.AllowAutoTopicCreation also decides how an event to a topic
// that does not exist fails: permanently when it is false (nothing will
// create the topic, so the relay buries the event at once), transiently
// when it is true, sarama's default (the topic may be appearing, so the
// relay retries and buries the event only after its maximum number of
// attempts).
func New(brokers []string, cfg *sarama.Config, opts ...Option) (*Publisher, error) {
	if len(brokers) == 0 {
		return nil, invalid("no broker addresses")
	}
	if cfg == nil {
		cfg = NewConfig()
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	brokers = append([]string(nil), brokers...)
	return newPublisher(opts, cfg.Producer.MaxMessageBytes, cfg.Metadata.AllowAutoTopicCreation, func() (sarama.SyncProducer, func() error, error) {
		client, err := sarama.NewClient(brokers, cfg)
		if err != nil {
			return nil, nil, err
		}
		prod, err := sarama.NewSyncProducerFromClient(client)
		if err != nil {
			return nil, nil, errors.Join(err, client.Close())
		}
		return prod, func() error { return errors.Join(prod.Close(), client.Close()) }, nil
	})
}

// NewFromClient returns a Publisher that makes its producer on client. The
// client's config is checked, and its Metadata.AllowAutoTopicCreation
// decides how an unknown topic fails, as in New. Close closes the producer
// it made and leaves client open: the caller closes it, after the
// Publisher.
func NewFromClient(client sarama.Client, opts ...Option) (*Publisher, error) {
	if client == nil {
		return nil, invalid("the client is nil")
	}
	cfg := client.Config()
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	return newPublisher(opts, cfg.Producer.MaxMessageBytes, cfg.Metadata.AllowAutoTopicCreation, func() (sarama.SyncProducer, func() error, error) {
		prod, err := sarama.NewSyncProducerFromClient(client)
		if err != nil {
			return nil, nil, err
		}
		return prod, prod.Close, nil
	})
}

// NewFromProducer returns a Publisher that sends through producer. Close
// leaves producer open: the caller closes it, after the Publisher. The
// publisher cannot see the producer's config, so give WithMaxMessageBytes
// if its Producer.MaxMessageBytes is not DefaultMaxMessageBytes. It takes
// Metadata.AllowAutoTopicCreation to be sarama's default, true: an event to
// a topic that does not exist fails transiently and is buried only after
// the relay's maximum number of attempts.
func NewFromProducer(producer sarama.SyncProducer, opts ...Option) (*Publisher, error) {
	if producer == nil {
		return nil, invalid("the producer is nil")
	}
	p, err := newPublisher(append([]Option{WithLazyConnect()}, opts...), 0, true, nil)
	if err != nil {
		return nil, err
	}
	p.producer = producer
	return p, nil
}

// newPublisher checks opts and connects unless lazy. maxBytes is the
// producer's Producer.MaxMessageBytes, or 0 when it is not known.
func newPublisher(opts []Option, maxBytes int, autoCreate bool, connect func() (sarama.SyncProducer, func() error, error)) (*Publisher, error) {
	o, err := newOptions(opts, maxBytes)
	if err != nil {
		return nil, err
	}
	if maxBytes == 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	p := &Publisher{opts: o, maxBytes: maxBytes, autoCreate: autoCreate, connect: connect}
	if p.opts.maxMessageBytes > 0 {
		p.maxBytes = p.opts.maxMessageBytes
	}
	if !p.opts.lazy {
		prod, release, err := connect()
		if err != nil {
			return nil, fmt.Errorf("kafka: connect: %w", err)
		}
		p.producer, p.release = prod, release
	}
	return p, nil
}

// Publish sends events in as few SendMessages calls as per-aggregate order
// allows (one per event of the batch's busiest aggregate; see rounds) and
// returns nil when Kafka acknowledged every one. Otherwise it returns an
// *outbox.PublishError naming each event that was not acknowledged, with
// the reason, marked outbox.Permanent where retrying cannot help (see the
// package documentation), or, when nothing could be sent at all (closed,
// not connected, ctx already ended), a plain error.
//
// Each record's key is the event's aggregate ID. An event that fails,
// before it is sent (too large, no topic) or in Kafka, holds back the later
// events of its aggregate in the batch, which fail with outbox.ErrHeldBack
// unsent, so that they never overtake it.
//
// If ctx ends while the batch is in flight, Publish returns at once and
// reports every sent event as failed: the outcome is unknown and the
// records may still be written (a relay's retry then makes a duplicate
// with the same event ID, never a loss).
func (p *Publisher) Publish(ctx context.Context, events []*outbox.Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafka: publish: %w", context.Cause(ctx))
	}
	prod, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer p.wg.Done()

	var b outbox.BatchErrors
	for _, round := range rounds(events) {
		if err := ctx.Err(); err != nil {
			cause := outbox.Unavailable(fmt.Errorf("kafka: not sent: %w", context.Cause(ctx)))
			for _, e := range round {
				b.Fail(e, cause)
			}
			continue
		}
		msgs := make([]*sarama.ProducerMessage, 0, len(round))
		sent := make([]*outbox.Event, 0, len(round))
		for _, e := range round {
			if b.HeldBack(e) {
				continue
			}
			topic := p.opts.topic(e)
			if topic == "" {
				b.Fail(e, outbox.Permanent(fmt.Errorf("kafka: event %s has no topic", e.ID)))
				continue
			}
			m := message(e, topic)
			if size := m.ByteSize(2); size > p.maxBytes {
				b.Fail(e, outbox.Permanent(fmt.Errorf("kafka: event %s is %d bytes as a record, over the limit of %d (Producer.MaxMessageBytes): %w",
					e.ID, size, p.maxBytes, sarama.ErrMessageSizeTooLarge)))
				continue
			}
			m.Metadata = len(sent)
			sent = append(sent, e)
			msgs = append(msgs, m)
		}
		if len(msgs) > 0 {
			p.send(ctx, prod, msgs, sent, &b)
		}
	}
	return b.Err()
}

// rounds splits a batch so that no SendMessages call carries two events
// of one aggregate: round k holds the k-th event of each aggregate, in
// batch order (events without an aggregate all go in the first round).
// sarama can fail a record outright (its circuit breaker, a lost
// connection) while later records of the same partition in the same call
// are still written; one event per aggregate per call, and holding back
// an aggregate after its first failure, keeps every aggregate in order.
// A batch costs as many round trips as its busiest aggregate has events.
func rounds(events []*outbox.Event) [][]*outbox.Event {
	var out [][]*outbox.Event
	seen := make(map[string]int)
	for _, e := range events {
		if e == nil {
			continue
		}
		r := 0
		if e.AggregateID != "" {
			r = seen[e.AggregateID]
			seen[e.AggregateID] = r + 1
		}
		if r == len(out) {
			out = append(out, make([]*outbox.Event, 0, len(events)/(r+1)))
		}
		out[r] = append(out[r], e)
	}
	return out
}

// send runs one SendMessages call and fails in b every event Kafka did
// not acknowledge, which holds back the later rounds of its aggregate.
func (p *Publisher) send(ctx context.Context, prod sarama.SyncProducer, msgs []*sarama.ProducerMessage, sent []*outbox.Event, b *outbox.BatchErrors) {
	done := make(chan error, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		done <- prod.SendMessages(msgs)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cause := outbox.Unavailable(fmt.Errorf("kafka: outcome unknown, the record may still be written: %w", context.Cause(ctx)))
		for _, e := range sent {
			b.Fail(e, cause)
		}
		return
	}
	if err == nil {
		p.topicErrs.acknowledged(topicsOf(msgs, nil))
		return
	}
	var perrs sarama.ProducerErrors
	if !errors.As(err, &perrs) {
		for _, e := range sent {
			b.Fail(e, classify(fmt.Errorf("kafka: send: %w", err), p.autoCreate))
		}
		return
	}
	bad := make(map[int]bool, len(perrs))
	for _, pe := range perrs {
		i, ok := pe.Msg.Metadata.(int)
		if !ok || i < 0 || i >= len(sent) {
			// Not a message of ours: trust nothing of this batch.
			for _, e := range sent {
				b.Fail(e, fmt.Errorf("kafka: send: unexpected error report: %w", err))
			}
			return
		}
		bad[i] = true
		e := sent[i]
		b.Fail(e, p.topicErrs.classify(pe.Msg.Topic, fmt.Errorf("kafka: event %s to topic %q: %w", e.ID, pe.Msg.Topic, pe.Err), p.autoCreate))
	}
	p.topicErrs.acknowledged(topicsOf(msgs, bad))
}

// topicsOf returns the topics of the messages whose index is not in skip.
func topicsOf(msgs []*sarama.ProducerMessage, skip map[int]bool) map[string]bool {
	topics := make(map[string]bool)
	for i, m := range msgs {
		if !skip[i] {
			topics[m.Topic] = true
		}
	}
	return topics
}

// acquire returns the producer, connecting first if need be, and counts
// the caller in wg; the caller calls wg.Done.
func (p *Publisher) acquire(ctx context.Context) (sarama.SyncProducer, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.producer != nil {
		p.wg.Add(1)
		prod := p.producer
		p.mu.Unlock()
		return prod, nil
	}
	a := p.attempt
	if a == nil {
		a = &connectAttempt{done: make(chan struct{})}
		p.attempt = a
		p.wg.Add(1)
		go p.connectInBackground(a)
	}
	p.mu.Unlock()

	select {
	case <-a.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("kafka: connect: %w", context.Cause(ctx))
	}
	if a.err != nil {
		return nil, fmt.Errorf("kafka: connect: %w", a.err)
	}
	return p.acquire(ctx)
}

// connectInBackground runs one connection attempt, which sarama cannot
// cancel, so that a Publish whose ctx ends need not wait for it.
func (p *Publisher) connectInBackground(a *connectAttempt) {
	defer p.wg.Done()
	prod, release, err := p.connect()
	p.mu.Lock()
	defer p.mu.Unlock()
	a.err = err
	p.attempt = nil
	close(a.done)
	if err != nil {
		return
	}
	if p.closed {
		_ = release() // Close is waiting for us and found nothing to close
		return
	}
	p.producer, p.release = prod, release
}

// Close waits for Publish calls in progress, then closes the client and
// producer the Publisher opened (nothing when it was given a producer;
// only its own producer when it was given a client). Publish after Close
// returns ErrClosed. Close is idempotent.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()

	p.mu.Lock()
	release := p.release
	p.producer, p.release = nil, nil
	p.mu.Unlock()
	if release != nil {
		if err := release(); err != nil {
			return fmt.Errorf("kafka: close: %w", err)
		}
	}
	return nil
}
