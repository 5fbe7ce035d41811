package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err       error
		permanent bool
	}{
		{sarama.ErrMessageSizeTooLarge, true},
		{sarama.ErrUnknownTopicOrPartition, true},
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
	for _, tt := range tests {
		if got := outbox.IsPermanent(classify(tt.err)); got != tt.permanent {
			t.Errorf("classify(%v): permanent = %v, want %v", tt.err, got, tt.permanent)
		}
		if !errors.Is(classify(tt.err), tt.err) {
			t.Errorf("classify(%v) lost the error", tt.err)
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// TestClassifyBrokerErrors makes the kfake broker answer every produce
// request with an error code and checks what sarama hands back through
// Publish, after its own retries.
func TestClassifyBrokerErrors(t *testing.T) {
	t.Parallel()
	if newCluster(t).fake == nil {
		t.Skip("injects broker answers into kfake; TestClassify covers the mapping")
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
	for _, err := range []error{sarama.ErrOutOfBrokers, sarama.ErrNotConnected, sarama.ErrClosedClient, context.DeadlineExceeded} {
		if got := classify(fmt.Errorf("send: %w", err)); !outbox.IsUnavailable(got) || outbox.IsPermanent(got) {
			t.Errorf("classify(%v) = %v, want unavailable", err, got)
		}
	}
	for _, err := range []error{sarama.ErrLeaderNotAvailable, sarama.ErrMessageSizeTooLarge} {
		if got := classify(err); outbox.IsUnavailable(got) {
			t.Errorf("classify(%v) marked unavailable", err)
		}
	}
}
