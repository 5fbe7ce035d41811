// Package kafka is an outbox.Publisher for Apache Kafka on IBM/sarama.
//
// Each event becomes one Kafka record, keyed by its aggregate ID, sent
// through an idempotent sarama SyncProducer. A batch goes out in as few
// SendMessages calls as per-aggregate order allows: each call carries at
// most one event of an aggregate (a batch of distinct aggregates is one
// call), because sarama can fail a record while later records of its
// partition in the same call are written. Publish reports exactly which
// events Kafka did not acknowledge, so the relay marks only what was
// acknowledged, and holds back an aggregate's later events after a failure.
//
// # Quickstart
//
//	pub, err := kafka.New([]string{"kafka-1:9092", "kafka-2:9092"}, nil) // nil: kafka.NewConfig()
//	if err != nil { ... }
//	defer pub.Close()
//	ob, err := outbox.New(store, pub)
//
// With TLS, SASL, another protocol version or compression, start from
// NewConfig and change what you need:
//
//	cfg := kafka.NewConfig()
//	cfg.Net.TLS.Enable = true
//	cfg.Producer.Compression = sarama.CompressionSnappy
//	pub, err := kafka.New(brokers, cfg)
//
// A service that already has a sarama.Client or sarama.SyncProducer passes
// it to NewFromClient or NewFromProducer; Close then leaves it open.
//
// # Configuration and defaults
//
// NewConfig (and New with a nil config) sets:
//
//	Setting                        Default              Why
//	Producer.Idempotent            true                 a retried request never duplicates nor reorders a partition
//	Producer.RequiredAcks          WaitForAll           acknowledged means written to every in-sync replica
//	Net.MaxOpenRequests            1                    required by idempotence; keeps order across retries
//	Producer.Retry.Max             3 (DefaultRetryMax)  sarama retries transient errors; then the relay backs off
//	Producer.Return.Successes      true                 required by a SyncProducer
//	Producer.Return.Errors         true                 required by a SyncProducer
//	Producer.MaxMessageBytes       1 MiB                just under Kafka's default message.max.bytes
//	Producer.Compression           none                 events are small; set snappy, lz4 or zstd if yours are not (see Compression)
//	Version                        sarama's (2.8.0)     headers need at least 0.11
//	ClientID                       "outbox"
//	Metadata.AllowAutoTopicCreation sarama's (true)     an unknown topic is retried; false buries its events at once (see Errors)
//
// A config you pass is checked, not changed: Producer.Return.Successes and
// Producer.Return.Errors must be true, RequiredAcks must not be
// NoResponse (an unacknowledged event would be marked synced), Version
// must be at least 0.11, and it must pass sarama's own Validate. A failure
// wraps outbox.ErrInvalidConfig and names the field. Options: WithTopic
// maps an event to its topic (default: Event.Topic), WithMaxMessageBytes
// overrides the size limit (up to the config's), WithLazyConnect lets New
// succeed while Kafka is down. An invalid option is an error of the
// constructor too, never of a later Publish.
//
// # Compression
//
// The producer compresses whole record batches with
// Producer.Compression: none (DefaultCompression, the default), gzip,
// snappy, lz4 or zstd (zstd needs Version 2.1 or later). Consumers
// decompress transparently; the record's value is the payload as saved
// either way. ParseCompression turns a name from a flag or the
// environment into the codec:
//
//	cfg := kafka.NewConfig()
//	cfg.Producer.Compression, err = kafka.ParseCompression(os.Getenv("KAFKA_COMPRESSION"))
//
// None is the default because on a fast network the codecs cost more
// producer CPU than they save for typical small events; for large or
// repetitive payloads, or a metered or slow network, lz4 and zstd save
// most of the bytes for little CPU (BENCHMARKS.md in the repository has
// the figures for 256-byte and 16 KiB payloads).
//
// # Wire format
//
// A consumer in any language reads:
//
//	Key      the aggregate ID as UTF-8 bytes (no key when it is empty)
//	Value    the payload, byte for byte
//	Headers  id            the event ID
//	         type          the event type
//	         aggregate_id  the aggregate ID (also the key)
//	         created_at    when the event was saved: RFC 3339, UTC, nine
//	                       fractional digits (2026-01-02T03:04:05.120000000Z)
//	         header:<key>  one per event header, value as is
//
// The names are the same as the redisstream adapter's fields and are
// exported as HeaderID, HeaderType, HeaderAggregateID, HeaderCreatedAt and
// HeaderPrefix. The record timestamp is the time of sending. Go consumers
// turn a record back into an outbox.Event with Decode (sarama) or
// DecodeRecord (any client); malformed records are errors wrapping
// ErrMalformed. Records written before v1 carry created_at without the
// trailing zeros of its fraction (2026-01-02T03:04:05.12Z); they decode
// too, as does any RFC 3339 time. Delivery is at least once: drop duplicates by event ID.
//
// # Ordering
//
// Kafka keeps order within a partition, and the producer's partitioner
// (sarama's hash partitioner unless you set another) sends every record
// with the same key to the same partition, so the events of one aggregate
// reach consumers in the order they were published; idempotence with one
// open request per connection keeps that order across sarama's retries.
// The relay publishes each aggregate's events in save order, so the order
// holds end to end. If an event fails before it is sent (too large, no
// topic), Publish holds back the later events of its aggregate in the same
// batch, so they cannot overtake it.
//
// Caveat: the partition of a key depends on the partition count. Adding
// partitions to a topic moves aggregates to other partitions, and events
// published after the change may be consumed before older ones of the same
// aggregate still waiting in the old partition. Create topics with the
// partitions they will need, or drain consumers before repartitioning.
// A partitioner that ignores the key (random, round-robin) breaks the
// order too.
//
// # Errors
//
// Publish returns nil when every event was acknowledged, an
// *outbox.PublishError naming each event that was not, or a plain error
// when nothing could be attempted (ErrClosed, not connected, context
// ended). An outcome Publish cannot know (the context ended while the
// batch was in flight, a broker connection broke) is a failure, never an
// acknowledgement.
//
// Failures that retrying cannot fix are marked with outbox.Permanent, and
// the relay buries those events at once:
//
//	MESSAGE_TOO_LARGE and a record over Producer.MaxMessageBytes (checked before sending)
//	UNKNOWN_TOPIC_OR_PARTITION, when Metadata.AllowAutoTopicCreation is false
//	INVALID_TOPIC_EXCEPTION, TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED,
//	TRANSACTIONAL_ID_AUTHORIZATION_FAILED, INVALID_RECORD, INVALID_TIMESTAMP,
//	POLICY_VIOLATION, UNSUPPORTED_FOR_MESSAGE_FORMAT, UNSUPPORTED_COMPRESSION_TYPE,
//	INVALID_REQUIRED_ACKS, a sarama.ConfigurationError, an event with no topic
//
// Everything else is transient and retried with backoff: leader elections
// (LEADER_NOT_AVAILABLE, NOT_LEADER_FOR_PARTITION), NOT_ENOUGH_REPLICAS,
// REQUEST_TIMED_OUT, storage errors, brokers down or unreachable
// (sarama.ErrOutOfBrokers, network errors), a producer shutting down,
// sarama's per-topic circuit breaker, context ends, and SASL
// authentication failures (bad credentials affect every event; fix them and
// the backlog flows instead of being buried).
//
// Of those, the failures that say the cluster could not be reached are
// also marked with outbox.Unavailable: sarama.ErrOutOfBrokers,
// ErrNotConnected, ErrClosedClient and ErrShuttingDown, network errors and
// a broker connection closed under a request (io.EOF, which is what sarama
// reports for each message in flight when a broker goes away), and context
// ends. sarama's circuit breaker ("circuit breaker is open": after three
// failed lookups of a topic or partition, sarama fails its messages unsent
// for 10 seconds) is classified as the last error a message to that topic
// got before it, forgotten once a message to the topic is acknowledged: an
// outage stays an outage, an unknown topic stays a counted (or permanent)
// failure, and with no earlier error (the lookups failed within sarama's
// own retries, as when no broker answers) it is Unavailable. The relay never counts these toward
// burying an event, and a batch that fails only so is an outage to it: its
// circuit breaker counts it and it tries again soon, so a cluster that
// comes back is used within moments rather than an interval later. The
// sarama breakers above add up to 10 seconds to that: a partition whose
// leader sarama could not look up during the outage is written again once
// its breaker lets a lookup through.
//
// Unknown topics: how an event to a topic that does not exist fails
// depends on the producer's Metadata.AllowAutoTopicCreation. When it is
// false, nothing will create the topic on the producer's behalf, so
// UNKNOWN_TOPIC_OR_PARTITION is permanent and the relay buries the event
// at once. When it is true (sarama's default, and what NewFromProducer
// assumes, since it cannot see the producer's config), sarama asks the
// broker to create the topic: a broker that auto-creates answers with a
// transient leader error until the topic is ready, and one that does not
// (auto.create.topics.enable=false) answers UNKNOWN_TOPIC_OR_PARTITION,
// which is then transient too, since the topic may be about to appear (an
// operator or a deployment creating it). Such failures count as attempts,
// so an event whose topic never appears is buried after the relay's
// maximum number of attempts (outbox.WithMaxAttempts) rather than at once.
// Either way, create topics before publishing to them; set
// AllowAutoTopicCreation to false to bury events to a mistyped topic
// without retrying.
package kafka
