package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/eventsync/outbox"
)

// query builds one statement and its arguments, numbering placeholders in
// the dialect's style. Text and placeholders must be written in order.
type query struct {
	sx   *syntax
	b    strings.Builder
	args []any
}

func newQuery(sx *syntax) *query { return &query{sx: sx} }

// sql appends SQL text.
func (q *query) sql(parts ...string) *query {
	for _, p := range parts {
		q.b.WriteString(p)
	}
	return q
}

// arg adds a bind parameter and returns its placeholder.
func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return q.sx.Placeholder(len(q.args))
}

// in returns the condition "col IN (ids)", or with not "col NOT IN
// (ids)". Where the dialect has arrays the IDs travel as one array
// parameter, so a batch of a thousand is one short statement to parse and
// plan, not a thousand placeholders.
func (q *query) in(col string, ids []string, not bool) string {
	var b strings.Builder
	b.WriteString(col)
	if q.sx.arrays {
		if not {
			b.WriteString(" <> ALL(CAST(")
		} else {
			b.WriteString(" = ANY(CAST(")
		}
		b.WriteString(q.arg(textArray(ids)))
		b.WriteString(" AS TEXT[]))")
		return b.String()
	}
	if not {
		b.WriteString(" NOT")
	}
	b.WriteString(" IN (")
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.arg(id))
	}
	b.WriteByte(')')
	return b.String()
}

// seqIn returns the condition "col IN (seqs)": one BIGINT[] parameter
// where the dialect has arrays (one statement text for any list, which a
// driver's statement cache keeps), else the numbers written out.
func (q *query) seqIn(col string, seqs []int64) string {
	if q.sx.arrays {
		return col + " = ANY(CAST(" + q.arg("{"+intList(seqs)+"}") + " AS BIGINT[]))"
	}
	return col + " IN (" + intList(seqs) + ")"
}

// intList writes numbers separated by commas.
func intList(ns []int64) string {
	var b strings.Builder
	for i, n := range ns {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(n, 10))
	}
	return b.String()
}

// textArray writes ss as a Postgres array literal, every element quoted,
// so that any string (commas, quotes, backslashes, braces) reads back as
// itself.
func textArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(s[j])
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func (q *query) String() string { return q.b.String() }

// selectColumns is the select list every read uses, in the column order
// eventRow expects, each column name after prefix (a table alias and a
// dot, or empty); time columns go through the dialect's timeCol.
func selectColumns(sx *syntax, prefix string) string {
	return selectColumnsSynced(sx, prefix, prefix+"synced_at")
}

// selectColumnsSynced is selectColumns with synced read from the
// expression synced (watermarks: the time a partition's mark recorded an
// event's delivery).
func selectColumnsSynced(sx *syntax, prefix, synced string) string {
	var b strings.Builder
	for i, col := range [...]string{"seq", "id", "topic", "event_type", "aggregate_id", "priority", "payload", "headers",
		"created_at", "synced_at", "attempts", "last_error", "next_attempt_at", "dead_at"} {
		if i > 0 {
			b.WriteString(", ")
		}
		switch col {
		case "synced_at":
			b.WriteString(sx.timeCol(synced) + " AS " + col)
		case "created_at", "next_attempt_at", "dead_at":
			b.WriteString(sx.timeCol(prefix+col) + " AS " + col)
		default:
			b.WriteString(prefix + col)
		}
	}
	return b.String()
}

// eventRow is one row of the outbox table as selectColumns reads it.
type eventRow struct {
	Seq           int64          `db:"seq"`
	ID            string         `db:"id"`
	Topic         string         `db:"topic"`
	Type          string         `db:"event_type"`
	AggregateID   string         `db:"aggregate_id"`
	Priority      int            `db:"priority"`
	Payload       []byte         `db:"payload"`
	Headers       sql.NullString `db:"headers"`
	CreatedAt     dbTime         `db:"created_at"`
	SyncedAt      dbTime         `db:"synced_at"`
	Attempts      int            `db:"attempts"`
	LastError     sql.NullString `db:"last_error"`
	NextAttemptAt dbTime         `db:"next_attempt_at"`
	DeadAt        dbTime         `db:"dead_at"`

	// Head is the seq of the first undelivered event of the row's
	// aggregate, read only by the ordered claim of MySQL (headOf).
	Head sql.NullInt64 `db:"head"`
	// Partition is the row's partition, read only by the claims of
	// partition ownership (owner.go).
	Partition sql.NullInt64 `db:"partition_no"`
	// Leased is 1 for a row leased to a claim by IDs, read only by the
	// bulk claim of partition ownership.
	Leased sql.NullInt64 `db:"leased"`
	// Xid is the saving transaction's ID, read only by a Store with
	// watermarks (NULL: the event is delivered per row).
	Xid sql.NullInt64 `db:"xid"`
	// Branch is the part of a watermark read that returned the row (see
	// owner.readMarks).
	Branch sql.NullString `db:"branch"`
}

// field returns the destination of column col, or nil for a column an
// eventRow does not hold.
func (r *eventRow) field(col string) any {
	switch col {
	case "seq":
		return &r.Seq
	case "id":
		return &r.ID
	case "topic":
		return &r.Topic
	case "event_type":
		return &r.Type
	case "aggregate_id":
		return &r.AggregateID
	case "priority":
		return &r.Priority
	case "payload":
		return &r.Payload
	case "headers":
		return &r.Headers
	case "created_at":
		return &r.CreatedAt
	case "synced_at":
		return &r.SyncedAt
	case "attempts":
		return &r.Attempts
	case "last_error":
		return &r.LastError
	case "next_attempt_at":
		return &r.NextAttemptAt
	case "dead_at":
		return &r.DeadAt
	case "head":
		return &r.Head
	case "partition_no":
		return &r.Partition
	case "xid":
		return &r.Xid
	case "branch":
		return &r.Branch
	case "leased":
		return &r.Leased
	}
	return nil
}

func (r *eventRow) event() (*outbox.Event, error) {
	e := &outbox.Event{
		ID:          r.ID,
		Topic:       r.Topic,
		Type:        r.Type,
		AggregateID: r.AggregateID,
		Priority:    r.Priority,
		Payload:     r.Payload,
		CreatedAt:   r.CreatedAt.Time,
		Delivery: outbox.Delivery{
			Attempts:      r.Attempts,
			LastError:     r.LastError.String,
			NextAttemptAt: r.NextAttemptAt.Time,
			SyncedAt:      r.SyncedAt.Time,
			DeadAt:        r.DeadAt.Time,
		},
	}
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	if r.Headers.Valid && r.Headers.String != "" {
		if err := json.Unmarshal([]byte(r.Headers.String), &e.Headers); err != nil {
			return nil, fmt.Errorf("sqlstore: event %s: headers are not a JSON object of strings: %w", r.ID, err)
		}
	}
	return e, nil
}

// encodeHeaders returns headers as a JSON object (keys sorted), or nil
// (NULL) when there are none.
func encodeHeaders(h map[string]string) (any, error) {
	if len(h) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}
