package inbox

import "github.com/eventsync/outbox/internal/sqlschema"

// Dialect names a family of SQL databases. It is sqlstore.Dialect: one
// value configures both packages.
type Dialect = sqlschema.Dialect

// The supported dialects, those of sqlstore.
const (
	Postgres = sqlschema.Postgres // PostgreSQL 12 or later
	MySQL    = sqlschema.MySQL    // MySQL 8.0 or later, MariaDB 10.6 or later
	SQLite   = sqlschema.SQLite   // SQLite 3.35 or later
)

// inserts are, per dialect, the statement that records an event unless
// its ID is there: %s is the table; parameters are id, topic, type, time.
// It affects one row when it inserted and none for a duplicate. Bind
// parameters, quoting and times are the dialect's sqlschema.Syntax.
var inserts = map[Dialect]string{
	Postgres: "INSERT INTO %s (id, topic, event_type, processed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
	// INSERT IGNORE affects no row for a duplicate whatever the DSN's
	// clientFoundRows says (ON DUPLICATE KEY UPDATE would count it as
	// found). The errors it would turn into warnings cannot happen:
	// Process checks the ID's length and the other values fit.
	MySQL:  "INSERT IGNORE INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?)",
	SQLite: "INSERT INTO %s (id, topic, event_type, processed_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
}
