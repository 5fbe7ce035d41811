//go:build unix

// Command outbox-chaos proves the outbox's guarantees under faults. It
// starts several relay processes (this binary, re-executed with the relay
// subcommand) over one real database table, writes events from several
// writer goroutines in business transactions (some rolled back on
// purpose), and has the relays publish to a real broker through a TCP
// proxy it controls. Meanwhile it injects faults on a seeded random
// schedule: it SIGKILLs relays and starts new ones, cuts and restores the
// broker and database connections, pauses a relay (SIGSTOP) past its lease
// and resumes it, and slows the broker.
//
// At the end it heals everything, waits for the table to drain, reads the
// broker back and checks every committed event: delivered at least once,
// per-aggregate order intact after dropping duplicates by ID, no
// rolled-back event delivered, none still pending. It prints one JSON line
// and exits 1 if an event was lost, delivered out of order or delivered
// without being committed (2 on a setup error).
//
// Usage:
//
//	outbox-chaos [-short | -long] [flags]
//
// The database is Postgres (-db postgres, DSN from -dsn or
// OUTBOX_TEST_POSTGRES) or MySQL/MariaDB (-db mysql, OUTBOX_TEST_MYSQL);
// the broker is Redis (-redis or OUTBOX_TEST_REDIS) or, with -broker
// kafka, Kafka: the brokers of -kafka or OUTBOX_TEST_KAFKA, or else an
// in-process kfake cluster. Each run works in a table and stream keys or
// topics of its own, named after a random run ID, and drops or deletes
// only those.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// roleEnv tells a re-executed process to be a relay; the relay subcommand
// does the same for the built binary (a test binary cannot take a
// subcommand before its own flags).
const roleEnv = "OUTBOX_CHAOS_ROLE"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		os.Exit(relayMain(os.Args[2:]))
	}
	if os.Getenv(roleEnv) == "relay" {
		os.Exit(relayMain(os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox-chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "outbox-chaos:", err)
		os.Exit(2)
	}
	fmt.Println(res.JSON())
	if !res.OK() {
		os.Exit(1)
	}
}

// parseFlags reads the command line into a Config.
func parseFlags(args []string) (Config, error) {
	fs := flag.NewFlagSet("outbox-chaos", flag.ContinueOnError)
	short := fs.Bool("short", false, "the CI run: about a minute, 3,000 events, 20+ faults")
	long := fs.Bool("long", false, "the long run: 100,000 events, hundreds of faults")
	cfg := ShortConfig()
	fs.StringVar(&cfg.DB, "db", cfg.DB, "database: postgres or mysql (MySQL/MariaDB)")
	fs.StringVar(&cfg.DSN, "dsn", "", "database DSN (default: OUTBOX_TEST_POSTGRES or OUTBOX_TEST_MYSQL)")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "broker: redis or kafka")
	fs.StringVar(&cfg.RedisURL, "redis", "", "Redis URL (default: OUTBOX_TEST_REDIS)")
	kafkaAddrs := fs.String("kafka", "", "Kafka bootstrap brokers, host:port,... (default: OUTBOX_TEST_KAFKA, else an in-process kfake cluster)")
	events := fs.Int("events", 0, "committed events to write (default: by mode)")
	dur := fs.Duration("duration", 0, "how long to write and inject faults (default: by mode)")
	fs.IntVar(&cfg.Writers, "writers", cfg.Writers, "writer goroutines")
	fs.IntVar(&cfg.Relays, "relays", cfg.Relays, "relay processes")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule and the workload (default: from the clock)")
	fs.BoolVar(&cfg.Verbose, "v", false, "log faults and relay warnings to stderr")
	fs.BoolVar(&cfg.Idempotent, "idempotent", false, "publish with idempotent Redis publication; then any duplicate at the broker fails the run")
	fs.BoolVar(&cfg.Watermarks, "watermarks", false, "relays record delivery per partition (sqlstore.WithWatermarks; Postgres)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *short && *long {
		return Config{}, fmt.Errorf("-short and -long exclude each other")
	}
	if *long {
		l := LongConfig()
		l.DB, l.DSN, l.RedisURL, l.Writers, l.Relays, l.Seed, l.Verbose = cfg.DB, cfg.DSN, cfg.RedisURL, cfg.Writers, cfg.Relays, cfg.Seed, cfg.Verbose
		l.Idempotent, l.Broker, l.Watermarks = cfg.Idempotent, cfg.Broker, cfg.Watermarks
		cfg = l
	}
	if *events > 0 {
		cfg.Events = *events
	}
	if *dur > 0 {
		cfg.Duration = *dur
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	if cfg.DSN == "" {
		switch cfg.DB {
		case "postgres":
			cfg.DSN = os.Getenv("OUTBOX_TEST_POSTGRES")
		case "mysql":
			cfg.DSN = os.Getenv("OUTBOX_TEST_MYSQL")
		}
	}
	if cfg.RedisURL == "" {
		cfg.RedisURL = os.Getenv("OUTBOX_TEST_REDIS")
	}
	if *kafkaAddrs == "" {
		*kafkaAddrs = os.Getenv("OUTBOX_TEST_KAFKA")
	}
	if *kafkaAddrs != "" {
		cfg.KafkaBrokers = strings.Split(*kafkaAddrs, ",")
	}
	return cfg, cfg.validate()
}
