package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/eventsync/outbox"
)

// query builds one statement and its arguments, numbering placeholders in
// the dialect's style. Text and placeholders must be written in order.
type query struct {
	d    *dialect
	b    strings.Builder
	args []any
}

func newQuery(d *dialect) *query { return &query{d: d} }

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
	return q.d.placeholder(len(q.args))
}

// in returns "(p1, p2, ...)" for ids.
func (q *query) in(ids []string) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(q.arg(id))
	}
	b.WriteByte(')')
	return b.String()
}

func (q *query) String() string { return q.b.String() }

// selectColumns is the select list every read uses, in the column order
// eventRow expects; time columns go through the dialect's timeCol.
func selectColumns(d *dialect) string {
	t := func(col string) string { return d.timeCol(col) + " AS " + col }
	return "seq, id, topic, event_type, aggregate_id, priority, payload, headers, " +
		t("created_at") + ", " + t("synced_at") + ", attempts, last_error, " +
		t("next_attempt_at") + ", " + t("dead_at")
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
