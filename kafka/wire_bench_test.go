package kafka

import (
	"testing"
)

// BenchmarkMessage measures encoding one event as a sarama record (key,
// value, headers).
func BenchmarkMessage(b *testing.B) {
	e := event("bench", "sku-000042", "stock.updated", `{"sku":"sku-000042","warehouse":"wh-3","quantity":17,"reserved":2}`)
	e.Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tenant": "acme"}
	b.ReportAllocs()
	for b.Loop() {
		_ = message(e, e.Topic)
	}
}
