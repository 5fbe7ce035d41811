package natsjs

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: every NATS
// connection a test opens is closed by it, which ends nats.go's
// goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
