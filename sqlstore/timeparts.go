package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/internal/sqlschema"
)

// The defaults of WithTimePartitions.
const (
	// DefaultPartitionPeriod is how much save time one partition of a
	// time-partitioned table covers.
	DefaultPartitionPeriod = 24 * time.Hour
	// DefaultPartitionAhead is how far past the clock partitions are
	// created: the runway. Relays extend it every ten minutes, and every
	// partition costs each read an index probe, so it is short.
	DefaultPartitionAhead = 2 * 24 * time.Hour
)

// Upkeep of the time partitions.
const (
	// timePartsEvery is how often a relay (Maintain) creates the
	// partitions its runway needs.
	timePartsEvery = 10 * time.Minute
	// timePartsLockTimeout bounds the wait for a lock of each partition
	// change (lock_timeout): a DETACH waits for an ACCESS EXCLUSIVE lock
	// on the table, and the statements behind it wait with it. A change
	// that times out is tried again at the next turn.
	timePartsLockTimeout = "500ms"
	// timePartsMaxCreate bounds the partitions one turn creates.
	timePartsMaxCreate = 400
	// defaultRowsCap bounds the count of rows in the DEFAULT partition.
	defaultRowsCap = 100_000
	// partitionStorage are the storage parameters of every partition,
	// those migrations 004 and 005 set on the table.
	partitionStorage = " WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01," +
		" autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0)"
	// defaultPartSuffix names the DEFAULT partition: <table>_default.
	defaultPartSuffix = "_default"
	// timeLayoutVersion is the schema version layouts/ creates.
	timeLayoutVersion = 8
)

//go:embed layouts/*.sql
var layoutFiles embed.FS

// WithTimePartitions makes Migrate create the outbox table partitioned by
// save time (Postgres only; see "Time partitions" in
// docs/databases-and-migrations.md): declarative RANGE partitions on
// created_at, each period wide (0: DefaultPartitionPeriod; a whole number
// of hours that divides a day, or a whole number of days), created ahead
// of the clock (0: DefaultPartitionAhead) by Migrate and by every relay
// (Maintain), and a DEFAULT partition, normally empty, that takes what
// no partition covers, so that Save never fails for want of one. With
// outbox.WithRetention, a partition past the retention age whose events
// were all delivered is detached and dropped: no row is deleted. A
// partition that holds a dead event is kept until the event is
// re-queued and delivered, or deleted.
//
// The layout is chosen when the table is created: Migrate with it on a
// table that exists unpartitioned is an error (the document says how to
// move such a table). Every Store of a time-partitioned table, relays
// and tools alike, must be given the option.
func WithTimePartitions(period, ahead time.Duration) Option {
	return func(o *options) { o.TimePartitions, o.Period, o.Ahead = true, period, ahead }
}

// timeParts is the configuration WithTimePartitions gives a Store.
type timeParts struct {
	period, ahead time.Duration
}

// newTimeParts checks the options of WithTimePartitions.
func newTimeParts(d Dialect, o options) (*timeParts, error) {
	if !o.TimePartitions {
		return nil, nil
	}
	tp := &timeParts{period: o.Period, ahead: o.Ahead}
	if tp.period == 0 {
		tp.period = DefaultPartitionPeriod
	}
	if tp.ahead == 0 {
		tp.ahead = DefaultPartitionAhead
	}
	day := 24 * time.Hour
	switch {
	case d != Postgres:
		return nil, fmt.Errorf("sqlstore: WithTimePartitions needs Postgres: %w", outbox.ErrInvalidConfig)
	case tp.period < time.Hour || tp.period%time.Hour != 0 || (day%tp.period != 0 && tp.period%day != 0):
		return nil, fmt.Errorf("sqlstore: time partitions of %v: want whole hours that divide a day, or whole days: %w", tp.period, outbox.ErrInvalidConfig)
	case tp.ahead < 0:
		return nil, fmt.Errorf("sqlstore: time partitions created %v ahead: negative: %w", tp.ahead, outbox.ErrInvalidConfig)
	}
	return tp, nil
}

// createTimePartitioned creates the time-partitioned table (layouts/)
// under Migrate's lock when it does not exist, and records migrations 1
// to 8 as applied; a table that exists must be partitioned already.
func (s *Store) createTimePartitioned(ctx context.Context) error {
	layout, err := layoutFiles.ReadFile("layouts/postgres_time_partitioned.sql")
	if err != nil {
		return err
	}
	ms, err := ddl.Migrations(Postgres)
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: connect: %w", err)
	}
	defer conn.Close()
	return ddl.Locked(ctx, conn, s.t, func(q sqlschema.Querier) error {
		if _, err := q.ExecContext(ctx, s.t.MigrationsDDL()); err != nil {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
		var kind sql.NullString
		if err := q.QueryRowContext(ctx, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", s.t.Quoted).Scan(&kind); err != nil && err != sql.ErrNoRows {
			return fmt.Errorf("sqlstore: migrate: %w", err)
		}
		switch kind.String {
		case "p":
			return nil // partitioned already: Migrate goes on as usual
		case "":
		default:
			return fmt.Errorf("sqlstore: migrate: table %s exists and is not partitioned by time; WithTimePartitions chooses the layout of a new table (see \"Time partitions\" in docs/databases-and-migrations.md to move one): %w",
				s.t.Qualified(), outbox.ErrInvalidConfig)
		}
		for _, stmt := range sqlschema.Statements(string(layout)) {
			if _, err := q.ExecContext(ctx, s.t.Rename(stmt)); err != nil {
				return fmt.Errorf("sqlstore: migrate: time-partitioned layout: %w", err)
			}
		}
		if _, err := q.ExecContext(ctx, "CREATE TABLE "+s.t.Sibling(defaultPartSuffix)+" PARTITION OF "+s.t.Quoted+" DEFAULT"+partitionStorage); err != nil {
			return fmt.Errorf("sqlstore: migrate: default partition: %w", err)
		}
		for _, m := range ms {
			if m.Version > timeLayoutVersion {
				break
			}
			if _, err := q.ExecContext(ctx, "INSERT INTO "+s.t.MigrationsTable()+" (version, name, applied_at) VALUES ($1, $2, $3)",
				m.Version, m.Name, s.now()); err != nil {
				return fmt.Errorf("sqlstore: migrate: record %s: %w", m.Name, err)
			}
		}
		return nil
	})
}

// timePart is one partition of the table: its name and range.
type timePart struct {
	name      string
	from, to  time.Time
	isDefault bool
	// fromMin: no lower bound (MINVALUE, as the old table moved into the
	// layout has; from is then zero); unbounded: no upper bound
	// (MAXVALUE), which maintenance and retention leave alone.
	fromMin, unbounded bool
	quotedName         string
}

// listTimeParts returns the table's partitions, the bounded ones in
// range order, and the DEFAULT one if any.
func (s *Store) listTimeParts(ctx context.Context, q sqlschema.Querier) (parts []timePart, def *timePart, err error) {
	db, ok := q.(interface {
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	})
	if !ok {
		return nil, nil, fmt.Errorf("sqlstore: time partitions: cannot query on %T", q)
	}
	rows, err := db.QueryContext(ctx, `SELECT c.relname, n.nspname, c.relpartbound IS NOT NULL AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
	(regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
	(regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = to_regclass($1)`, s.t.Quoted)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	defer rows.Close()
	sx := s.sx
	for rows.Next() {
		var p timePart
		var schema string
		var from, to sql.NullTime
		if err := rows.Scan(&p.name, &schema, &p.isDefault, &from, &to); err != nil {
			return nil, nil, fmt.Errorf("sqlstore: time partitions: %w", err)
		}
		p.quotedName = sx.Quote(schema) + "." + sx.Quote(p.name)
		p.from, p.to = from.Time.UTC(), to.Time.UTC()
		if p.isDefault {
			def = &p
			continue
		}
		p.fromMin, p.unbounded = !from.Valid, !to.Valid
		if p.fromMin {
			p.from = time.Time{}
		}
		parts = append(parts, p)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	slices.SortFunc(parts, func(a, b timePart) int {
		switch {
		case a.unbounded != b.unbounded:
			if a.unbounded {
				return 1
			}
			return -1
		case a.unbounded:
			return a.from.Compare(b.from)
		}
		return a.to.Compare(b.to)
	})
	return parts, def, nil
}

// TimePartitionStatus is the state of a time-partitioned outbox table
// (TimePartitions, MaintainTimePartitions).
type TimePartitionStatus struct {
	// Partitioned reports whether the table is partitioned by save time;
	// the other fields are zero when it is not.
	Partitioned bool
	// Partitions counts the time partitions, the DEFAULT one aside.
	Partitions int
	// Period is the width of the newest partition.
	Period time.Duration
	// Oldest is where the oldest partition starts (zero when it has no
	// lower bound: the old table of a table moved to this layout), and
	// End where the newest ends.
	Oldest, End time.Time
	// Runway is how far past now the partitions reach without a gap: a
	// Save up to now + Runway lands in a partition of its own period.
	// Zero or negative when no partition covers now (saves then go to
	// the DEFAULT partition): the negative figure is how long ago the
	// newest partition ended.
	Runway time.Duration
	// DefaultRows counts the rows in the DEFAULT partition (up to
	// 100,000): zero unless the runway ran out, or events were saved
	// with a time before the oldest partition. Maintenance moves rows in
	// the DEFAULT partition into the partitions it creates.
	DefaultRows int64
	// Default reports whether the table has a DEFAULT partition.
	Default bool
}

// TimePartitions reports the state of the table's time partitions (see
// WithTimePartitions): how many there are, the runway ahead of the clock
// and the rows in the DEFAULT partition. It reads the catalog and counts
// the DEFAULT partition's rows; it changes nothing. On a table that is
// not partitioned it returns a zero status.
func (s *Store) TimePartitions(ctx context.Context) (TimePartitionStatus, error) {
	if s.Dialect() != Postgres {
		return TimePartitionStatus{}, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return TimePartitionStatus{}, fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	defer conn.Close()
	return s.timePartStatus(ctx, conn)
}

// timePartStatus reads the status on conn.
func (s *Store) timePartStatus(ctx context.Context, conn *sql.Conn) (TimePartitionStatus, error) {
	var kind sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", s.t.Quoted).Scan(&kind); err != nil && err != sql.ErrNoRows {
		return TimePartitionStatus{}, fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	if kind.String != "p" {
		return TimePartitionStatus{}, nil
	}
	parts, def, err := s.listTimeParts(ctx, conn)
	if err != nil {
		return TimePartitionStatus{}, err
	}
	st := runwayOf(parts, s.now())
	if def != nil {
		st.Default = true
		if err := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %d) d", def.quotedName, defaultRowsCap)).Scan(&st.DefaultRows); err != nil {
			return st, fmt.Errorf("sqlstore: time partitions: count the default partition: %w", err)
		}
	}
	return st, nil
}

// runwayOf sums up parts (in range order) at now.
func runwayOf(parts []timePart, now time.Time) TimePartitionStatus {
	st := TimePartitionStatus{Partitioned: true, Partitions: len(parts)}
	var bounded []timePart
	for _, p := range parts {
		if !p.unbounded {
			bounded = append(bounded, p)
		}
	}
	if len(bounded) == 0 {
		return st
	}
	newest := bounded[len(bounded)-1]
	st.Oldest, st.End = bounded[0].from, newest.to
	if !newest.fromMin {
		st.Period = newest.to.Sub(newest.from)
	}
	for i, p := range bounded {
		if now.Before(p.from) || !now.Before(p.to) {
			continue
		}
		end := p.to
		for _, n := range bounded[i+1:] {
			if !n.from.Equal(end) {
				break
			}
			end = n.to
		}
		st.Runway = end.Sub(now)
		return st
	}
	st.Runway = min(newest.to.Sub(now), 0)
	return st
}

// partName returns the name of the partition that starts at from.
func (s *Store) partName(from time.Time, period time.Duration) string {
	if period%(24*time.Hour) == 0 {
		return s.t.Name + "_p" + from.Format("20060102")
	}
	return s.t.Name + "_p" + from.Format("2006010215")
}

// timePartsLock returns the key of the advisory lock that serializes the
// changes of the table's partitions among relays.
func (s *Store) timePartsLock() int64 {
	h := fnv.New64a()
	h.Write([]byte("outbox_time_partitions:" + s.t.Qualified()))
	return int64(h.Sum64())
}

// Maintain implements storage.Maintainer: on a Store WithTimePartitions
// it creates the partitions the runway needs (MaintainTimePartitions)
// and returns when to call it again; on any other Store it does nothing
// and returns 0.
func (s *Store) Maintain(ctx context.Context) (next time.Duration, err error) {
	if s.tp == nil {
		return 0, nil
	}
	if _, err := s.MaintainTimePartitions(ctx); err != nil {
		return time.Minute, err
	}
	return timePartsEvery, nil
}

// MaintainTimePartitions creates the partitions that the table lacks
// from the end of its newest one to the clock plus the runway of
// WithTimePartitions (after an outage, every partition in between), each
// in a short transaction of its own, and returns the status after. A
// partition is created as a table of its own and attached, which locks
// the table in SHARE UPDATE EXCLUSIVE mode (saves go on) and the DEFAULT
// partition in ACCESS EXCLUSIVE mode; events in the DEFAULT partition
// that fall in the new partition's range are moved into it in the same
// transaction. Relays of the table run it every ten minutes (Maintain);
// they take turns by an advisory lock, and one that finds it held skips
// its turn. Each lock is waited for at most half a second (the turn is
// then retried later).
func (s *Store) MaintainTimePartitions(ctx context.Context) (TimePartitionStatus, error) {
	if s.tp == nil {
		return TimePartitionStatus{}, fmt.Errorf("sqlstore: time partitions: the Store has no WithTimePartitions: %w", outbox.ErrInvalidConfig)
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return TimePartitionStatus{}, fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	defer conn.Close()
	parts, def, err := s.listTimeParts(ctx, conn)
	if err != nil {
		return TimePartitionStatus{}, err
	}
	now := s.now()
	period, start := s.tp.period, now.Truncate(s.tp.period)
	var bounded []timePart
	for _, p := range parts {
		if !p.unbounded {
			bounded = append(bounded, p)
		}
	}
	if n := len(bounded); n > 0 {
		start = bounded[n-1].to
		if !bounded[n-1].fromMin {
			period = bounded[n-1].to.Sub(bounded[n-1].from)
		}
	}
	for i := 0; start.Before(now.Add(s.tp.ahead)) && i < timePartsMaxCreate; i++ {
		if err := s.createTimePart(ctx, conn, def, start, start.Add(period), period); err != nil {
			return TimePartitionStatus{}, err
		}
		start = start.Add(period)
	}
	return s.timePartStatus(ctx, conn)
}

// createTimePart creates the partition [from, to) in one transaction
// (see MaintainTimePartitions).
func (s *Store) createTimePart(ctx context.Context, conn *sql.Conn, def *timePart, from, to time.Time, period time.Duration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit: nothing to undo
	var got bool
	if err := tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock($1)", s.timePartsLock()).Scan(&got); err != nil {
		return fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	if !got {
		return nil // another relay maintains the table now
	}
	if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '"+timePartsLockTimeout+"'"); err != nil {
		return fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	name := s.partName(from, period)
	quoted := s.t.Sibling(strings.TrimPrefix(name, s.t.Name))
	var exists bool
	if err := tx.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", quoted).Scan(&exists); err != nil {
		return fmt.Errorf("sqlstore: time partitions: %w", err)
	}
	if exists {
		return nil // created by another relay since the list was read
	}
	stmts := []string{"CREATE TABLE " + quoted + " (LIKE " + s.t.Quoted + " INCLUDING DEFAULTS INCLUDING GENERATED)" + partitionStorage}
	if def != nil {
		var waiting bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+def.quotedName+" WHERE created_at >= $1 AND created_at < $2)", from, to).Scan(&waiting); err != nil {
			return fmt.Errorf("sqlstore: time partitions: read the default partition: %w", err)
		}
		if waiting {
			// Events saved past the runway: into the new partition before
			// it is attached, which Postgres refuses while the DEFAULT
			// partition holds rows of its range.
			stmts = append(stmts,
				"LOCK TABLE "+def.quotedName+" IN ACCESS EXCLUSIVE MODE",
				"WITH moved AS (DELETE FROM "+def.quotedName+" WHERE created_at >= $1 AND created_at < $2 RETURNING "+movedColumns+
					") INSERT INTO "+quoted+" ("+movedColumns+") SELECT "+movedColumns+" FROM moved")
		}
	}
	stmts = append(stmts, "ALTER TABLE "+s.t.Quoted+" ATTACH PARTITION "+quoted+" FOR VALUES FROM ($1) TO ($2)")
	for _, stmt := range stmts {
		var args []any
		if strings.Contains(stmt, "$1") {
			args = []any{from, to}
		}
		if strings.HasPrefix(stmt, "ALTER TABLE") {
			// DDL takes no parameters: the bounds as literals.
			stmt = strings.NewReplacer("$1", pgTimeLiteral(from), "$2", pgTimeLiteral(to)).Replace(stmt)
			args = nil
		}
		if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
			return fmt.Errorf("sqlstore: time partitions: create %s: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: time partitions: create %s: %w", name, err)
	}
	return nil
}

// movedColumns are the columns copied when events move out of the
// DEFAULT partition: all but the generated partition_no, which the new
// partition computes alike. seq and xid keep their values.
const movedColumns = "seq, id, topic, event_type, aggregate_id, payload, headers, created_at, synced_at, attempts, last_error," +
	" next_attempt_at, claim_token, locked_until, dead_at, priority, xid"

// pgTimeLiteral writes t as a TIMESTAMPTZ literal.
func pgTimeLiteral(t time.Time) string {
	return "'" + t.UTC().Format("2006-01-02 15:04:05.999999") + "+00'"
}
