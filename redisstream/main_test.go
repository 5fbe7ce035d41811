package redisstream

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: every
// client, miniredis server and proxy a test starts must be closed by it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
