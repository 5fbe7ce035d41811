package outbox

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewIDIsSortedUUIDv7(t *testing.T) {
	t.Parallel()
	prev := ""
	seen := map[string]bool{}
	for i := 0; i < 20000; i++ {
		id := NewID()
		if !uuidV7.MatchString(id) {
			t.Fatalf("NewID() = %q, not a UUIDv7", id)
		}
		if seen[id] {
			t.Fatalf("NewID() repeated %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("NewID() = %q after %q: not increasing", id, prev)
		}
		prev = id
	}
	ms := time.Now().UnixMilli()
	id := strings.ReplaceAll(NewID(), "-", "")
	var got int64
	for _, c := range id[:12] {
		got = got<<4 | int64(strings.IndexRune("0123456789abcdef", c))
	}
	if d := got - ms; d < -1000 || d > 1000 {
		t.Fatalf("timestamp in ID is %d ms off now", d)
	}
}

func TestPrepareFillsAndKeeps(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	own := time.Date(2025, 5, 5, 5, 5, 5, 0, time.UTC)
	a := &Event{Topic: "t", Type: "x"}
	b := &Event{ID: "mine", Topic: "t", Type: "x", CreatedAt: own}
	if err := prepare([]*Event{a, b}, 10, now); err != nil {
		t.Fatal(err)
	}
	if !uuidV7.MatchString(a.ID) {
		t.Errorf("generated ID %q", a.ID)
	}
	if !a.CreatedAt.Equal(now.Truncate(time.Microsecond)) || a.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v in UTC", a.CreatedAt, now)
	}
	if b.ID != "mine" || !b.CreatedAt.Equal(own) {
		t.Errorf("caller's ID or time not kept: %q %v", b.ID, b.CreatedAt)
	}
}

func TestPrepareRejects(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 256)
	cases := []struct {
		name  string
		event *Event
		field string
	}{
		{"nil", nil, "event"},
		{"no topic", &Event{Type: "x"}, "Topic"},
		{"no type", &Event{Topic: "t"}, "Type"},
		{"long topic", &Event{Topic: long, Type: "x"}, "Topic"},
		{"long type", &Event{Topic: "t", Type: long}, "Type"},
		{"long aggregate", &Event{Topic: "t", Type: "x", AggregateID: long}, "AggregateID"},
		{"long id", &Event{ID: long[:65], Topic: "t", Type: "x"}, "ID"},
		{"bad utf8", &Event{Topic: "t\xff", Type: "x"}, "Topic"},
		{"payload", &Event{Topic: "t", Type: "x", Payload: make([]byte, 11)}, "Payload"},
		{"empty header key", &Event{Topic: "t", Type: "x", Headers: map[string]string{"": "v"}}, "Headers"},
		{"bad header value", &Event{Topic: "t", Type: "x", Headers: map[string]string{"k": "\xff"}}, "Headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok := &Event{Topic: "t", Type: "x"}
			err := prepare([]*Event{ok, tc.event}, 10, time.Now())
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("err = %v, want a *ValidationError wrapping ErrInvalidEvent", err)
			}
			if ve.Index != 1 || ve.Field != tc.field {
				t.Errorf("error names event %d field %q, want 1 %q (%v)", ve.Index, ve.Field, tc.field, err)
			}
			if ok.ID != "" {
				t.Error("a valid event was changed although the batch was refused")
			}
		})
	}
}

func TestDeliveryStatus(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for want, d := range map[Status]Delivery{
		StatusPending: {Attempts: 3},
		StatusSynced:  {SyncedAt: now},
		StatusDead:    {DeadAt: now},
	} {
		if got := d.Status(); got != want {
			t.Errorf("%+v.Status() = %s, want %s", d, got, want)
		}
	}
}

func FuzzValidate(f *testing.F) {
	f.Add("id", "topic", "type", "agg", []byte("payload"), "k", "v")
	f.Add("", "", "", "", []byte{}, "", "")
	f.Add("\xff", "t", "x", "a", []byte{0}, "k", "\xff")
	f.Fuzz(func(t *testing.T, id, topic, typ, agg string, payload []byte, hk, hv string) {
		e := &Event{ID: id, Topic: topic, Type: typ, AggregateID: agg, Payload: payload, Headers: map[string]string{hk: hv}}
		err := prepare([]*Event{e}, 64, time.Now())
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if e.ID == "" || e.CreatedAt.IsZero() || e.Topic == "" || e.Type == "" || len(e.Payload) > 64 {
			t.Fatalf("accepted an event it should have refused or left unfilled: %+v", e)
		}
	})
}
