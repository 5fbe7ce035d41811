package sqlstore

import "github.com/eventsync/outbox/internal/sqlschema"

// mysqlDialect: MySQL 8 and MariaDB have SKIP LOCKED but MariaDB has no
// UPDATE ... RETURNING, so a claim is a short transaction. Times travel
// as text in sqlschema.TimeLayout and are read back with CAST(... AS CHAR), so they
// are UTC whatever the DSN says about parseTime and loc.
var mysqlDialect = &dialect{
	name:        MySQL,
	placeholder: sqlschema.QuestionMark,
	quote:       sqlschema.Backtick,
	maxParams:   65535,
	// A multi-row INSERT is one packet when the DSN sets
	// interpolateParams=true; stay well under MariaDB's default
	// max_allowed_packet (16 MiB).
	maxStatementBytes: 8 << 20,
	returning:         false,
	skipLocked:        true,
	timeArg:           sqlschema.TimeText,
	timeCol:           func(col string) string { return "CAST(" + col + " AS CHAR)" },
	castTime:          func(ph string) string { return "CAST(" + ph + " AS DATETIME(6))" },
	castText:          sameExpr,
}
