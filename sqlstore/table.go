package sqlstore

import "github.com/eventsync/outbox/internal/sqlschema"

// DefaultTable is the outbox table's name unless WithTable says otherwise.
const DefaultTable = "outbox_events"

// MaxTableNameLength is the longest table name (without its schema)
// WithTable accepts: the index names and the migrations table append up to
// 15 characters, and Postgres cuts identifiers at 63.
const MaxTableNameLength = 48

// table is a validated, optionally schema-qualified table name, with its
// parts as the statements use them.
type table struct {
	sqlschema.Table
	schema string // "" unless qualified
	name   string
	quoted string // ready to use in SQL
}

// newTable validates name ("" for DefaultTable): one or two plain SQL
// identifiers joined by a dot (see sqlschema.Schema.Table).
func newTable(d *dialect, name string) (table, error) {
	t, err := ddl.Table(string(d.name), name)
	if err != nil {
		return table{}, err
	}
	return table{Table: t, schema: t.Schema, name: t.Name, quoted: t.Quoted}, nil
}
