package sqlstore

import "github.com/eventsync/outbox/internal/sqlschema"

// sqliteDialect: SQLite has one writer at a time, so UPDATE ... RETURNING
// is a claim on its own and needs no SKIP LOCKED. Concurrent writers wait
// for each other through the connection's busy_timeout. Times are TEXT in
// sqlschema.TimeLayout (UTC), which SQLite's date functions read and which sorts in
// time order.
var sqliteDialect = &dialect{
	name:        SQLite,
	placeholder: sqlschema.QuestionMark,
	quote:       sqlschema.DoubleQuote,
	// SQLITE_MAX_VARIABLE_NUMBER defaults to 32766 since SQLite 3.32.
	maxParams:  32766,
	returning:  true,
	skipLocked: false,
	timeArg:    sqlschema.TimeText,
	timeCol:    sameExpr,
	castTime:   sameExpr,
	castText:   sameExpr,
}
