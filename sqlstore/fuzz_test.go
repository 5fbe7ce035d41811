package sqlstore

import (
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/eventsync/outbox"
)

// plainIdentRE is a plain SQL identifier.
var plainIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// FuzzTableName checks that a table name reaches SQL only as one or two
// quoted plain identifiers, and that everything else is refused with
// ErrInvalidConfig, in every dialect.
func FuzzTableName(f *testing.F) {
	for _, s := range []string{"", "outbox_events", "app.outbox", "1abc", "a-b", "a.b.c", "`x`", `"x"`, "x;DROP TABLE y", "ÄÖÜ", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, d := range allDialects {
			tb, err := ddl.Table(d, name)
			if err != nil {
				if !errors.Is(err, outbox.ErrInvalidConfig) {
					t.Fatalf("%s: error %v does not wrap ErrInvalidConfig", d, err)
				}
				continue
			}
			for _, part := range []string{tb.Schema, tb.Name} {
				if part != "" && !plainIdentRE.MatchString(part) {
					t.Fatalf("%s: accepted %q with the part %q", d, name, part)
				}
			}
			if strings.ContainsAny(tb.Quoted, " ;'\\\x00") {
				t.Fatalf("%s: %q quoted as %q", d, name, tb.Quoted)
			}
		}
	})
}

// FuzzHeaders checks that headers stored as JSON come back unchanged.
func FuzzHeaders(f *testing.F) {
	f.Add("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k", "")
	f.Add("ключ", "значение", "\"", "\\\n\t\x00")
	f.Add("<script>", "&amp;", "\u2028", "\U0001F600")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		h := map[string]string{k1: v1, k2: v2}
		for k, v := range h {
			if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Skip("Save refuses these")
			}
		}
		enc, err := encodeHeaders(h)
		if err != nil {
			t.Fatalf("encode %v: %v", h, err)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(enc.(string)), &got); err != nil {
			t.Fatalf("decode %q: %v", enc, err)
		}
		if !maps.Equal(got, h) {
			t.Fatalf("round trip: got %v, want %v", got, h)
		}
	})
}
