package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/eventsync/outbox/redisstream"
)

// cpuTime is this process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runCompression shows what each payload codec costs (throughput, CPU)
// and saves (bytes) for 256-byte and 16 KiB JSON payloads, on Redis
// (redisstream.WithCompression) and on Kafka (sarama's producer
// compression, kfake).
func runCompression(ctx context.Context, b *bench) error {
	for _, size := range []int{256, 16 << 10} {
		n := min(b.cfg.events, 20_000)
		if size > 1024 {
			n = min(b.cfg.events, 2000) // 16 KiB entries: keep the shared Redis small
		}
		label := fmt.Sprintf("%dB", size)
		if size >= 1024 {
			label = fmt.Sprintf("%dKB", size/1024)
		}
		base := ""
		for _, codec := range []redisstream.Codec{"", redisstream.Gzip, redisstream.Zstd} {
			name := "compress_redis_none_" + label
			if codec != "" {
				name = fmt.Sprintf("compress_redis_%s_%s", codec, label)
			}
			r, err := median(b.cfg.runs, func(int) (*Result, error) { return b.redisCompression(ctx, name, codec, size, n) })
			if err != nil {
				return err
			}
			b.res.add(r)
			if codec == "" {
				base = name
			} else {
				b.res.relate(r, base)
			}
		}
		for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
			name := fmt.Sprintf("compress_kafka_%s_%s", codec, label)
			r, err := median(b.cfg.runs, func(int) (*Result, error) { return kafkaCompression(name, codec, size, n) })
			if err != nil {
				return err
			}
			b.res.add(r)
			if codec == "none" {
				base = name
			} else {
				b.res.relate(r, base)
			}
		}
	}
	return nil
}

func (b *bench) redisCompression(ctx context.Context, name string, codec redisstream.Codec, size, n int) (*Result, error) {
	key := b.stream("compress")
	defer b.rdb.Del(ctx, key)
	var opts []redisstream.Option
	if codec != "" {
		// Below the default threshold (1 KiB), so that the 256-byte case
		// shows what compressing small payloads would cost and save.
		opts = append(opts, redisstream.WithCompression(codec, 128))
	}
	pub, err := redisstream.New(b.rdb, opts...)
	if err != nil {
		return nil, err
	}
	events := newEvents(1000, 100, size, key)
	for i, e := range events {
		e.ID, e.CreatedAt = outbox.NewID(), time.Now().UTC()
		e.Payload = payload(rngFor(i), size)
	}
	cpu0, start := cpuTime(), time.Now()
	for done := 0; done < n; done += len(events) {
		if err := pub.Publish(ctx, events[:min(len(events), n-done)]); err != nil {
			return nil, err
		}
	}
	d, cpu := time.Since(start), cpuTime()-cpu0
	msgs, err := b.rdb.XRangeN(ctx, key, "-", "+", 1).Result()
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("read back: %v", err)
	}
	stored := len(msgs[0].Values[redisstream.FieldPayload].(string))
	r := throughput(name, n, d)
	r.Note = fmt.Sprintf("payload field %d of %d bytes (%.0f%%), %.1f µs CPU per event (whole process)",
		stored, len(events[0].Payload), 100*float64(stored)/float64(len(events[0].Payload)), float64(cpu.Microseconds())/float64(n))
	return r, nil
}

func kafkaCompression(name, codec string, size, n int) (*Result, error) {
	c, err := newKafka("compress", 6)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cfg := kafka.NewConfig()
	if cfg.Producer.Compression, err = kafka.ParseCompression(codec); err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	cfg.MetricRegistry = reg
	pub, err := kafka.New(c.ListenAddrs(), cfg)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	events := newEvents(1000, 100, size, "compress")
	for i, e := range events {
		e.ID, e.CreatedAt = outbox.NewID(), time.Now().UTC()
		e.Payload = payload(rngFor(i), size)
	}
	ctx := context.Background()
	cpu0, start := cpuTime(), time.Now()
	for done := 0; done < n; done += len(events) {
		if err := pub.Publish(ctx, events[:min(len(events), n-done)]); err != nil {
			return nil, err
		}
	}
	d, cpu := time.Since(start), cpuTime()-cpu0
	ratio := 1.0
	if h, ok := reg.Get("compression-ratio").(metrics.Histogram); ok && h.Count() > 0 {
		ratio = h.Mean() / 100 // sarama records uncompressed/compressed size × 100 per batch
	}
	r := throughput(name, n, d)
	r.Note = fmt.Sprintf("record batches %.1f× smaller (sarama's compression-ratio), %.1f µs CPU per event (whole process, in-process broker included)",
		ratio, float64(cpu.Microseconds())/float64(n))
	return r, nil
}

var _ = sarama.CompressionNone
