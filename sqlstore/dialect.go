package sqlstore

import (
	"fmt"
	"strings"
	"time"
)

// Dialect names a family of SQL databases the Store speaks to.
type Dialect string

// The supported dialects.
const (
	Postgres Dialect = "postgres" // PostgreSQL 12 or later (pgx stdlib or lib/pq)
	MySQL    Dialect = "mysql"    // MySQL 8.0 or later, MariaDB 10.6 or later (go-sql-driver/mysql)
	SQLite   Dialect = "sqlite"   // SQLite 3.35 or later (modernc.org/sqlite or mattn/go-sqlite3)
)

// dialect is what differs between databases: placeholder and quoting
// style, how times travel and which locking clauses exist. Everything
// else is shared SQL; table names and migrations are internal/sqlschema's.
type dialect struct {
	name Dialect

	// placeholder returns the n-th (1-based) bind parameter.
	placeholder func(n int) string
	// quote quotes an identifier.
	quote func(ident string) string

	// maxParams is the most bind parameters one statement may carry.
	maxParams int
	// maxStatementBytes bounds the payload and header bytes of one
	// multi-row INSERT (0: unbounded).
	maxStatementBytes int

	// returning: UPDATE ... RETURNING exists, so a claim is one statement.
	returning bool
	// skipLocked: SELECT ... FOR UPDATE SKIP LOCKED exists.
	skipLocked bool
	// arrays: a list of IDs can travel as one TEXT[] parameter.
	arrays bool

	// timeArg turns a UTC time into a bind parameter.
	timeArg func(t time.Time) any
	// timeCol is the select expression that reads time column col back
	// as something dbTime can scan.
	timeCol func(col string) string
	// castTime and castText type a bind parameter used inside a CASE
	// expression, where the database cannot infer its type.
	castTime func(ph string) string
	castText func(ph string) string
}

var dialects = map[Dialect]*dialect{
	Postgres: postgresDialect,
	MySQL:    mysqlDialect,
	SQLite:   sqliteDialect,
}

func lookupDialect(d Dialect) (*dialect, error) {
	dd, ok := dialects[d]
	if !ok {
		return nil, fmt.Errorf("sqlstore: unknown dialect %q (want %q, %q or %q)", d, Postgres, MySQL, SQLite)
	}
	return dd, nil
}

func sameExpr(ph string) string { return ph }

// dbTime scans a time column whatever form the driver hands it in: a
// time.Time (pgx, or MySQL with parseTime), or text in timeLayout or RFC
// 3339. NULL scans as the zero time. Text carries no zone and is UTC.
type dbTime struct{ time.Time }

// Scan implements sql.Scanner.
func (t *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Time = time.Time{}
		return nil
	case time.Time:
		t.Time = v.UTC()
		return nil
	case []byte:
		return t.parse(string(v))
	case string:
		return t.parse(v)
	}
	return fmt.Errorf("sqlstore: cannot scan %T as a time", src)
}

func (t *dbTime) parse(s string) error {
	s = strings.TrimSpace(s)
	for _, layout := range [...]string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00"} {
		if v, err := time.Parse(layout, s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("sqlstore: cannot parse time %q", s)
}
