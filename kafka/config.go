package kafka

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

// Defaults of the configuration NewConfig returns and of the options.
const (
	// DefaultClientID is the client ID NewConfig sets.
	DefaultClientID = "outbox"

	// DefaultMaxMessageBytes is the largest record, as sarama measures it
	// (key, value, headers and record overhead), that NewConfig allows.
	// It is sarama's own default and just under Kafka's default broker
	// limit (message.max.bytes = 1048588).
	DefaultMaxMessageBytes = 1 << 20

	// DefaultRetryMax is how often NewConfig lets sarama retry a produce
	// request on a transient error before Publish reports the events as
	// failed (the relay then retries them with its own backoff).
	DefaultRetryMax = 3

	// DefaultCompression is the producer compression NewConfig sets:
	// none. Set Producer.Compression on your config to change it.
	DefaultCompression = sarama.CompressionNone
)

// NewConfig returns a sarama configuration with the defaults this
// publisher is safe with: an idempotent producer (so a retried request
// never writes a record twice nor reorders a partition), acks from all
// in-sync replicas (WaitForAll), one open request per broker connection
// (Net.MaxOpenRequests = 1, which idempotence requires), DefaultRetryMax
// retries, Return.Successes and Return.Errors on (a SyncProducer needs
// both), DefaultMaxMessageBytes, no compression, ClientID
// DefaultClientID and sarama's default protocol version (2.8.0).
//
// Change what you need (Net.TLS, Net.SASL, Version, Producer.Compression)
// and pass it to New.
func NewConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = DefaultClientID
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = DefaultRetryMax
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.MaxMessageBytes = DefaultMaxMessageBytes
	c.Producer.Compression = DefaultCompression
	return c
}

// validateConfig checks what the publisher depends on, then lets sarama
// check the rest. Every error wraps outbox.ErrInvalidConfig.
func validateConfig(c *sarama.Config) error {
	var problems []error
	if !c.Producer.Return.Successes {
		problems = append(problems, errors.New("Producer.Return.Successes must be true: a message counts as acknowledged only when sarama returns it as a success"))
	}
	if !c.Producer.Return.Errors {
		problems = append(problems, errors.New("Producer.Return.Errors must be true: the publisher reports each failed message"))
	}
	if c.Producer.RequiredAcks == sarama.NoResponse {
		problems = append(problems, errors.New("Producer.RequiredAcks must not be NoResponse: without an acknowledgement an event would be marked synced unseen (use WaitForAll)"))
	}
	if !c.Version.IsAtLeast(sarama.V0_11_0_0) {
		problems = append(problems, fmt.Errorf("Version must be at least 0.11.0.0 (record headers carry the event's metadata), got %s", c.Version))
	}
	if len(problems) == 0 {
		if err := c.Validate(); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("kafka: %w: %w", outbox.ErrInvalidConfig, errors.Join(problems...))
	}
	return nil
}
