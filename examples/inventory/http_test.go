package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// do sends one request to the API and decodes the JSON answer.
func do(t *testing.T, h http.Handler, method, target, body string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if ct := rec.Header().Get("Content-Type"); ct == "application/json" {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %s", method, target, err, rec.Body)
		}
	}
	return rec.Code, out
}

// events runs GET target on h and returns the JSON list it answers.
func events(t *testing.T, h http.Handler, target string) []map[string]any {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	var out []map[string]any
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s", target, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out == nil {
		t.Fatalf("GET %s: answer is not a JSON list: %v: %s", target, err, rec.Body)
	}
	return out
}

// rows counts what is written: stock rows, reservations, events.
func rows(t *testing.T, a *app) [3]int {
	t.Helper()
	var n [3]int
	for i, table := range []string{a.cfg.stockTable(), a.cfg.reservationsTable(), a.cfg.eventsTable()} {
		if err := a.db.GetContext(context.Background(), &n[i], "SELECT COUNT(*) FROM "+table); err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
	}
	return n
}

func TestPostStock(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()

	code, got := do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":10}`)
	if code != http.StatusOK {
		t.Fatalf("create: %d %v", code, got)
	}
	st := got["stock"].(map[string]any)
	if st["store_id"] != "s1" || st["product_id"] != "p1" || st["quantity"] != 10.0 || st["updated_at"] == "" {
		t.Errorf("stock row: %v", st)
	}
	ev := got["event"].(map[string]any)
	if got["event_id"] == "" || ev["id"] != got["event_id"] || ev["type"] != "stock.created" || ev["published"] != true {
		t.Errorf("event: %v, event_id %v", ev, got["event_id"])
	}
	firstID := got["event_id"].(string)

	code, got = do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":0}`)
	if code != http.StatusOK || got["event"].(map[string]any)["type"] != "stock.updated" {
		t.Fatalf("update: %d %v", code, got)
	}
	if n := rows(t, a); n != [3]int{1, 0, 2} {
		t.Errorf("rows (stock, reservations, events) = %v, want [1 0 2]", n)
	}

	// The first event is synced and carries the stock row as its payload.
	e, err := a.store.Get(context.Background(), firstID)
	if err != nil {
		t.Fatal(err)
	}
	var p stockEvent
	if err := json.Unmarshal(e.Payload, &p); err != nil || p.Quantity != 10 || p.PreviousQuantity != nil || e.AggregateID != "s1/p1" || e.Topic != defaultTopic {
		t.Errorf("event %+v, payload %s (%v)", e, e.Payload, err)
	}
	if e.Delivery.Status() != "synced" {
		t.Errorf("status %s, want synced", e.Delivery.Status())
	}
}

func TestPostReservation(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	if code, got := do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":3}`); code != http.StatusOK {
		t.Fatalf("stock: %d %v", code, got)
	}

	code, got := do(t, h, "POST", "/reservations", `{"store_id":"s1","product_id":"p1","quantity":2}`)
	if code != http.StatusCreated {
		t.Fatalf("reserve: %d %v", code, got)
	}
	r := got["reservation"].(map[string]any)
	if r["id"] == "" || r["quantity"] != 2.0 || got["remaining"] != 1.0 || got["event"].(map[string]any)["type"] != "reservation.created" {
		t.Errorf("reservation answer: %v", got)
	}
	if n := rows(t, a); n != [3]int{1, 1, 2} {
		t.Errorf("rows = %v, want [1 1 2]", n)
	}

	for _, body := range []string{
		`{"store_id":"s1","product_id":"p1","quantity":2}`,   // 1 left
		`{"store_id":"s1","product_id":"nope","quantity":1}`, // no stock at all
		`{"store_id":"s2","product_id":"p1","quantity":1}`,   // another store
	} {
		code, got := do(t, h, "POST", "/reservations", body)
		if code != http.StatusConflict || !strings.Contains(fmt.Sprint(got["error"]), "insufficient stock") {
			t.Errorf("%s: %d %v, want 409 insufficient stock", body, code, got)
		}
	}
	if n := rows(t, a); n != [3]int{1, 1, 2} {
		t.Errorf("after 409s rows = %v, want [1 1 2]: a refusal wrote something", n)
	}
	var q int
	if err := a.db.GetContext(context.Background(), &q, "SELECT quantity FROM stock"); err != nil || q != 1 {
		t.Errorf("stock quantity %d (%v), want 1", q, err)
	}
}

// badBodies are refused by both POST endpoints with 400 and an error that
// contains the given words.
var badBodies = []struct{ name, body, want string }{
	{"empty", ``, "empty"},
	{"not json", `hello`, "not valid JSON"},
	{"truncated", `{"store_id":"s1","product_id":"p1","quantity":`, "ends too soon"},
	{"array", `[1,2]`, "JSON object"},
	{"two values", `{"store_id":"s1","product_id":"p1","quantity":1} {}`, "more than one JSON value"},
	{"unknown field", `{"store_id":"s1","product_id":"p1","quantity":1,"colour":"red"}`, `unknown field "colour"`},
	{"missing store", `{"product_id":"p1","quantity":1}`, "store_id is required"},
	{"missing product", `{"store_id":"s1","quantity":1}`, "product_id is required"},
	{"missing quantity", `{"store_id":"s1","product_id":"p1"}`, "quantity is required"},
	{"null quantity", `{"store_id":"s1","product_id":"p1","quantity":null}`, "quantity is required"},
	{"negative", `{"store_id":"s1","product_id":"p1","quantity":-1}`, "quantity must be at least"},
	{"fraction", `{"store_id":"s1","product_id":"p1","quantity":2.5}`, "quantity must be a whole number"},
	{"exponent", `{"store_id":"s1","product_id":"p1","quantity":1e3}`, "quantity must be a whole number"},
	{"string quantity", `{"store_id":"s1","product_id":"p1","quantity":"3"}`, "quantity must be a whole number"},
	{"huge", `{"store_id":"s1","product_id":"p1","quantity":99999999999999999999}`, "quantity must be a whole number"},
	{"too many", `{"store_id":"s1","product_id":"p1","quantity":1000000001}`, "quantity must be at most"},
	{"number id", `{"store_id":1,"product_id":"p1","quantity":1}`, "store_id must be a string"},
	{"empty id", `{"store_id":"","product_id":"p1","quantity":1}`, "store_id must be"},
	{"slash in id", `{"store_id":"s1","product_id":"a/b","quantity":1}`, "product_id must be"},
	{"oversize", `{"store_id":"s1","product_id":"p1","quantity":1,"pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`, "larger than"},
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	for _, path := range []string{"/stock", "/reservations"} {
		for _, tc := range badBodies {
			code, got := do(t, h, "POST", path, tc.body)
			if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(got["error"]), tc.want) {
				t.Errorf("POST %s %s: %d %v, want 400 mentioning %q", path, tc.name, code, got, tc.want)
			}
		}
	}
	// A reservation of nothing is refused too; a stock level of 0 is not.
	if code, got := do(t, h, "POST", "/reservations", `{"store_id":"s1","product_id":"p1","quantity":0}`); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(got["error"]), "at least 1") {
		t.Errorf("reserve 0: %d %v", code, got)
	}
	if n := rows(t, a); n != [3]int{} {
		t.Errorf("rows after bad input = %v, want nothing written", n)
	}
}

func TestGetEventsAndStats(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":5}`)
	do(t, h, "POST", "/reservations", `{"store_id":"s1","product_id":"p1","quantity":1}`)

	// Take Redis away: the next event is saved and stays pending.
	a.miniredis.Close()
	code, got := do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p2","quantity":7}`)
	if code != http.StatusOK || got["event"].(map[string]any)["published"] != false {
		t.Fatalf("write with Redis down: %d %v", code, got)
	}
	pendingID := got["event_id"]

	if evs := events(t, h, "/events"); len(evs) != 3 {
		t.Fatalf("all events: %v", evs)
	}
	evs := events(t, h, "/events?status=synced&limit=1")
	if len(evs) != 1 || evs[0]["type"] != "reservation.created" {
		t.Fatalf("synced, limit 1 (newest first): %v", evs)
	}
	e := evs[0]
	for _, k := range []string{"id", "type", "aggregate_id", "created_at", "synced_at", "attempts", "last_error"} {
		if _, ok := e[k]; !ok {
			t.Errorf("event lacks %q: %v", k, e)
		}
	}
	if e["synced_at"] == nil || e["aggregate_id"] != "s1/p1" {
		t.Errorf("synced event: %v", e)
	}

	evs = events(t, h, "/events?status=pending")
	if len(evs) != 1 {
		t.Fatalf("pending: %v", evs)
	}
	p := evs[0]
	if p["id"] != pendingID || p["synced_at"] != nil || p["attempts"] != 1.0 || p["last_error"] == "" {
		t.Errorf("pending event: %v", p)
	}
	if evs := events(t, h, "/events?status=dead"); len(evs) != 0 {
		t.Errorf("dead: %v", evs)
	}

	code, got = do(t, h, "GET", "/stats", "")
	if code != http.StatusOK || got["pending"] != 1.0 || got["synced"] != 2.0 || got["dead"] != 0.0 {
		t.Fatalf("stats: %d %v", code, got)
	}
	if s, ok := got["oldest_pending_seconds"].(float64); !ok || s < 0 {
		t.Errorf("oldest_pending_seconds: %v", got["oldest_pending_seconds"])
	}
	if byType := got["pending_by_type"].(map[string]any); byType["stock.created"] != 1.0 {
		t.Errorf("pending_by_type: %v", byType)
	}

	for _, q := range []string{"status=lost", "limit=0", "limit=-1", "limit=abc", "limit=1001", "colour=red"} {
		if code, got := do(t, h, "GET", "/events?"+q, ""); code != http.StatusBadRequest || got["error"] == "" {
			t.Errorf("GET /events?%s: %d %v, want 400", q, code, got)
		}
	}
}

func TestHealthzAndMethods(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	if code, got := do(t, h, "GET", "/healthz", ""); code != http.StatusOK || got["status"] != "ok" {
		t.Errorf("healthz: %d %v", code, got)
	}
	for _, m := range [][2]string{{"GET", "/stock"}, {"PUT", "/reservations"}, {"POST", "/events"}, {"DELETE", "/stats"}} {
		if code, _ := do(t, h, m[0], m[1], ""); code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", m[0], m[1], code)
		}
	}
	if code, _ := do(t, h, "GET", "/nowhere", ""); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}
	// The database gone: unhealthy.
	a.db.Close()
	if code, got := do(t, h, "GET", "/healthz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("healthz with the database closed: %d %v", code, got)
	}
}

// TestRelayRetries: an event saved while Redis is away reaches it after
// Redis is back, through the relay alone.
func TestRelayRetries(t *testing.T) {
	t.Parallel()
	a := newTestApp(t)
	h := a.api.routes()
	a.miniredis.Close()
	startRelay(t, a)
	code, got := do(t, h, "POST", "/stock", `{"store_id":"s1","product_id":"p1","quantity":5}`)
	if code != http.StatusOK || got["event"].(map[string]any)["published"] != false {
		t.Fatalf("write with Redis down: %d %v", code, got)
	}
	if err := a.miniredis.Restart(); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, a, 1)
	if n, err := a.redis.XLen(context.Background(), defaultTopic).Result(); err != nil || n != 1 {
		t.Errorf("stream has %d entries (%v), want 1", n, err)
	}
}

// waitSynced waits until no event is pending and n are synced.
func waitSynced(t *testing.T, a *app, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := a.store.Stats(context.Background(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if s.Pending == 0 && s.Synced == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d pending, %d synced, want 0 and %d", s.Pending, s.Synced, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jsonDecode(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}
