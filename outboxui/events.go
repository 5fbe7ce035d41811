package outboxui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// states are the tabs of the events page, in order.
var states = []sqlstore.State{sqlstore.StatePending, sqlstore.StateFailed, sqlstore.StateDead, sqlstore.StateSynced}

// timeForm is how the filter form writes times: an <input
// type="datetime-local">, read as UTC.
const timeForm = "2006-01-02T15:04"

// filter is the events page's query: a state and the filters.
type filter struct {
	State                    sqlstore.State
	Type, Topic, AggregateID string
	From, To                 string // as typed, timeForm
	After                    string
}

// parseFilter reads the filter of the events page (and of the re-queue
// form) from v.
func parseFilter(v url.Values) (filter, sqlstore.PageQuery, error) {
	f := filter{
		State: sqlstore.State(v.Get("state")), Type: strings.TrimSpace(v.Get("type")),
		Topic: strings.TrimSpace(v.Get("topic")), AggregateID: strings.TrimSpace(v.Get("aggregate")),
		From: strings.TrimSpace(v.Get("from")), To: strings.TrimSpace(v.Get("to")), After: v.Get("after"),
	}
	if f.State == "" {
		f.State = sqlstore.StatePending
	}
	if !slices.Contains(states, f.State) {
		return f, sqlstore.PageQuery{}, fmt.Errorf("unknown state %q", f.State)
	}
	pq := sqlstore.PageQuery{State: f.State, Type: f.Type, Topic: f.Topic, AggregateID: f.AggregateID, After: f.After}
	for _, t := range []struct {
		in  string
		out *time.Time
	}{{f.From, &pq.From}, {f.To, &pq.To}} {
		if t.in == "" {
			continue
		}
		at, err := time.Parse(timeForm, t.in)
		if err != nil {
			if at, err = time.Parse(time.RFC3339, t.in); err != nil {
				return f, pq, fmt.Errorf("time %q: want YYYY-MM-DDTHH:MM (UTC)", t.in)
			}
		}
		*t.out = at.UTC()
	}
	return f, pq, nil
}

// query writes f back as a query string, with state st, without the
// cursor unless after is set.
func (f filter) query(st sqlstore.State, after string) template.URL {
	v := url.Values{"state": {string(st)}}
	for k, s := range map[string]string{"type": f.Type, "topic": f.Topic, "aggregate": f.AggregateID, "from": f.From, "to": f.To, "after": after} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return template.URL(v.Encode())
}

// Filtered reports whether any filter narrows the view.
func (f filter) Filtered() bool {
	return f.Type != "" || f.Topic != "" || f.AggregateID != "" || f.From != "" || f.To != ""
}

type tab struct {
	State   sqlstore.State
	Query   template.URL
	Current bool
}

type eventsData struct {
	F      filter
	Tabs   []tab
	Page   sqlstore.Page
	Next   template.URL // "" on the last page
	First  template.URL // the first page, when this is not it
	Self   template.URL // the current filter, without cursor
	States []sqlstore.State
}

func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	f, pq, err := parseFilter(r.URL.Query())
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	p, err := h.store.Page(ctx, pq)
	if errors.Is(err, sqlstore.ErrBadCursor) {
		h.fail(w, r, http.StatusBadRequest, err)
		return
	}
	if errors.Is(err, context.DeadlineExceeded) && f.Filtered() {
		h.fail(w, r, http.StatusServiceUnavailable, fmt.Errorf("these filters did not fill a page within %v: "+
			"only the state is indexed, and the filters match few of its events; narrow it with a creation time range (%w)", h.c.timeout, err))
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	d := eventsData{F: f, Page: p, Self: f.query(f.State, ""), States: states}
	for _, st := range states {
		d.Tabs = append(d.Tabs, tab{State: st, Query: f.query(st, ""), Current: st == f.State})
	}
	if p.Next != "" {
		d.Next = f.query(f.State, p.Next)
	}
	if f.After != "" {
		d.First = d.Self
	}
	h.render(w, r, http.StatusOK, "events", layout{Title: "Events: " + string(f.State), Nav: "events"}, d)
}

type header struct{ Key, Value string }

type eventData struct {
	E        sqlstore.PageEvent
	Status   outbox.Status
	Failed   bool
	Headers  []header
	Payload  string
	Format   string // "JSON", "text" or "bytes (hex)"
	Size     int
	Redirect string
}

func (h *handler) event(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if id == "" {
		h.fail(w, r, http.StatusBadRequest, errors.New("no event ID (?id=…)"))
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	e, err := h.store.Locate(ctx, id)
	if errors.Is(err, sqlstore.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, err)
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err)
		return
	}
	d := eventData{E: e, Status: e.Delivery.Status(), Size: len(e.Payload)}
	d.Failed = d.Status == outbox.StatusPending && e.Delivery.Attempts > 0
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) {
		d.Headers = append(d.Headers, header{k, e.Headers[k]})
	}
	d.Payload, d.Format = showPayload(e.Payload)
	h.render(w, r, http.StatusOK, "event", layout{Title: "Event " + e.ID, Nav: "events"}, d)
}

// maxShown caps the payload bytes an event page shows.
const maxShown = 256 << 10

// showPayload returns the payload as an event page shows it: indented
// JSON when it is JSON, text when it is UTF-8, else hexadecimal.
func showPayload(p []byte) (string, string) {
	cut := ""
	if len(p) > maxShown {
		p, cut = p[:maxShown], fmt.Sprintf("\n… (%d bytes shown)", maxShown)
	}
	if json.Valid(p) {
		var b bytes.Buffer
		if err := json.Indent(&b, p, "", "  "); err == nil {
			return b.String(), "JSON"
		}
	}
	if utf8.Valid(p) {
		return string(p) + cut, "text"
	}
	var b strings.Builder
	for i, c := range p {
		if i > 0 && i%32 == 0 {
			b.WriteByte('\n')
		} else if i > 0 && i%2 == 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return b.String() + cut, "bytes (hex)"
}
