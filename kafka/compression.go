package kafka

import (
	"strings"

	"github.com/IBM/sarama"
)

// compressions are the producer compression codecs by the names
// ParseCompression accepts.
var compressions = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD, // needs Version 2.1.0 or later (NewConfig's 2.8.0 is)
}

// ParseCompression returns the producer compression codec named by s
// ("none", "gzip", "snappy", "lz4" or "zstd", in any case), for a
// setting read from a flag or the environment. Kafka compresses whole
// record batches, so a codec saves more the larger the batches and the
// more alike the payloads; consumers decompress transparently in every
// client library. Set the result as
// Producer.Compression of the config you pass to New. The default,
// DefaultCompression, is none. An unknown name is an error wrapping
// outbox.ErrInvalidConfig.
func ParseCompression(s string) (sarama.CompressionCodec, error) {
	c, ok := compressions[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return sarama.CompressionNone, invalid("unknown compression %q (want none, gzip, snappy, lz4 or zstd)", s)
	}
	return c, nil
}
