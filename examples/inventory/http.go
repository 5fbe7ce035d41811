package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
)

// Limits on requests.
const (
	maxBodyBytes  = 4 << 10 // a request body larger than this is refused
	maxQuantity   = 1_000_000_000
	defaultLimit  = 50 // GET /events without limit
	maxEventLimit = 1000
)

// idPattern is what a store or product ID may look like: short, and free
// of the "/" that joins them into an aggregate ID.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,100}$`)

// api serves the HTTP API.
type api struct {
	stock        *StockService
	reservations *ReservationService
	events       *sqlstore.Store
	db           *database
	log          *slog.Logger
	metrics      http.Handler // GET /metrics, for Prometheus
	ready        http.Handler // GET /readyz: the outbox keeps up
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /stock", a.postStock)
	mux.HandleFunc("POST /reservations", a.postReservation)
	mux.HandleFunc("GET /events", a.getEvents)
	mux.HandleFunc("GET /stats", a.getStats)
	mux.HandleFunc("GET /healthz", a.getHealth)
	mux.Handle("GET /metrics", a.metrics)
	mux.Handle("GET /readyz", a.ready)
	return mux
}

// itemRequest is the body of POST /stock and POST /reservations.
type itemRequest struct {
	StoreID   *string `json:"store_id"`
	ProductID *string `json:"product_id"`
	Quantity  *int64  `json:"quantity"`
}

type stockResponse struct {
	Stock   Stock    `json:"stock"`
	EventID string   `json:"event_id"`
	Event   EventRef `json:"event"`
}

type reservationResponse struct {
	Reservation Reservation `json:"reservation"`
	Remaining   int64       `json:"remaining"`
	EventID     string      `json:"event_id"`
	Event       EventRef    `json:"event"`
}

func (a *api) postStock(w http.ResponseWriter, r *http.Request) {
	req, err := decodeItem(w, r, 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	st, ref, err := a.stock.UpdateStock(r.Context(), *req.StoreID, *req.ProductID, *req.Quantity)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stockResponse{Stock: st, EventID: ref.ID, Event: ref})
}

func (a *api) postReservation(w http.ResponseWriter, r *http.Request) {
	req, err := decodeItem(w, r, 1)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	res, remaining, ref, err := a.reservations.CreateReservation(r.Context(), *req.StoreID, *req.ProductID, *req.Quantity)
	switch {
	case errors.Is(err, ErrInsufficientStock):
		writeError(w, http.StatusConflict, err)
		return
	case err != nil:
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, reservationResponse{Reservation: res, Remaining: remaining, EventID: ref.ID, Event: ref})
}

// decodeItem reads a JSON body holding exactly store_id, product_id and
// quantity, and checks them; minQuantity is 0 for stock levels and 1 for
// reservations. Its errors are the client's and name the problem.
func decodeItem(w http.ResponseWriter, r *http.Request, minQuantity int64) (itemRequest, error) {
	var req itemRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, jsonError(err)
		}
		return req, errors.New("the body holds more than one JSON value")
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"store_id", req.StoreID}, {"product_id", req.ProductID}} {
		switch {
		case f.v == nil:
			return req, fmt.Errorf("%s is required", f.name)
		case !idPattern.MatchString(*f.v):
			return req, fmt.Errorf("%s must be 1 to 100 letters, digits, '.', '_', ':' or '-'", f.name)
		}
	}
	switch {
	case req.Quantity == nil:
		return req, errors.New("quantity is required")
	case *req.Quantity < minQuantity:
		return req, fmt.Errorf("quantity must be at least %d, got %d", minQuantity, *req.Quantity)
	case *req.Quantity > maxQuantity:
		return req, fmt.Errorf("quantity must be at most %d, got %d", maxQuantity, *req.Quantity)
	}
	return req, nil
}

// jsonError says what is wrong with a body the JSON decoder refused.
func jsonError(err error) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		tooBig *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooBig):
		return fmt.Errorf("the body is larger than %d bytes", tooBig.Limit)
	case errors.Is(err, io.EOF):
		return errors.New("the body is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the body is not valid JSON: it ends too soon")
	case errors.As(err, &syntax):
		return fmt.Errorf("the body is not valid JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Errorf("the body must be a JSON object, not %s", typ.Value)
		}
		if typ.Field == "quantity" {
			return fmt.Errorf("quantity must be a whole number, not %s", typ.Value)
		}
		return fmt.Errorf("%s must be a string, not %s", typ.Field, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return fmt.Errorf("the body is not valid JSON: %v", err)
	}
}

// eventJSON is one event in GET /events.
type eventJSON struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	AggregateID string          `json:"aggregate_id"`
	Status      outbox.Status   `json:"status"`
	CreatedAt   time.Time       `json:"created_at"`
	SyncedAt    *time.Time      `json:"synced_at"`
	Attempts    int             `json:"attempts"`
	LastError   string          `json:"last_error"`
	Payload     json.RawMessage `json:"payload,omitempty"`
}

func (a *api) getEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "status" && k != "limit" && k != "type" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("unknown query parameter %q (want status, type, limit)", k))
			return
		}
	}
	f := sqlstore.ListFilter{Limit: defaultLimit, Type: q.Get("type")}
	switch s := outbox.Status(q.Get("status")); s {
	case "":
	case outbox.StatusPending, outbox.StatusSynced, outbox.StatusDead:
		f.Status = s
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("status %q is not one of pending, synced, dead", s))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEventLimit {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit %q is not a whole number from 1 to %d", v, maxEventLimit))
			return
		}
		f.Limit = n
	}
	events, err := a.events.List(r.Context(), f)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := make([]eventJSON, 0, len(events))
	for _, e := range events {
		j := eventJSON{
			ID: e.ID, Type: e.Type, AggregateID: e.AggregateID, Status: e.Delivery.Status(),
			CreatedAt: e.CreatedAt, Attempts: e.Delivery.Attempts, LastError: e.Delivery.LastError,
		}
		if t := e.Delivery.SyncedAt; !t.IsZero() {
			j.SyncedAt = &t
		}
		if json.Valid(e.Payload) {
			j.Payload = e.Payload
		}
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out) // a JSON list, newest first
}

// statsJSON is the body of GET /stats.
type statsJSON struct {
	Pending              int64            `json:"pending"`
	PendingByType        map[string]int64 `json:"pending_by_type"`
	OldestPendingSeconds float64          `json:"oldest_pending_seconds"`
	Synced               int64            `json:"synced"`
	Dead                 int64            `json:"dead"`
}

func (a *api) getStats(w http.ResponseWriter, r *http.Request) {
	s, err := a.events.Stats(r.Context(), time.Hour)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := statsJSON{
		Pending: int64(s.Pending), PendingByType: map[string]int64{},
		OldestPendingSeconds: s.OldestPendingAge.Seconds(),
		Synced:               int64(s.Synced), Dead: int64(s.Dead),
	}
	for t, n := range s.PendingByType {
		out.PendingByType[t] = int64(n)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) getHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.db.PingContext(ctx); err != nil {
		a.log.Warn("health check failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "database unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// internalError logs err and answers 500 without its details, which may
// hold SQL or addresses.
func (a *api) internalError(w http.ResponseWriter, r *http.Request, err error) {
	a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
