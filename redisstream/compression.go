package redisstream

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Codec names a payload compression for WithCompression. Its value is
// what the content_encoding field of a compressed entry holds.
type Codec string

// The payload codecs.
const (
	// Gzip is RFC 1952 gzip at the default level (Go's compress/gzip):
	// every language decodes it out of the box.
	Gzip Codec = "gzip"
	// Zstd is Zstandard (RFC 8878) at its default level: faster than gzip
	// at a similar or better ratio.
	Zstd Codec = "zstd"
)

// DefaultCompressionThreshold is the threshold WithCompression takes when
// given 0: payloads of up to 1 KiB are sent as they are, since compressing
// them saves little and costs CPU on both sides.
const DefaultCompressionThreshold = 1024

// FieldContentEncoding is the field that marks a compressed payload. It
// is present, right after the payload field, only when the payload field
// holds compressed bytes, and names the codec ("gzip" or "zstd").
// Consumers decompress the payload when it is present (Decode does);
// entries without it carry the payload as saved.
const FieldContentEncoding = "content_encoding"

// maxDecodedPayload bounds what Decode decompresses, so a corrupt or
// hostile entry cannot make a consumer allocate without limit.
const maxDecodedPayload = 64 << 20

// WithCompression compresses payloads larger than threshold bytes with
// codec, and marks each entry it compressed with the FieldContentEncoding
// field. A payload is sent as it is (with no such field) when it is not
// larger than the threshold or when compressing it does not make it
// smaller. A threshold of 0 means DefaultCompressionThreshold; a negative
// one, or a codec other than Gzip and Zstd, is refused by New. Defaults
// to no compression.
//
// Enable it only once every consumer decodes the field (Decode does);
// consumers that ignore it would read compressed bytes as the payload.
func WithCompression(codec Codec, threshold int) Option {
	return func(c *config) { c.compress, c.codec, c.threshold = true, codec, threshold }
}

// compress returns payload compressed with codec, or nil if that does not
// make it smaller.
func compress(codec Codec, payload []byte) ([]byte, error) {
	var out []byte
	switch codec {
	case Gzip:
		buf := bytes.NewBuffer(make([]byte, 0, len(payload)/2+64))
		w := gzipWriters.Get().(*gzip.Writer)
		w.Reset(buf)
		_, err := w.Write(payload)
		if err == nil {
			err = w.Close()
		}
		gzipWriters.Put(w)
		if err != nil {
			return nil, fmt.Errorf("redisstream: gzip: %w", err)
		}
		out = buf.Bytes()
	case Zstd:
		out = zstdEncoder().EncodeAll(payload, make([]byte, 0, len(payload)/2+64))
	default:
		return nil, fmt.Errorf("redisstream: unknown codec %q", codec)
	}
	if len(out) >= len(payload) {
		return nil, nil
	}
	return out, nil
}

// decompress undoes compress for the codec named by a content_encoding
// field.
func decompress(encoding string, data []byte) ([]byte, error) {
	switch Codec(encoding) {
	case Gzip:
		r, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		out, err := io.ReadAll(io.LimitReader(r, maxDecodedPayload+1))
		if err != nil {
			return nil, err
		}
		if len(out) > maxDecodedPayload {
			return nil, fmt.Errorf("decompressed payload is over %d bytes", maxDecodedPayload)
		}
		return out, r.Close()
	case Zstd:
		return zstdDecoder().DecodeAll(data, nil)
	}
	return nil, fmt.Errorf("unknown %s %q", FieldContentEncoding, encoding)
}

var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

// One zstd encoder and decoder serve every publisher and Decode call:
// EncodeAll and DecodeAll are safe for concurrent use.
var (
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic("redisstream: zstd encoder: " + err.Error()) // only for invalid options
		}
		return e
	})
	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecodedPayload))
		if err != nil {
			panic("redisstream: zstd decoder: " + err.Error()) // only for invalid options
		}
		return d
	})
)
