package wire

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errBad = errors.New("pkg: malformed message")

func TestFormatTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000000000Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC), "2026-01-02T03:04:05.120000000Z"},
		{time.Date(2026, 1, 2, 4, 4, 5, 7, time.FixedZone("CET", 3600)), "2026-01-02T03:04:05.000000007Z"},
	} {
		got := FormatTime(tc.in)
		if got != tc.want {
			t.Errorf("FormatTime(%v) = %s, want %s", tc.in, got, tc.want)
		}
		if len(got) != len(TimeLayout)-len("Z07:00")+1 {
			t.Errorf("FormatTime(%v) = %s is not of fixed width", tc.in, got)
		}
		back, err := ParseTime(got)
		if err != nil || !back.Equal(tc.in) || back.Location() != time.UTC {
			t.Errorf("ParseTime(%s) = %v, %v; want %v in UTC", got, back, err, tc.in)
		}
	}
}

// TestParseTimeOldLayouts decodes what the kafka adapter wrote before v1
// (time.RFC3339Nano, trailing zeros of the fraction dropped) and RFC 3339
// times with an offset.
func TestParseTimeOldLayouts(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Time{
		"2026-01-02T03:04:05Z":                time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"2026-01-02T03:04:05.12Z":             time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC),
		"2026-01-02T03:04:05.000000006Z":      time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		"2026-01-02T04:04:05.5+01:00":         time.Date(2026, 1, 2, 3, 4, 5, 500000000, time.UTC),
		"2026-01-02T03:04:05.123456789-00:00": time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
	} {
		got, err := ParseTime(in)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%s) = %v, %v; want %v in UTC", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "1735787045", "2026-01-02 03:04:05Z", "2026-01-02T03:04:05"} {
		if _, err := ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) succeeded", in)
		}
	}
}

func TestAppendSortedKeys(t *testing.T) {
	t.Parallel()
	h := map[string]string{"z": "", "a": "", "m": "", "b": ""}
	got := AppendSortedKeys([]string{"keep"}, h)
	if strings.Join(got, " ") != "keep a b m z" {
		t.Errorf("AppendSortedKeys = %v", got)
	}
	if got := AppendSortedKeys(nil, nil); len(got) != 0 {
		t.Errorf("AppendSortedKeys(nil, nil) = %v", got)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const good = "2026-01-02T03:04:05.000000000Z"
	if got, err := Check(errBad, "field", "i", "t", good, true); err != nil || !got.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("Check of a good message = %v, %v", got, err)
	}
	for _, tc := range []struct {
		id, typ, created string
		has              bool
		want             string
	}{
		{"", "t", good, true, `pkg: malformed message: field "id" is missing or empty`},
		{"i", "", good, true, `pkg: malformed message: event "i": field "type" is missing or empty`},
		{"i", "t", "", false, `pkg: malformed message: event "i": field "created_at" is missing`},
		{"i", "t", "yesterday", true, `pkg: malformed message: event "i": field "created_at" is "yesterday", not an RFC 3339 time`},
		{"i", "t", strings.Repeat("x", 1000), true, `not an RFC 3339 time`},
	} {
		_, err := Check(errBad, "field", tc.id, tc.typ, tc.created, tc.has)
		if !errors.Is(err, errBad) || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 200 {
			t.Errorf("Check(%q, %q, %.10q, %v) = %v, want an error wrapping the sentinel with %q", tc.id, tc.typ, tc.created, tc.has, err, tc.want)
		}
	}
}

// TestReadme checks the README's wire-format section against this
// package: it names every field, and its created_at examples are in
// TimeLayout (or, for the Kafka records written before v1, decode).
func TestReadme(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/brokers-and-wire-format.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Wire format\n")
	if !ok {
		t.Fatal(`docs/brokers-and-wire-format.md has no "## Wire format" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, name := range []string{ID, Type, AggregateID, CreatedAt, Payload, HeaderPrefix + "<key>"} {
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("the README's wire format does not name the field `%s`", name)
		}
	}
	times := regexp.MustCompile("`(\\d{4}-\\d\\d-\\d\\dT[^`]*)`").FindAllStringSubmatch(section, -1)
	if len(times) < 2 {
		t.Fatalf("the README's wire format has %d example times, want the current layout and the old Kafka one", len(times))
	}
	for i, m := range times {
		got, err := ParseTime(m[1])
		if err != nil {
			t.Errorf("README example time %s: %v", m[1], err)
			continue
		}
		if i == 0 && FormatTime(got) != m[1] {
			t.Errorf("README example time %s is not in TimeLayout (%s)", m[1], FormatTime(got))
		}
	}
}
