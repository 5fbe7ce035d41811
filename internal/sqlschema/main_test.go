package sqlschema

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind, as every
// package of the module does; a future test that opens a database must
// close it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
