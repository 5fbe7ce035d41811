package inbox

import (
	"time"

	"github.com/eventsync/outbox/internal/sqlschema"
)

// Dialect names a family of SQL databases.
type Dialect string

// The supported dialects, as in sqlstore.
const (
	Postgres Dialect = "postgres" // PostgreSQL 12 or later
	MySQL    Dialect = "mysql"    // MySQL 8.0 or later, MariaDB 10.6 or later
	SQLite   Dialect = "sqlite"   // SQLite 3.35 or later
)

// dialect is what differs between databases: placeholders, how a
// duplicate insert is skipped and how times travel. Table names and
// migrations are internal/sqlschema's.
type dialect struct {
	name        Dialect
	placeholder func(n int) string
	// insert is the statement that records an event unless its ID is
	// there: %s is the table; parameters are id, topic, type, time. It
	// affects one row when it inserted and none for a duplicate.
	insert  string
	timeArg func(t time.Time) any
}

var dialects = map[Dialect]*dialect{
	Postgres: {
		name:        Postgres,
		placeholder: sqlschema.Dollar,
		insert:      "INSERT INTO %s (id, topic, event_type, processed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
		timeArg:     sqlschema.TimeUTC,
	},
	MySQL: {
		name:        MySQL,
		placeholder: sqlschema.QuestionMark,
		// INSERT IGNORE affects no row for a duplicate whatever the DSN's
		// clientFoundRows says (ON DUPLICATE KEY UPDATE would count it as
		// found). The errors it would turn into warnings cannot happen:
		// Process checks the ID's length and the other values fit.
		insert:  "INSERT IGNORE INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?)",
		timeArg: sqlschema.TimeText,
	},
	SQLite: {
		name:        SQLite,
		placeholder: sqlschema.QuestionMark,
		insert:      "INSERT INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
		timeArg:     sqlschema.TimeText,
	},
}
