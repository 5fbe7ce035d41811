package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestClassify checks the mapping with the producer's topic
// auto-creation off and on: the setting changes the answer for an unknown
// topic only.
func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err       error
		permanent bool
	}{
		{sarama.ErrMessageSizeTooLarge, true},
		{sarama.ErrUnknownTopicOrPartition, true}, // with auto-creation off; see below
		{sarama.ErrInvalidTopic, true},
		{sarama.ErrTopicAuthorizationFailed, true},
		{sarama.ErrClusterAuthorizationFailed, true},
		{sarama.ErrInvalidRecord, true},
		{sarama.ErrPolicyViolation, true},
		{fmt.Errorf("wrapped: %w", sarama.ErrTopicAuthorizationFailed), true},
		{sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes"), true},

		{sarama.ErrLeaderNotAvailable, false},
		{sarama.ErrNotLeaderForPartition, false},
		{sarama.ErrNotEnoughReplicas, false},
		{sarama.ErrNotEnoughReplicasAfterAppend, false},
		{sarama.ErrRequestTimedOut, false},
		{sarama.ErrKafkaStorageError, false},
		{sarama.ErrBrokerNotAvailable, false},
		{sarama.ErrSASLAuthenticationFailed, false},
		{sarama.ErrOutOfOrderSequenceNumber, false},
		{sarama.ErrOutOfBrokers, false},
		{sarama.Wrap(sarama.ErrOutOfBrokers, sarama.ErrTopicAuthorizationFailed), false},
		{sarama.ErrNotConnected, false},
		{sarama.ErrShuttingDown, false},
		{sarama.ErrClosedClient, false},
		{io.EOF, false},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{context.DeadlineExceeded, false},
		{errors.New("circuit breaker is open"), false},
	}
	for _, autoCreate := range []bool{false, true} {
		for _, tt := range tests {
			want := tt.permanent
			if autoCreate && errors.Is(tt.err, sarama.ErrUnknownTopicOrPartition) {
				want = false // the topic may be appearing
			}
			got := classify(tt.err, autoCreate)
			if outbox.IsPermanent(got) != want {
				t.Errorf("classify(%v, autoCreate %v): permanent = %v, want %v", tt.err, autoCreate, outbox.IsPermanent(got), want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("classify(%v, autoCreate %v) lost the error", tt.err, autoCreate)
			}
		}
		if classify(nil, autoCreate) != nil {
			t.Errorf("classify(nil, autoCreate %v) != nil", autoCreate)
		}
	}
	wrapped := fmt.Errorf("kafka: event 1 to topic %q: %w", "t", sarama.ErrUnknownTopicOrPartition)
	if got := classify(wrapped, true); outbox.IsPermanent(got) || outbox.IsUnavailable(got) {
		// The topic is the record's problem, not the cluster's: the
		// attempts count, and the event is buried after the last one.
		t.Errorf("unknown topic with auto-creation on = %v, want transient and not unavailable", got)
	}
	if got := classify(wrapped, false); !outbox.IsPermanent(got) {
		t.Errorf("unknown topic with auto-creation off = %v, want permanent", got)
	}
}

// TestClassifyBrokerErrors makes the kfake broker answer every produce
// request with an error code and checks what sarama hands back through
// Publish, after its own retries.
func TestClassifyBrokerErrors(t *testing.T) {
	t.Parallel()
	if os.Getenv(envKafka) != "" {
		t.Skip("needs kfake: it makes the broker answer produce requests with chosen error codes, which a real cluster cannot be made to do; TestClassify covers the mapping")
	}
	tests := []struct {
		code      sarama.KError
		permanent bool
	}{
		{sarama.ErrMessageSizeTooLarge, true},
		{sarama.ErrTopicAuthorizationFailed, true},
		{sarama.ErrClusterAuthorizationFailed, true},
		{sarama.ErrInvalidTopic, true},
		{sarama.ErrInvalidRecord, true},
		{sarama.ErrPolicyViolation, true},
		{sarama.ErrLeaderNotAvailable, false},
		{sarama.ErrNotLeaderForPartition, false},
		{sarama.ErrNotEnoughReplicas, false},
		{sarama.ErrNotEnoughReplicasAfterAppend, false},
		{sarama.ErrRequestTimedOut, false},
		{sarama.ErrKafkaStorageError, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.Error(), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, kfake.NumBrokers(1))
			topic := c.topic(t, 1)
			p := openPublisher(t, c.brokers, testConfig())
			c.fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.fake.KeepControl()
				r := req.(*kmsg.ProduceRequest)
				resp := r.ResponseKind().(*kmsg.ProduceResponse)
				for _, rt := range r.Topics {
					st := kmsg.NewProduceResponseTopic()
					st.Topic = rt.Topic
					for _, rp := range rt.Partitions {
						sp := kmsg.NewProduceResponseTopicPartition()
						sp.Partition = rp.Partition
						sp.ErrorCode = int16(tt.code)
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
			e := event(topic, "a", "t", "x")
			failed := failedOf(t, p.Publish(context.Background(), []*outbox.Event{e}))
			err := failed[e.ID]
			if !errors.Is(err, tt.code) {
				t.Fatalf("error %v, want %v", err, tt.code)
			}
			if outbox.IsPermanent(err) != tt.permanent {
				t.Errorf("permanent = %v, want %v (%v)", outbox.IsPermanent(err), tt.permanent, err)
			}
		})
	}
}

// Errors that say the cluster could not be reached are the broker's fault,
// not the record's: marked outbox.Unavailable so the relay never buries for
// them. A broker's answer about the record is not.
func TestClassifyUnavailable(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		sarama.ErrOutOfBrokers, sarama.ErrNotConnected, sarama.ErrClosedClient, sarama.ErrShuttingDown,
		context.DeadlineExceeded, context.Canceled,
		// What sarama reports per message when a broker connection breaks.
		io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED},
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET},
		&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE},
		&net.DNSError{Err: "no such host", Name: "kafka-1", IsNotFound: true},
	} {
		if got := classify(fmt.Errorf("send: %w", err), false); !outbox.IsUnavailable(got) || outbox.IsPermanent(got) {
			t.Errorf("classify(%v) = %v, want unavailable", err, got)
		}
	}
	// sarama's breaker open says only that lookups failed: topicErrors
	// tells why.
	for _, err := range []error{sarama.ErrLeaderNotAvailable, sarama.ErrMessageSizeTooLarge, sarama.ErrUnknownTopicOrPartition,
		errors.New("circuit breaker is open"), errors.New("something else")} {
		if got := classify(err, true); outbox.IsUnavailable(got) {
			t.Errorf("classify(%v) marked unavailable", err)
		}
	}
}

// TestUnknownTopic publishes to a topic that does not exist. With the
// producer's Metadata.AllowAutoTopicCreation off nothing will create it,
// and the event fails permanently; with it on the topic may be appearing,
// so the failure is transient and a later Publish delivers the event once
// the topic exists.
func TestUnknownTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("auto-create off", func(t *testing.T) {
		t.Parallel()
		// The cluster would create the topic if asked: the producer's
		// config alone makes the failure permanent.
		c := newCluster(t, kfake.AllowAutoTopicCreation())
		p := openPublisher(t, c.brokers, testConfig())
		missing := topicName(t)
		e := event(missing, "a", "t", "x")
		err := failedOf(t, p.Publish(ctx, []*outbox.Event{e}))[e.ID]
		if !errors.Is(err, sarama.ErrUnknownTopicOrPartition) || !outbox.IsPermanent(err) {
			t.Fatalf("error %v, want a permanent ErrUnknownTopicOrPartition", err)
		}
	})

	t.Run("auto-create on, topic created later", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t) // kfake does not create topics unless told to
		cfg := testConfig()
		cfg.Metadata.AllowAutoTopicCreation = true
		p := openPublisher(t, c.brokers, cfg)
		missing := topicName(t)
		c.deleteTopicLater(t, missing)
		e := event(missing, "a", "t", "x")
		err := p.Publish(ctx, []*outbox.Event{e})
		switch {
		case err == nil && c.fake == nil:
			t.Log("the cluster created the topic when asked (auto.create.topics.enable): no failure to check")
		case err == nil:
			t.Fatal("Publish to a topic kfake does not create: nil error")
		default:
			ferr := failedOf(t, err)[e.ID]
			if !errors.Is(ferr, sarama.ErrUnknownTopicOrPartition) || outbox.IsPermanent(ferr) || outbox.IsUnavailable(ferr) {
				t.Fatalf("error %v, want a transient ErrUnknownTopicOrPartition, not unavailable (its attempts count)", ferr)
			}
			c.createTopic(t, missing, 1, nil)
			deadline := time.Now().Add(30 * time.Second)
			for err := p.Publish(ctx, []*outbox.Event{e}); err != nil; err = p.Publish(ctx, []*outbox.Event{e}) {
				if time.Now().After(deadline) {
					t.Fatalf("Publish once the topic exists: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if got := decodeKgo(t, consume(t, c.brokers, missing, 1)[0]); got.ID != e.ID {
			t.Errorf("consumed %s, want %s", got.ID, e.ID)
		}
	})

	t.Run("auto-create on, broker creates", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, kfake.AllowAutoTopicCreation())
		if c.fake == nil {
			t.Skip("needs a cluster known to create topics when asked; the subtest above covers a real one either way")
		}
		cfg := testConfig()
		cfg.Metadata.AllowAutoTopicCreation = true
		p := openPublisher(t, c.brokers, cfg)
		missing := topicName(t)
		e := event(missing, "a", "t", "x")
		if err := p.Publish(ctx, []*outbox.Event{e}); err != nil {
			t.Fatalf("Publish to a topic the broker creates: %v", err)
		}
		if got := decodeKgo(t, consume(t, c.brokers, missing, 1)[0]); got.ID != e.ID {
			t.Errorf("consumed %s, want %s", got.ID, e.ID)
		}
	})
}

// sarama fails a topic's messages with "circuit breaker is open" for 10 s
// after three failed lookups, whatever failed them. Such a failure is
// classified as the error that opened the breaker: an outage stays an
// outage (not counted), an unknown topic stays counted (so the event is
// buried in the end, not retried forever at no cost), a topic that will
// never exist stays permanent. An acknowledged message to the topic
// forgets the cause; without one (the lookups failed inside sarama's own
// retries, as when no broker answers), the breaker means an outage.
func TestTopicErrorsClassifyBreakerByCause(t *testing.T) {
	t.Parallel()
	breaker := fmt.Errorf("kafka: event e to topic %q: %w", "t", errors.New("circuit breaker is open"))
	kind := func(err error) string {
		switch {
		case outbox.IsPermanent(err):
			return "permanent"
		case outbox.IsUnavailable(err):
			return "unavailable"
		}
		return "transient"
	}
	for _, tc := range []struct {
		name       string
		cause      error
		autoCreate bool
		want       string
	}{
		{"no cause seen", nil, true, "unavailable"},
		{"cluster down", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true, "unavailable"},
		{"out of brokers", sarama.ErrOutOfBrokers, false, "unavailable"},
		{"unknown topic, auto-create on", sarama.ErrUnknownTopicOrPartition, true, "transient"},
		{"unknown topic, auto-create off", sarama.ErrUnknownTopicOrPartition, false, "permanent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var te topicErrors
			if tc.cause != nil {
				te.classify("t", tc.cause, tc.autoCreate)
				te.classify("other", io.EOF, tc.autoCreate) // another topic's cause changes nothing
			}
			got := te.classify("t", breaker, tc.autoCreate)
			if kind(got) != tc.want || !errors.Is(got, breaker) {
				t.Fatalf("breaker open after %v = %v (%s), want %s", tc.cause, got, kind(got), tc.want)
			}
			te.acknowledged(map[string]bool{"t": true})
			if got := te.classify("t", breaker, tc.autoCreate); kind(got) != "unavailable" {
				t.Fatalf("after an acknowledgement: %v (%s), want unavailable", got, kind(got))
			}
		})
	}
}
