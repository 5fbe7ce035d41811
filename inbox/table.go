package inbox

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/eventsync/outbox"
)

// DefaultTable is the inbox table's name unless WithTable says otherwise.
const DefaultTable = "inbox_events"

// MaxTableNameLength is the longest table name (without its schema)
// WithTable accepts, so that index and migrations table names stay under
// Postgres's 63 characters.
const MaxTableNameLength = 48

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// table is a validated, optionally schema-qualified table name.
type table struct {
	d      *dialect
	schema string
	name   string
	quoted string
}

// newTable validates name ("" for DefaultTable): one or two plain SQL
// identifiers joined by a dot. Nothing else ever reaches SQL text.
func newTable(d *dialect, name string) (table, error) {
	if name == "" {
		name = DefaultTable
	}
	bad := func(why string) (table, error) {
		return table{}, fmt.Errorf("inbox: table name %q %s: %w", name, why, outbox.ErrInvalidConfig)
	}
	t := table{d: d, name: name}
	if schema, rest, ok := strings.Cut(name, "."); ok {
		if !d.schemas {
			return bad(fmt.Sprintf("is schema-qualified, which %s does not support", d.name))
		}
		if !identRE.MatchString(schema) || len(schema) > 63 {
			return bad("has a schema that is not a plain SQL identifier")
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

func (t table) qualified() string {
	if t.schema == "" {
		return t.name
	}
	return t.schema + "." + t.name
}

func (t table) migrations() string {
	m := t.d.quote(t.name + "_migrations")
	if t.schema != "" {
		m = t.d.quote(t.schema) + "." + m
	}
	return m
}
