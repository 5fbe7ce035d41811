// Command inventory is the inventory service the outbox SDK grew out of,
// written against the SDK as any user would. Stock changes and
// reservations are written with their events in one transaction, published
// at once, and retried by the outbox's relay when the broker is down.
//
//	go run ./examples/inventory        # serve the HTTP API
//	go run ./examples/inventory demo   # run the scripted story and report
//
// Configuration comes from the environment; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long a stopping server waits for requests in
// flight.
const shutdownTimeout = 15 * time.Second

const usage = `usage: inventory [demo]

  inventory        serve the HTTP API (configured by environment, see README.md)
  inventory demo   run a scripted story on a temporary SQLite file and an
                   in-process Redis, print a report, exit non-zero on failure
`

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch {
	case len(args) == 0:
	case len(args) == 1 && args[0] == "demo":
		level := slog.LevelError // the report tells the story; LOG_LEVEL=info adds the logs
		if v, ok := lookup(envLogLevel); ok && v != "" {
			l, err := parseLevel(strings.ToLower(v))
			if err != nil {
				fmt.Fprintf(stderr, "inventory: %s: %v\n", envLogLevel, err)
				return 2
			}
			level = l
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
		routeRedisLogs(log)
		if err := runDemo(ctx, stdout, log); err != nil {
			fmt.Fprintf(stderr, "inventory demo: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}

	cfg, err := loadConfig(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "inventory: bad configuration:\n%v\n", err)
		return 2
	}
	level, _ := parseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	routeRedisLogs(log)
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("inventory stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the service until ctx ends (SIGINT or SIGTERM in main): it
// then stops taking requests, waits for those in flight, lets the relay
// finish its batch, and closes the database and the broker connection.
// ready, if set, is called with the listening address.
func serve(ctx context.Context, cfg config, log *slog.Logger, ready func(addr string)) error {
	a, err := newApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := a.close(); err != nil {
			log.Warn("close", "err", err)
		}
	}()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", envHTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           a.api.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	// The relay outlives the signal: it stops only after the last request
	// has been answered, so it sees every event those requests saved.
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan error, 1)
	go func() { relayDone <- a.run(relayCtx) }()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("inventory listening", "addr", "http://"+ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new requests, finishing those in flight")
	case serveErr = <-served:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP shutdown", "err", err)
	}
	stopRelay()
	if err := <-relayDone; err != nil {
		log.Warn("relay", "err", err)
	}
	log.Info("relay stopped; closing the database and the broker connection")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// parseLevel reads LOG_LEVEL.
func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
