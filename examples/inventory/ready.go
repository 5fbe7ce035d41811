package main

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/eventsync/outbox"
)

// readyHandler serves the outbox's Ready as an HTTP readiness probe: 200
// with {"ready":true}, or 503 with {"ready":false,"error":"..."}.
func readyHandler(ob *outbox.Outbox, r outbox.Readiness, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), timeout)
		defer cancel()
		body := map[string]any{"ready": true}
		status := http.StatusOK
		if err := ob.Ready(ctx, r); err != nil {
			status, body["ready"], body["error"] = http.StatusServiceUnavailable, false, err.Error()
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(status)
		_ = json.NewEncoder(rw).Encode(body)
	})
}
