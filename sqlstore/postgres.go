package sqlstore

import "github.com/eventsync/outbox/internal/sqlschema"

// postgresDialect: UPDATE ... RETURNING with FOR UPDATE SKIP LOCKED makes
// a claim one statement; times travel as time.Time into TIMESTAMPTZ.
var postgresDialect = &dialect{
	name:        Postgres,
	placeholder: sqlschema.Dollar,
	quote:       sqlschema.DoubleQuote,
	maxParams:   65535,
	returning:   true,
	skipLocked:  true,
	arrays:      true,
	timeArg:     sqlschema.TimeUTC,
	timeCol:     sameExpr,
	castTime:    func(ph string) string { return "CAST(" + ph + " AS TIMESTAMPTZ)" },
	castText:    func(ph string) string { return "CAST(" + ph + " AS TEXT)" },
}
