package outboxui

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/eventsync/outbox/sqlstore"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// handler is the console: the pages, the actions and the static files.
type handler struct {
	store *sqlstore.Store
	c     config
	key   []byte
	pages map[string]*template.Template
	log   *slog.Logger
}

// New returns the console over store: an http.Handler that serves its
// pages at the root of the paths it is given, so mount it under a prefix
// with http.StripPrefix (the prefix must end in a slash: links between
// pages are relative). It does no I/O until it serves a request. An
// error is returned only for a bad option.
func New(store *sqlstore.Store, opts ...Option) (http.Handler, error) {
	if store == nil {
		return nil, errors.New("outboxui: nil store")
	}
	c := config{timeout: DefaultTimeout}
	for _, opt := range opts {
		if opt != nil {
			opt(&c)
		}
	}
	switch {
	case c.timeout < 0:
		return nil, fmt.Errorf("outboxui: WithTimeout: %v is negative", c.timeout)
	case c.csrfKey != nil && len(c.csrfKey) < 32:
		return nil, fmt.Errorf("outboxui: WithCSRFKey: a key of %d bytes is shorter than 32", len(c.csrfKey))
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.label == "" {
		c.label = string(store.Dialect()) + " · " + store.Table()
	}
	h := &handler{store: store, c: c, key: c.csrfKey, log: c.logger}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.key == nil {
		h.key = make([]byte, 32)
		_, _ = rand.Read(h.key)
	}
	var err error
	if h.pages, err = parsePages(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET /events", h.events)
	mux.HandleFunc("GET /event", h.event)
	mux.HandleFunc("GET /relays", h.relays)
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	if c.actions {
		mux.HandleFunc("GET /requeue", h.requeueForm)
		mux.HandleFunc("POST /requeue", h.requeue)
		mux.HandleFunc("GET /purge", h.purgeForm)
		mux.HandleFunc("POST /purge", h.purge)
	}
	var out http.Handler = h.guard(mux)
	for i := len(c.middleware) - 1; i >= 0; i-- {
		out = c.middleware[i](out)
	}
	return out, nil
}

// guard refuses, with 403, every request but GET and HEAD when actions
// are off; when they are on, a cross-origin POST (http.CrossOriginProtection)
// and a POST without the CSRF token of its cookie.
func (h *handler) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'")
		w.Header().Set("Referrer-Policy", "same-origin")
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		if !h.c.actions {
			h.refuse(w, r, "actions are disabled in this console")
			return
		}
		if err := cop.Check(r); err != nil {
			h.refuse(w, r, "cross-origin request refused")
			return
		}
		if !h.csrfValid(r) {
			h.refuse(w, r, "missing or invalid CSRF token: reload the page and try again")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, why string) {
	h.log.Warn("outboxui: request refused", "method", r.Method, "path", r.URL.Path, "reason", why, "remote", r.RemoteAddr, "user", user(r))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprintln(w, "403 forbidden:", why)
}

// user names who asked, for the log: the basic-auth user if any.
func user(r *http.Request) string {
	if u, _, ok := r.BasicAuth(); ok {
		return u
	}
	return ""
}

// layout is what every page's frame shows.
type layout struct {
	Title   string
	Label   string
	Nav     string // the current section
	Actions bool
	CSRF    string
	Notice  string
	Now     time.Time
}

// render writes page with data and the frame's fields; an error from the
// template is logged (the status is sent by then).
func (h *handler) render(w http.ResponseWriter, r *http.Request, code int, page string, l layout, data any) {
	l.Label, l.Actions, l.Now = h.c.label, h.c.actions, time.Now().UTC()
	if h.c.actions {
		l.CSRF = h.csrfToken(w, r)
	}
	if l.Notice == "" {
		l.Notice = notice(r.URL.Query())
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	err := h.pages[page].ExecuteTemplate(w, "layout", struct {
		L layout
		D any
	}{l, data})
	if err != nil {
		h.log.Warn("outboxui: render", "page", page, "err", err)
	}
}

// fail shows err as a page with status code.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		h.log.Warn("outboxui: page failed", "path", r.URL.Path, "err", err)
	}
	h.render(w, r, code, "error", layout{Title: http.StatusText(code)}, struct {
		Code int
		Err  string
	}{code, err.Error()})
}

// notice is the message of the action that redirected to this page: a
// fixed sentence per action, with the number it changed.
func notice(q url.Values) string {
	v, err := strconv.Atoi(q.Get("n"))
	if err != nil || v < 0 {
		return ""
	}
	n := strconv.Itoa(v)
	switch q.Get("done") {
	case "requeued":
		return "Re-queued " + n + " event(s): the relays deliver them next."
	case "purged":
		return "Purged " + n + " synced event(s)."
	}
	return ""
}

// ctx bounds the statements of one request.
func (h *handler) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), h.c.timeout)
}
