package outbox

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/eventsync/outbox/storage"
)

// The relay is the one place that cuts an error before it is kept: the
// stores take Failure.Err as it is.
func TestErrorTextIsCutOnceToValidUTF8(t *testing.T) {
	t.Parallel()
	if got := errorText(nil); got != "" {
		t.Errorf("errorText(nil) = %q", got)
	}
	short := errors.New("connection refused")
	if got := errorText(short); got != "connection refused" {
		t.Errorf("short error changed: %q", got)
	}
	// A multi-byte rune across the limit is dropped, not split.
	long := errors.New(strings.Repeat("a", storage.MaxErrorLength-1) + "é" + strings.Repeat("b", 100))
	got := errorText(long)
	if len(got) > storage.MaxErrorLength || !utf8.ValidString(got) || got != strings.Repeat("a", storage.MaxErrorLength-1) {
		t.Errorf("long error cut to %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
