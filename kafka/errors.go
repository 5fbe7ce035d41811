package kafka

import (
	"context"
	"errors"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

var (
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("kafka: publisher closed")

	// ErrMalformed is wrapped by every error of Decode and DecodeRecord.
	ErrMalformed = errors.New("kafka: malformed outbox record")
)

// permanentKErrors are the broker answers that retrying the same record
// can never fix.
var permanentKErrors = []sarama.KError{
	sarama.ErrMessageSizeTooLarge,                // record over the broker's or topic's size limit
	sarama.ErrUnknownTopicOrPartition,            // topic does not exist and the broker will not create it
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
// brokers down or unreachable, a producer shutting down, an open circuit
// breaker, a failed SASL handshake (fix the credentials and the backlog
// flows again instead of being buried) and any error it does not know.
//
// Of the transient errors, those that say the cluster could not be reached
// or the producer stopped (transientSentinels) are also marked
// outbox.Unavailable: the record is not at fault, so the relay does not
// count them toward burying it.
func classify(err error) error {
	if err == nil || outbox.IsPermanent(err) || outbox.IsUnavailable(err) {
		return err
	}
	if isPermanent(err) {
		return outbox.Permanent(err)
	}
	if isUnreachable(err) {
		return outbox.Unavailable(err)
	}
	return err
}

func isUnreachable(err error) bool {
	for _, t := range transientSentinels {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// transientSentinels say that the cluster could not be reached or the
// producer stopped; whatever they wrap (sarama joins each broker's error
// under ErrOutOfBrokers), the record itself may be fine.
var transientSentinels = []error{
	sarama.ErrOutOfBrokers,
	sarama.ErrNotConnected,
	sarama.ErrClosedClient,
	sarama.ErrShuttingDown,
	context.Canceled,
	context.DeadlineExceeded,
}

func isPermanent(err error) bool {
	if isUnreachable(err) {
		return false
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
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
