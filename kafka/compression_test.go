package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/eventsync/outbox"
)

// TestCompressionRoundTrip publishes a batch with each producer codec and
// reads it back with an independent client: the records arrive compressed
// with that codec and decode to the events as saved.
func TestCompressionRoundTrip(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			codec, err := ParseCompression(strings.ToUpper(name))
			if err != nil {
				t.Fatal(err)
			}
			c := newCluster(t)
			topic := c.topic(t, 1)
			cfg := testConfig()
			cfg.Producer.Compression = codec
			p := openPublisher(t, c.brokers, cfg)
			var events []*outbox.Event
			for i := range 20 {
				events = append(events, event(topic, "agg", "thing.done", strings.Repeat(fmt.Sprintf(`{"n":%d}`, i), 100)))
			}
			if err := p.Publish(context.Background(), events); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			for i, r := range consume(t, c.brokers, topic, len(events)) {
				if got := r.Attrs.CompressionType(); got != uint8(codec) {
					t.Errorf("record %d: compression type %d, want %d (%s)", i, got, codec, name)
				}
				if got := decodeKgo(t, r); !equalEvents(got, events[i]) {
					t.Errorf("record %d decoded as %+v, want %+v", i, got, events[i])
				}
			}
		})
	}
}

func TestParseCompression(t *testing.T) {
	t.Parallel()
	if c, err := ParseCompression(" Zstd "); err != nil || c != sarama.CompressionZSTD {
		t.Errorf("ParseCompression(zstd) = %v, %v", c, err)
	}
	if _, err := ParseCompression("brotli"); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("ParseCompression(brotli): %v, want ErrInvalidConfig", err)
	}
	if NewConfig().Producer.Compression != DefaultCompression || DefaultCompression != sarama.CompressionNone {
		t.Errorf("the default compression is not none")
	}
}
