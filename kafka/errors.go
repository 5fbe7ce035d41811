package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

var (
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("kafka: publisher closed")

	// ErrMalformed is wrapped by every error of Decode and DecodeRecord.
	ErrMalformed = errors.New("kafka: malformed message")
)

// permanentKErrors are the broker answers that retrying the same record
// can never fix. UNKNOWN_TOPIC_OR_PARTITION is among them only when the
// producer does not ask for topics to be created (see classify).
var permanentKErrors = []sarama.KError{
	sarama.ErrMessageSizeTooLarge,                // record over the broker's or topic's size limit
	sarama.ErrUnknownTopicOrPartition,            // topic does not exist and the producer will not have it created
	sarama.ErrInvalidTopic,                       // illegal topic name, or an internal topic
	sarama.ErrTopicAuthorizationFailed,           // no WRITE (or DESCRIBE) ACL on the topic
	sarama.ErrClusterAuthorizationFailed,         // no IDEMPOTENT_WRITE / cluster ACL
	sarama.ErrTransactionalIDAuthorizationFailed, // no ACL for the transactional ID
	sarama.ErrInvalidRecord,                      // the broker's validation refused the record
	sarama.ErrInvalidTimestamp,                   // timestamp outside the topic's accepted range
	sarama.ErrPolicyViolation,                    // a broker policy refused it
	sarama.ErrUnsupportedForMessageFormat,        // headers on a topic with an old message format
	sarama.ErrUnsupportedCompressionType,         // codec the topic or broker does not allow
	sarama.ErrInvalidRequiredAcks,                // misconfiguration, same on every try
}

// classify marks err with outbox.Permanent when retrying can never fix it:
// the permanentKErrors, and a sarama.ConfigurationError (sarama refused the
// message itself, for example over Producer.MaxMessageBytes). Everything
// else is transient: leader elections, not enough replicas, timeouts,
// brokers down or unreachable, a producer shutting down, one of sarama's
// circuit breakers open, a failed SASL handshake (fix the credentials and
// the backlog flows again instead of being buried) and any error it does
// not know.
//
// autoCreate is the producer's Metadata.AllowAutoTopicCreation. When it is
// true, UNKNOWN_TOPIC_OR_PARTITION is transient too: sarama asks the broker
// to create the topic, which may be appearing (being auto-created, or
// created by an operator or a deployment), so the relay retries with
// backoff and buries the event only after its maximum number of attempts.
// When it is false, nothing will create the topic on the producer's behalf
// and the error is permanent.
//
// Of the transient errors, those that say the cluster could not be reached
// or the producer stopped (see isUnreachable) are also marked
// outbox.Unavailable: the record is not at fault, so the relay does not
// count them toward burying it, and treats a batch that failed only so as
// the broker's failure (its circuit breaker counts it, and it retries
// soon instead of after its interval).
func classify(err error, autoCreate bool) error {
	if err == nil || outbox.IsPermanent(err) || outbox.IsUnavailable(err) {
		return err
	}
	if isPermanent(err, autoCreate) {
		return outbox.Permanent(err)
	}
	if isUnreachable(err) {
		return outbox.Unavailable(err)
	}
	return err
}

// isUnreachable reports whether err says that the cluster could not be
// reached or the producer stopped: one of the transientSentinels, or a
// network error (a refused, reset or timed out connection, a failed dial
// or name lookup), which is what sarama reports for each message in flight
// when a broker connection breaks. sarama's open circuit breaker is not
// among them: it says only that lookups failed, for whatever reason (see
// topicErrors).
func isUnreachable(err error) bool {
	for _, t := range transientSentinels {
		if errors.Is(err, t) {
			return true
		}
	}
	var nerr net.Error
	return errors.As(err, &nerr)
}

// breakerOpenText is the message of the error
// (github.com/eapache/go-resiliency/breaker.ErrBreakerOpen) with which
// sarama fails a message, unsent, while the circuit breaker of its topic
// or partition is open: for 10 seconds after three metadata or leader
// lookups in a row failed, as they do while the cluster is unreachable.
const breakerOpenText = "circuit breaker is open"

// breakerOpen reports whether err, or an error it wraps, is sarama's
// circuit breaker refusing to look up a topic or partition. It compares
// the message, so that the package needs no import of the breaker's
// module for one sentinel.
func breakerOpen(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err.Error() == breakerOpenText {
			return true
		}
	}
	return false
}

// transientSentinels say that the cluster could not be reached or the
// producer stopped; whatever they wrap (sarama joins each broker's error
// under ErrOutOfBrokers), the record itself may be fine. io.EOF and
// io.ErrUnexpectedEOF are a broker connection closed under a request.
var transientSentinels = []error{
	sarama.ErrOutOfBrokers,
	sarama.ErrNotConnected,
	sarama.ErrClosedClient,
	sarama.ErrShuttingDown,
	io.EOF,
	io.ErrUnexpectedEOF,
	net.ErrClosed,
	context.Canceled,
	context.DeadlineExceeded,
}

func isPermanent(err error, autoCreate bool) bool {
	if isUnreachable(err) {
		return false
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		if kerr == sarama.ErrUnknownTopicOrPartition && autoCreate {
			return false
		}
		for _, p := range permanentKErrors {
			if kerr == p {
				return true
			}
		}
		return false
	}
	var cerr sarama.ConfigurationError
	return errors.As(err, &cerr)
}

// topicErrors remembers, per topic, the last error sarama reported for a
// message to it other than its circuit breaker being open, until a message
// to the topic is acknowledged. sarama opens a topic's breaker after three
// failed lookups in a row and then fails the topic's messages unsent for
// 10 seconds, whatever made the lookups fail: a cluster that is down (the
// relay should wait for it without counting attempts), a topic that does
// not exist (attempts should count, so that the event is buried in the
// end), or one that never will (burial now). A breaker-open failure is
// therefore classified as the last error a message to the topic got. If
// none got one, the lookups failed within sarama's own retries of the
// first send, as they do when no broker answers: the failure is
// Unavailable.
type topicErrors struct {
	mu   sync.Mutex
	last map[string]error
}

// classify classifies err, a failure of a message to topic; see the
// package-level classify and topicErrors.
func (t *topicErrors) classify(topic string, err error, autoCreate bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !breakerOpen(err) {
		if t.last == nil {
			t.last = make(map[string]error)
		}
		t.last[topic] = err
		return classify(err, autoCreate)
	}
	cause := t.last[topic]
	if cause == nil {
		// The lookups failed inside sarama's own retries, before any
		// message of the topic failed: the cluster could not be reached.
		return outbox.Unavailable(err)
	}
	err = fmt.Errorf("%w (after: %v)", err, cause)
	switch c := classify(cause, autoCreate); {
	case outbox.IsPermanent(c):
		return outbox.Permanent(err)
	case outbox.IsUnavailable(c):
		return outbox.Unavailable(err)
	}
	return err
}

// acknowledged forgets the failures of topics a message was acknowledged
// to.
func (t *topicErrors) acknowledged(topics map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic := range topics {
		delete(t.last, topic)
	}
}
