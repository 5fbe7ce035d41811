//go:build unix

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/redisstream"
	"github.com/eventsync/outbox/sqlstore"
)

// relayArgs are what the parent passes a relay process.
type relayArgs struct {
	db, dsn, redisURL, redisAddr, table, prefix string
	broker, kafkaVia                            string
	lease                                       time.Duration
	verbose, idempotent, watermarks             bool
}

func (a relayArgs) flags() []string {
	return []string{"-db", a.db, "-dsn", a.dsn, "-redis", a.redisURL, "-redis-addr", a.redisAddr,
		"-table", a.table, "-prefix", a.prefix, "-lease", a.lease.String(), fmt.Sprintf("-v=%t", a.verbose),
		fmt.Sprintf("-idempotent=%t", a.idempotent), fmt.Sprintf("-watermarks=%t", a.watermarks), "-broker", a.broker, "-kafka-via", a.kafkaVia}
}

// relayMain is a relay process: an outbox.Outbox relay over the run's table,
// publishing to the run's streams, until SIGTERM or SIGINT.
func relayMain(args []string) int {
	var a relayArgs
	fs := flag.NewFlagSet("outbox-chaos relay", flag.ContinueOnError)
	fs.StringVar(&a.db, "db", "postgres", "postgres or mysql")
	fs.StringVar(&a.dsn, "dsn", "", "database DSN (through the parent's proxy)")
	fs.StringVar(&a.redisURL, "redis", "", "Redis URL (for its options)")
	fs.StringVar(&a.redisAddr, "redis-addr", "", "Redis address to dial (the parent's proxy)")
	fs.StringVar(&a.table, "table", "", "outbox table")
	fs.StringVar(&a.prefix, "prefix", "", "stream key prefix")
	fs.DurationVar(&a.lease, "lease", 2*time.Second, "claim lease")
	fs.BoolVar(&a.verbose, "v", false, "log warnings to stderr")
	fs.BoolVar(&a.idempotent, "idempotent", false, "idempotent Redis publication")
	fs.BoolVar(&a.watermarks, "watermarks", false, "delivery recorded per partition")
	fs.StringVar(&a.broker, "broker", "redis", "redis or kafka")
	fs.StringVar(&a.kafkaVia, "kafka-via", "", "Kafka brokers and the parent's proxies in front of them: broker=proxy,...")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := relay(ctx, a); err != nil {
		fmt.Fprintln(os.Stderr, "outbox-chaos relay:", err)
		return 1
	}
	return 0
}

func relay(ctx context.Context, a relayArgs) error {
	var w io.Writer = io.Discard
	if a.verbose {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})).With("pid", os.Getpid())

	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[a.db]
	db, err := sqlx.Open(driver, a.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(5 * time.Second)
	store, err := sqlstore.New(db, storeOptions(a.table, a.watermarks)...)
	if err != nil {
		return err
	}

	var pub outbox.Publisher
	if a.broker == "kafka" {
		kp, err := kafkaPublisher(a.kafkaVia, a.prefix)
		if err != nil {
			return err
		}
		defer kp.Close()
		pub = kp
	} else {
		opt, err := redis.ParseURL(a.redisURL)
		if err != nil {
			return err
		}
		opt.Addr = a.redisAddr
		opt.DialTimeout = 500 * time.Millisecond
		opt.ReadTimeout = time.Second
		opt.WriteTimeout = time.Second
		client := redis.NewClient(opt)
		defer client.Close()
		if pub, err = redisstream.New(client, publisherOptions(a.prefix, a.idempotent)...); err != nil {
			return err
		}
	}

	timeout := a.lease / 2
	ob, err := outbox.New(store, pub,
		outbox.WithInterval(200*time.Millisecond),
		outbox.WithBatchSize(100),
		outbox.WithTimeout(timeout),
		outbox.WithLease(a.lease),
		outbox.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
		outbox.WithMaxAttempts(1_000_000), // faults must never bury an event
		outbox.WithBreaker(3, 50*time.Millisecond, 500*time.Millisecond),
		outbox.WithLogger(log),
	)
	if err != nil {
		return err
	}
	return ob.Run(ctx)
}

// storeOptions are the sqlstore options of the run's table.
func storeOptions(table string, watermarks bool) []sqlstore.Option {
	opts := []sqlstore.Option{sqlstore.WithTable(table)}
	if watermarks {
		opts = append(opts, sqlstore.WithWatermarks())
	}
	return opts
}
