package main

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
)

// TestKafkaEmbedded: with PUBLISHER=kafka and no KAFKA_BROKERS the service
// publishes to an in-process Kafka cluster.
func TestKafkaEmbedded(t *testing.T) {
	t.Parallel()
	cfg := config{
		DB:        sqliteConfig(filepath.Join(t.TempDir(), "inventory.db")),
		Publisher: publisherKafka,
		Topic:     defaultTopic,
		Outbox:    testOutbox(),
	}
	a, err := newApp(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close() })
	code, got := do(t, a.api.routes(), "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":1}`)
	if code != http.StatusOK || got["event"].(map[string]any)["published"] != true {
		t.Fatalf("write: %d %v", code, got)
	}
}
