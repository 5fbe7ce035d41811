package sqlstore

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// No ignores: every test closes the databases it opens, and none of the
	// drivers keeps a goroutine past Close.
	goleak.VerifyTestMain(m)
}
