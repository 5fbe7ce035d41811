// Command outbox inspects and operates the outbox table of a service:
// the figures operators watch, the pending and dead events, re-queueing
// dead events, purging old synced ones, and the schema.
//
//	outbox status   --db URL [--window 1h] [--partitions N] [--json]
//	outbox list     --db URL [--status pending|dead|synced|all] [--type T] [--limit N] [--json]
//	outbox show     --db URL [--json] ID
//	outbox requeue  --db URL (--id ID ... | --type T | --all) [--dry-run] [--rate N] [--batch N]
//	outbox purge    --db URL --older-than 720h [--batch N]
//	outbox migrate  --db URL [--print | --time-partitions 24h [--ahead 48h]] | migrate --print --dialect postgres|mysql|sqlite
//	outbox ui       --db URL [--listen 127.0.0.1:8089] [--actions] [--user NAME]
//
// URL is postgres://user:pass@host:5432/db?sslmode=disable,
// mysql://user:pass@host:3306/db (or mysql://user:pass@tcp(host:3306)/db)
// or sqlite:PATH; it defaults to $OUTBOX_DATABASE_URL. Every command takes
// --table (default outbox_events) and --timeout (default 30s). Exit status:
// 0 on success, 1 when the command failed, 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite"

	"github.com/eventsync/outbox/sqlstore"
)

// EnvDatabaseURL is read when --db is not given.
const EnvDatabaseURL = "OUTBOX_DATABASE_URL"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := runContext(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args (without the program name), writing
// results to stdout and errors to stderr, and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

const usage = `usage: outbox COMMAND [flags]

Commands:
  status    pending (by type), oldest pending age, dead, synced, sync latency, partitions
  list      list pending, dead or synced events
  show      show one event with its payload, headers and delivery state
  requeue   give dead events back to the relay
  purge     delete events synced longer ago than a duration, in batches
  migrate   create or upgrade the outbox table, or print its schema
  ui        serve the operator console in the browser (loopback by default)

Database URLs: ` + urlForms + `
(--db, or $` + EnvDatabaseURL + `). Run "outbox COMMAND -h" for a command's flags.
`

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// command is one subcommand. Every command goes through env.start: parse
// the flags and arguments, check them, open the database, then run.
type command struct {
	// define declares the command's own flags on fs (beside --db, --table
	// and --timeout, which every command has) and returns its body.
	define func(fs *flag.FlagSet) body
	// needsTable: after connecting, check that the table is at the schema
	// version this tool knows.
	needsTable bool
}

// body is a command whose flags are declared.
type body struct {
	// takesArgs lets arguments follow the flags, for check to judge;
	// otherwise any argument is a usage error.
	takesArgs bool
	// check, if set, judges the parsed flags and arguments before the
	// database is opened; its errors are usage errors.
	check func(e *env, args []string) error
	// offline, if set, points to a flag that, when true, has the command
	// run without opening the database (migrate --print).
	offline *bool
	// run does the work, with e.store open unless offline.
	run func(ctx context.Context, e *env, args []string) error
}

var commands = map[string]command{
	"status":  {statusCommand, true},
	"list":    {listCommand, true},
	"show":    {showCommand, true},
	"requeue": {requeueCommand, true},
	"purge":   {purgeCommand, true},
	"migrate": {migrateCommand, false},
	"ui":      {uiCommand, true},
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "outbox: unknown command %q\n\n%s", name, usage)
		return 2
	}
	e := &env{name: name, stdout: stdout, stderr: stderr, needsTable: cmd.needsTable}
	err := e.start(ctx, cmd, args[1:])
	e.close()
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "outbox %s: %v\n", name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "outbox %s: %v\n", name, err)
		return 1
	}
}

// env is what a command works with: its flags, and once open, the store.
type env struct {
	name           string
	stdout, stderr io.Writer
	needsTable     bool

	dbURL   string
	table   string
	timeout time.Duration

	db    *sqlx.DB
	dbase *database
	store *sqlstore.Store
	// timeParts: the table's time partitions, read by open.
	timeParts sqlstore.TimePartitionStatus
}

// start runs cmd with args: it parses them, flags and arguments in any
// order, has the command check them, opens the database and runs the
// command.
func (e *env) start(ctx context.Context, cmd command, args []string) error {
	fs := flag.NewFlagSet("outbox "+e.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.dbURL, "db", os.Getenv(EnvDatabaseURL), "database URL: "+urlForms+" (default $"+EnvDatabaseURL+")")
	fs.StringVar(&e.table, "table", sqlstore.DefaultTable, "the outbox table")
	fs.DurationVar(&e.timeout, "timeout", 30*time.Second, "time limit of each database statement")
	b := cmd.define(fs)
	rest, err := parseAnyOrder(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 && !b.takesArgs {
		return usagef("unexpected arguments %q", rest)
	}
	if b.check != nil {
		if err := b.check(e, rest); err != nil {
			return err
		}
	}
	if b.offline == nil || !*b.offline {
		if err := e.open(ctx); err != nil {
			return err
		}
	}
	return b.run(ctx, e, rest)
}

// parseAnyOrder parses args into fs, flags and arguments in any order,
// and returns the arguments.
func parseAnyOrder(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// open connects to the database and, for commands that need the table,
// checks that it is at the schema version this tool knows, and opens it
// WithWatermarks when relays with watermarks deliver from it, and
// WithTimePartitions when it is partitioned by save time.
func (e *env) open(ctx context.Context) error {
	if e.dbURL == "" {
		return usagef("no database: pass --db URL or set %s (%s)", EnvDatabaseURL, urlForms)
	}
	d, err := parseDB(e.dbURL)
	if err != nil {
		return usageError{err.Error()}
	}
	e.dbase = d
	if d.dialect == sqlstore.SQLite && e.needsTable && !fileExists(d.path) {
		return fmt.Errorf("no SQLite database at %s (run \"outbox migrate\" to create one)", d.path)
	}
	db, err := sqlx.Open(d.driver, d.dsn)
	if err != nil {
		return fmt.Errorf("open %s: %w", redact(e.dbURL), err)
	}
	e.db = db
	if err := do(ctx, e, db.PingContext); err != nil {
		return fmt.Errorf("cannot connect to %s: %w", redact(e.dbURL), err)
	}
	s, err := sqlstore.New(db, sqlstore.WithDialect(d.dialect), sqlstore.WithTable(e.table))
	if err != nil {
		return usageError{err.Error()}
	}
	e.store = s
	if !e.needsTable {
		return nil
	}
	latest, err := sqlstore.LatestVersion(d.dialect)
	if err != nil {
		return err
	}
	v, err := bounded(ctx, e, s.Version)
	switch {
	case err != nil:
		return notSetUp(ctx, e, d.dialect, err)
	case v < latest:
		return fmt.Errorf("table %s is at schema version %d, this tool needs %d: run \"outbox migrate\" (with this version of the tool)", e.table, v, latest)
	case v > latest:
		return fmt.Errorf("table %s is at schema version %d, newer than this tool knows (%d): %w", e.table, v, latest, sqlstore.ErrSchemaTooNew)
	}
	// Relays with watermarks record delivery per partition: read the
	// table as they write it, or their deliveries would read as pending.
	// A table partitioned by save time is purged by dropping partitions.
	marks, err := bounded(ctx, e, s.WatermarksInUse)
	if err != nil {
		return err
	}
	tp, err := bounded(ctx, e, s.TimePartitions)
	if err != nil {
		return err
	}
	e.timeParts = tp
	opts := []sqlstore.Option{sqlstore.WithDialect(d.dialect), sqlstore.WithTable(e.table)}
	if marks {
		opts = append(opts, sqlstore.WithWatermarks())
	}
	if tp.Partitioned {
		opts = append(opts, sqlstore.WithTimePartitions(0, 0))
	}
	if len(opts) == 2 {
		return nil
	}
	if e.store, err = sqlstore.New(db, opts...); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

func (e *env) close() {
	if e.db != nil {
		_ = e.db.Close()
	}
}

// bounded runs one database statement, f, within --timeout. Every
// statement a command makes goes through it (or call, or do).
func bounded[T any](ctx context.Context, e *env, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	return f(ctx)
}

// call runs f(ctx, a), a store method of one argument, within --timeout.
func call[A, T any](ctx context.Context, e *env, f func(context.Context, A) (T, error), a A) (T, error) {
	return bounded(ctx, e, func(ctx context.Context) (T, error) { return f(ctx, a) })
}

// do runs f, a statement with no result, within --timeout.
func do(ctx context.Context, e *env, f func(context.Context) error) error {
	_, err := bounded(ctx, e, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

func (e *env) printf(format string, args ...any) { fmt.Fprintf(e.stdout, format, args...) }

// splitList splits comma-separated values.
func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }
