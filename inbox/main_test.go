package inbox

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql keeps one opener goroutine per *sql.DB until Close;
		// every DB here is closed in t.Cleanup.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}
