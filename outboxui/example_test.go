package outboxui_test

import (
	"log"
	"log/slog"
	"net/http"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/eventsync/outbox/outboxui"
	"github.com/eventsync/outbox/sqlstore"
)

// requireOperator stands for the service's own authentication.
func requireOperator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, _, ok := r.BasicAuth(); !ok || user != "ops" {
			w.Header().Set("WWW-Authenticate", `Basic realm="outbox"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Mount the console under /outbox/ of a service's mux, behind the
// service's authentication, with the actions on.
func Example() {
	db, err := sqlx.Open("pgx", "postgres://app@127.0.0.1:5432/orders")
	if err != nil {
		log.Fatal(err)
	}
	store, err := sqlstore.New(db)
	if err != nil {
		log.Fatal(err)
	}
	console, err := outboxui.New(store,
		outboxui.WithActions(true),
		outboxui.WithMiddleware(requireOperator),
		outboxui.WithLogger(slog.Default()),
		// In the process that runs the relay: outboxui.WithBreaker(o.Breaker),
	)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/outbox/", http.StripPrefix("/outbox", console))
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", mux))
}
