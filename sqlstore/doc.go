// Package sqlstore keeps outbox events in the service's own SQL database:
// it implements outbox.Store on github.com/jmoiron/sqlx for PostgreSQL,
// MySQL/MariaDB and SQLite.
//
// # Supported databases
//
//   - PostgreSQL 12 or later, through github.com/jackc/pgx/v5/stdlib
//     (driver name "pgx") or github.com/lib/pq ("postgres").
//   - MySQL 8.0 or later and MariaDB 10.6 or later (both need SKIP
//     LOCKED), through github.com/go-sql-driver/mysql ("mysql").
//   - SQLite 3.35 or later (UPDATE ... RETURNING), through
//     modernc.org/sqlite ("sqlite", no cgo) or github.com/mattn/go-sqlite3
//     ("sqlite3").
//
// The package imports no driver: the program does, and New tells the
// dialect from the driver name (or from WithDialect).
//
// # Setup
//
//	db, err := sqlx.Open("pgx", "postgres://app@db:5432/app")
//	...
//	store, err := sqlstore.New(db) // or New(db, sqlstore.WithTable("app.outbox"))
//	...
//	if err := store.Migrate(ctx); err != nil { ... }
//	o, err := outbox.New(store, publisher)
//
// Migrate creates the table (default "outbox_events") and its indexes and
// records the applied version in "<table>_migrations". It is idempotent
// and safe to call from every instance at start-up. Teams that run their
// own migration tool can apply the embedded files instead (see Schema, or
// the migrations directory of this package: plain NNN_name.up.sql files
// that name the table outbox_events). On MySQL/MariaDB DDL commits
// implicitly, so a tool that dies between a migration's ALTER TABLE and
// recording its version leaves it applied but unrecorded, and re-running
// the file then fails ("Duplicate column name" or "Duplicate key name"):
// each ALTER TABLE applies whole, so record the version by hand, or run
// only its clauses whose column or index information_schema does not
// show. Migrate does that by itself. Drop removes what Migrate created
// (both tables and, on Postgres, the <table>_notify() trigger function,
// which DROP TABLE leaves behind), for tests and teardown.
//
// # Writing events
//
// Insert, which outbox.Outbox.Save calls, writes through the caller's
// *sql.Tx or *sqlx.Tx in one multi-row INSERT and never commits: the
// events exist exactly when the business transaction commits. An ended
// transaction gives an error wrapping sql.ErrTxDone.
//
// # How relays share the table
//
// Relays own partitions of the table rather than leasing rows. Every
// event belongs to one of 64 partitions (SQLite: one), which the database
// computes when the row is inserted from its aggregate ID (the first 32
// bits of its MD5, modulo 64), so an aggregate's events all share one.
// The table <table>_partitions has a row per partition: its owner, a
// fencing token raised each time it changes hands, and a lease on the
// database's clock; <table>_relays lists the relays and how long each
// counts as alive.
//
// A relay proves itself alive with a heartbeat (Heartbeat, which
// outbox.Outbox.Run calls in a goroutine of its own), every second by
// default and apart from its claims: one short transaction on the
// database's clock that renews its membership and its partitions' leases
// for three seconds, and rebalances. The fair share is the partition
// count over the relays whose heartbeat is current, rounded up. Below
// it, a relay takes free partitions: given back, or whose owner's lease
// ran out. Beyond it, a relay drains partitions: it claims nothing more
// from them, decided under the same lock its claims take under, and
// gives each back once nothing of it is in flight. So a partition
// changes hands only after its owner stopped claiming it (the
// publication right after commit included) and finished what it held: a
// join or a leave (Leave, which Run calls when it stops) causes no
// duplicate and no reordering. A relay killed without leaving has its
// partitions taken over within its time to live and one heartbeat (4 s
// by default; WithHeartbeat sets both, and what each heartbeat costs).
//
// A relay's claims read the due events of its partitions in order and
// write nothing to them: no other relay reads those partitions.
// MarkSynced and Fail change only rows whose partition the Store still
// owns under the token the claim was made under, checked in the same
// statement under a share lock of the partition's row, so a relay paused
// past its lease changes nothing once another took over (and that relay
// publishes the events again: a duplicate only under that fault). Each
// event is written once, when it is marked. Within one Store, claims
// running at once are kept apart in memory. A claim by IDs (the
// publication right after a commit) takes the events of the Store's own
// partitions that way; for an event whose partition no live relay owns
// (a process that publishes but runs no relay) it leases the row,
// reading the partition's row under a share lock so that a relay taking
// the partition waits for it, and owners pass over leased rows. An event
// of a partition another live relay owns is left to that relay, which
// Postgres's notification wakes at once (MySQL and SQLite relays find it
// at their next pass).
//
// The protocol is written down as a model (relay.pml beside this file,
// checked by spin in the tests), with the same names as the code
// (ledger.go holds its rules, membership.go its heartbeat).
//
// Every bulk read of a relay starts from the oldest pending event of its
// partitions. (Earlier versions read on from where the last read stopped,
// on Postgres; that passed over an event whose transaction took its seq
// before the read passed it and committed after, and the next event of
// its aggregate went first.)
//
// WithRowLeases keeps the protocol of earlier versions: each claim leases
// its rows under a token (FOR UPDATE SKIP LOCKED on Postgres and MySQL).
// No transaction stays open while a relay talks to the broker, in either
// protocol.
//
// # Upgrading relays to partition ownership
//
// The migration that adds partitions (006 on Postgres, 005 on MySQL and
// SQLite) adds a stored generated column, which rewrites the table (on
// Postgres under an exclusive lock; purge first so the table is small),
// and the two tables. Events saved by any version of the package get
// their partition from the database, so processes that only save need no
// care. Relays of the two protocols must not run against the table at
// the same time: a relay of an earlier version does not know partitions
// and could publish an event an owner is publishing. Either stop the old
// relays, migrate, and start the new ones (events wait meanwhile, none is
// lost), or roll out the new version with WithRowLeases, and once no old
// relay is left restart the relays without it.
//
// # Order and priority
//
// By default (storage.ClaimRequest.Unordered false) a claim keeps
// per-aggregate order: an event with a non-empty aggregate ID is claimed
// only together with, or after the delivery of, every earlier (lower seq)
// undelivered event of its aggregate. While one of those is leased by
// another relay, backing off after a failure, or buried (unless
// ClaimRequest.SkipDead), the aggregate's later events wait; other
// aggregates never do. Among claimable events, higher Event.Priority goes
// first, then lower seq; an event behind earlier events of its aggregate
// with another priority waits for them, so priority never reorders an
// aggregate. Events with an empty aggregate ID are unordered. Claims by
// ID (the immediate publication after commit) follow the same rule and
// leave an event to the relay when an earlier one of its aggregate is
// still undelivered.
//
// The order is seq order among committed rows. Sequence values are taken
// when rows are inserted but become visible when their transaction
// commits, so a row with a lower seq can appear after a higher one was
// already claimed and published. Two events of one aggregate written by
// concurrent transactions are delivered in seq order only if the business
// transactions serialise on the aggregate (for example, each locks or
// updates the aggregate's row before saving its events, which any
// read-modify-write of the aggregate does); otherwise they are delivered
// in the order the relays saw them commit, each still exactly once.
//
// A relay's read of its own partitions is a plain SELECT: it locks and
// writes nothing. A claim that leases rows (every claim under
// WithRowLeases, and a claim by IDs of events whose partition no live
// relay owns) locks candidates with FOR UPDATE SKIP LOCKED, checks, when
// ordered, with one indexed count per candidate aggregate that the
// aggregate's candidates are exactly its first undelivered events (the
// count sees rows another relay is claiming at that moment, which SKIP
// LOCKED hides), and leases the rows that pass. On Postgres that is one
// statement; on MySQL/MariaDB, without UPDATE ... RETURNING, one short
// transaction of three statements. An aggregate that fails the check is
// left for a later claim. On SQLite, which has one writer at a time, it
// is one statement.
//
// Every Postgres claim that leases rows runs in a transaction with
// synchronous_commit and jit off (SET LOCAL, so nothing leaks to the
// pooled connection): the commit of a lease does not wait for the disk
// (a lease lost in a server crash only makes its events claimable again,
// as an expired one would), and the planner, which prices the order check
// high, does not compile every claim. Marks, fails and saves stay
// synchronous.
//
// On Postgres the table keeps half of each page free (fillfactor 50), so
// that a row lease, which touches no indexed column, is a HOT update that
// writes no index entry, and it has only the indexes a statement uses:
// each one is written by every save and every mark. Postgres picks the
// claim's index from table statistics; run autovacuum (the default), or
// ANALYZE the table after loading a large backlog by hand.
// Aggregates held behind a buried or backing-off event are skipped by
// every claim; a very long held backlog (hundreds of thousands of events
// behind one poison event) therefore makes each claim scan it.
//
// # Clock
//
// Partition leases and heartbeats are on the database's clock, and a
// Store measures how long its own leases hold with the monotonic clock,
// from before it sent the heartbeat: a relay whose wall clock is wrong, or jumps, never takes
// or keeps a partition another relay holds. The times of events (created,
// due, synced, buried), and the row leases of claims by IDs and of
// WithRowLeases, come from the application's clock in UTC, at microsecond
// precision. A relay whose clock is off only retries early or late; with
// row leases, relays on several machines must have clocks that agree to
// well within a lease (NTP is plenty).
//
// # MySQL and MariaDB
//
// Times are stored in DATETIME(6) columns as UTC wall time and read back
// as text, so they are right whatever the DSN says about parseTime, loc or
// the session time_zone; no DSN parameter is required. Keep
// max_allowed_packet at its default or above: Insert splits batches past
// 8 MiB of payload.
//
// # SQLite
//
// Use a file database in WAL mode with a busy timeout, so that readers do
// not block the writer and concurrent writers (relays, Migrate) wait for
// the lock instead of failing with SQLITE_BUSY. With modernc.org/sqlite:
//
//	file:/var/lib/app/app.db?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)
//
// Times are TEXT ('2006-01-02 15:04:05.000000', UTC), which sorts in time
// order and which SQLite's date functions read. Schema-qualified table
// names are not supported. A transaction that the service holds open
// holds SQLite's only write lock, so relays wait for it. So does a relay
// process stopped (SIGSTOP, a debugger) inside one of its own short
// transactions: with no server to end that transaction, every writer of
// the file, the service included, waits until the process goes on or
// dies. Its partition moves to another relay only once that lock is free.
//
// # Watching the outbox
//
// Get, List and Stats give operators the figures they used to query by
// hand; the columns keep the names that plain SQL on the table uses:
//
//	SELECT COUNT(*) FROM outbox_events WHERE synced_at IS NULL AND dead_at IS NULL;
//	SELECT MIN(created_at) FROM outbox_events WHERE synced_at IS NULL AND dead_at IS NULL;
//	SELECT id, attempts, last_error FROM outbox_events WHERE dead_at IS NOT NULL;
//	-- average sync latency, Postgres
//	SELECT AVG(synced_at - created_at) FROM outbox_events WHERE synced_at IS NOT NULL;
//	-- MySQL
//	SELECT AVG(TIMESTAMPDIFF(MICROSECOND, created_at, synced_at)) / 1e6 FROM outbox_events WHERE synced_at IS NOT NULL;
//	-- SQLite
//	SELECT AVG(julianday(synced_at) - julianday(created_at)) * 86400 FROM outbox_events WHERE synced_at IS NOT NULL;
//
// A buried (dead) event keeps its row, its attempts and its last error.
// Requeue replays buried events (by ID, by type or all); by hand, set
// dead_at = NULL, attempts = 0 and next_attempt_at to the current UTC time.
//
// # Running the tests
//
// The SQLite tests always run. The Postgres and MySQL tests run against
// real servers named by OUTBOX_TEST_POSTGRES (a URL such as
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable) and
// OUTBOX_TEST_MYSQL (a go-sql-driver DSN such as
// root@tcp(127.0.0.1:3306)/test). Each test works on its own randomly
// named table and removes it with Drop, which touches nothing else.
package sqlstore
