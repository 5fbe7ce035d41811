package main

import (
	"context"
	"fmt"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
)

// kafkaPublisher connects to KAFKA_BROKERS, or starts an in-process Kafka
// cluster (kfake) with the events topic when it is unset or "embedded".
// It connects lazily, so the service starts while Kafka is down.
func (a *app) kafkaPublisher(context.Context) (outbox.Publisher, error) {
	brokers := a.cfg.KafkaBrokers
	if len(brokers) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, a.cfg.Topic))
		if err != nil {
			return nil, fmt.Errorf("start the embedded Kafka: %w", err)
		}
		a.closers = append(a.closers, func() error { cluster.Close(); return nil })
		brokers = cluster.ListenAddrs()
		a.log.Info("publisher: embedded Kafka (kfake; set KAFKA_BROKERS for a real one)", "brokers", brokers, "topic", a.cfg.Topic)
	} else {
		a.log.Info("publisher: Kafka", "brokers", brokers, "topic", a.cfg.Topic)
	}
	pub, err := kafka.New(brokers, nil, kafka.WithLazyConnect())
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, pub.Close)
	return pub, nil
}
