package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/eventsync/outbox/outboxui"
)

// EnvUIPassword holds the password of `outbox ui --user`: a flag would
// show it to every user of the machine in the process list.
const EnvUIPassword = "OUTBOX_UI_PASSWORD"

// DefaultUIListen is where `outbox ui` listens unless told otherwise:
// loopback only.
const DefaultUIListen = "127.0.0.1:8089"

func uiCommand(fs *flag.FlagSet) body {
	listen := fs.String("listen", DefaultUIListen, "address to serve the console on; an address beyond loopback needs --user")
	actions := fs.Bool("actions", false, "enable the actions: re-queue dead events, purge synced ones (off: read only)")
	userName := fs.String("user", "", "require HTTP basic auth as this user, with the password in $"+EnvUIPassword)
	return body{
		check: func(*env, []string) error {
			if *userName != "" && os.Getenv(EnvUIPassword) == "" {
				return usagef("--user %s needs a password in $%s", *userName, EnvUIPassword)
			}
			loop, err := loopback(*listen)
			if err != nil {
				return usagef("--listen %q: %v", *listen, err)
			}
			if !loop && *userName == "" {
				return usagef("--listen %s reaches beyond this machine: set --user (and $%s) for basic auth, or listen on loopback", *listen, EnvUIPassword)
			}
			return nil
		},
		run: func(ctx context.Context, e *env, _ []string) error {
			return serveUI(ctx, e, *listen, *actions, *userName, os.Getenv(EnvUIPassword))
		},
	}
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// serveUI serves the console until ctx ends.
func serveUI(ctx context.Context, e *env, listen string, actions bool, user, password string) error {
	logger := slog.New(slog.NewTextHandler(e.stderr, nil))
	opts := []outboxui.Option{
		outboxui.WithActions(actions), outboxui.WithLogger(logger), outboxui.WithTimeout(e.timeout),
		outboxui.WithLabel(uiLabel(e.dbURL) + " · " + e.table),
	}
	if user != "" {
		opts = append(opts, outboxui.WithMiddleware(basicAuth(user, password)))
	}
	h, err := outboxui.New(e.store, opts...)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	mode := "read only"
	if actions {
		mode = "actions on"
	}
	e.printf("outbox ui: serving http://%s/ (%s); stop with Ctrl-C\n", ln.Addr(), mode)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shut); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// uiLabel names the database for the console's pages: scheme, user, host
// and database of the URL, never its password or parameters.
func uiLabel(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "database"
	}
	if u.Opaque != "" { // sqlite:PATH
		return u.Scheme + ":" + u.Opaque
	}
	if u.Host == "" {
		return u.Scheme + ":" + u.Path
	}
	who := ""
	if u.User != nil && u.User.Username() != "" {
		who = u.User.Username() + "@"
	}
	return fmt.Sprintf("%s://%s%s%s", u.Scheme, who, u.Host, u.Path)
}

// basicAuth requires HTTP basic auth as user with password, compared in
// constant time.
func basicAuth(user, password string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(user + "\x00" + password))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			got := sha256.Sum256([]byte(u + "\x00" + p))
			if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="outbox", charset="UTF-8"`)
				http.Error(w, "401 unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
