package outboxprom_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind (a database
// left open, a relay not stopped).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
