package sqlstore

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/eventsync/outbox"
)

// DefaultTable is the outbox table's name unless WithTable says otherwise.
const DefaultTable = "outbox_events"

// MaxTableNameLength is the longest table name (without its schema)
// WithTable accepts: the index names and the migrations table append up to
// 15 characters, and Postgres cuts identifiers at 63.
const MaxTableNameLength = 48

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// table is a validated, optionally schema-qualified table name.
type table struct {
	d      *dialect
	schema string // "" unless qualified
	name   string
	quoted string // ready to use in SQL
}

// newTable validates name ("" for DefaultTable): one or two plain SQL
// identifiers (letters, digits, underscores; not starting with a digit)
// joined by a dot. Nothing else ever reaches SQL text, and the quoted form
// keeps reserved words usable.
func newTable(d *dialect, name string) (table, error) {
	if name == "" {
		name = DefaultTable
	}
	bad := func(why string) (table, error) {
		return table{}, fmt.Errorf("sqlstore: table name %q %s: %w", name, why, outbox.ErrInvalidConfig)
	}
	t := table{d: d, name: name}
	if schema, rest, ok := strings.Cut(name, "."); ok {
		if !d.schemas {
			return bad(fmt.Sprintf("is schema-qualified, which %s does not support", d.name))
		}
		if !identRE.MatchString(schema) || len(schema) > 63 {
			return bad("has a schema that is not a plain SQL identifier (letters, digits and underscores, at most 63)")
		}
		t.schema, t.name = schema, rest
	}
	if !identRE.MatchString(t.name) {
		return bad("is not a plain SQL identifier (letters, digits and underscores, not starting with a digit, optionally schema.table)")
	}
	if len(t.name) > MaxTableNameLength {
		return bad(fmt.Sprintf("is longer than %d characters", MaxTableNameLength))
	}
	t.quoted = d.quote(t.name)
	if t.schema != "" {
		t.quoted = d.quote(t.schema) + "." + t.quoted
	}
	return t, nil
}

// qualified returns the name as configured: schema.table or table.
func (t table) qualified() string {
	if t.schema == "" {
		return t.name
	}
	return t.schema + "." + t.name
}

// migrations returns the quoted name of the table that records applied
// migrations: the table's name with "_migrations" appended, in its schema.
func (t table) migrations() string {
	m := t.d.quote(t.name + "_migrations")
	if t.schema != "" {
		m = t.d.quote(t.schema) + "." + m
	}
	return m
}
