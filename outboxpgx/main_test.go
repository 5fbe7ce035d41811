package outboxpgx

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// No ignores: every test closes the pools and stores it opens, and
	// pgxpool keeps no goroutine past Close.
	goleak.VerifyTestMain(m)
}
