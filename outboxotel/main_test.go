package outboxotel_test

import (
	"testing"

	"github.com/eventsync/outbox/internal/leaktest"
)

func TestMain(m *testing.M) {
	leaktest.Main(m) // sarama's own background goroutines excepted
}
