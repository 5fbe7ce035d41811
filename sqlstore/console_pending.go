package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// PendingExactLimit is how many pending events Pending counts exactly on
// Postgres; past it, it estimates.
const PendingExactLimit = 100_000

// PendingFigures are the pending events of the table, as Pending reads
// them.
type PendingFigures struct {
	Total  int64            // pending events (backing off included)
	ByType map[string]int64 // Total by event type
	// OldestAge is the age of the oldest pending event, against the
	// store's clock; 0 with none. It is always exact (with watermarks,
	// past PendingExactLimit, that of the oldest first pending event in
	// save order of each partition).
	OldestAge time.Duration
	// Estimated reports that Total and ByType are the planner's
	// estimates: more than PendingExactLimit events are pending.
	Estimated bool
}

// Pending returns the pending figures of Stats at a cost bounded however
// large the backlog. It first counts at most PendingExactLimit+1 pending
// events through the index of pending events; up to the limit the
// figures are exact (Stats). Past it, on Postgres, the event types come
// from a skip scan of the index of pending events by type (one probe per
// type), the age of the oldest from its first entry per type, and the
// counts from the planner's estimate for each type, which is as fresh as
// the table's statistics (ANALYZE, autovacuum). MySQL and SQLite always
// count exactly. With watermarks, see markedPending: past the limit the
// oldest age is that of the first pending event in save order of each
// partition.
func (s *Store) Pending(ctx context.Context) (PendingFigures, error) {
	if s.marks && s.Dialect() == Postgres {
		return s.markedPending(ctx)
	}
	if s.Dialect() == Postgres {
		var n int64
		q := "SELECT COUNT(*) FROM (SELECT 1 FROM " + s.t.Quoted + " WHERE synced_at IS NULL AND dead_at IS NULL LIMIT " +
			fmt.Sprint(PendingExactLimit+1) + ") p"
		if err := s.db.QueryRowContext(ctx, q).Scan(&n); err != nil {
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: %w", err)
		}
		if n > PendingExactLimit {
			return s.pendingEstimate(ctx)
		}
	}
	st, err := s.Stats(ctx, 0)
	if err != nil {
		return PendingFigures{}, err
	}
	return PendingFigures{Total: st.Pending, ByType: st.PendingByType, OldestAge: st.OldestPendingAge}, nil
}

// pendingTypesQuery lists the types of the pending events, one index
// probe each (a recursive skip scan of the index on (event_type,
// created_at) of pending events), with the oldest creation time of each.
func (s *Store) pendingTypesQuery() string {
	pending := " FROM " + s.t.Quoted + " WHERE synced_at IS NULL AND dead_at IS NULL"
	return "WITH RECURSIVE t(typ) AS (SELECT MIN(event_type)" + pending +
		" UNION ALL SELECT (SELECT MIN(event_type)" + pending + " AND event_type > t.typ) FROM t WHERE t.typ IS NOT NULL)" +
		" SELECT typ, (SELECT MIN(created_at)" + pending + " AND event_type = t.typ) FROM t WHERE typ IS NOT NULL"
}

func (s *Store) pendingEstimate(ctx context.Context) (PendingFigures, error) {
	f := PendingFigures{ByType: map[string]int64{}, Estimated: true}
	rows, err := s.db.QueryContext(ctx, s.pendingTypesQuery())
	if err != nil {
		return PendingFigures{}, fmt.Errorf("sqlstore: pending: types: %w", err)
	}
	var oldest time.Time
	var types []string
	for rows.Next() {
		var typ string
		var first dbTime
		if err := rows.Scan(&typ, &first); err != nil {
			rows.Close()
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: types: %w", err)
		}
		types = append(types, typ)
		if !first.IsZero() && (oldest.IsZero() || first.Before(oldest)) {
			oldest = first.Time
		}
	}
	if err := rows.Close(); err != nil {
		return PendingFigures{}, fmt.Errorf("sqlstore: pending: types: %w", err)
	}
	if !oldest.IsZero() {
		f.OldestAge = max(s.now().Sub(oldest), 0)
	}
	for _, typ := range types {
		var plan string
		q := "EXPLAIN (FORMAT JSON) SELECT 1 FROM " + s.t.Quoted + " WHERE synced_at IS NULL AND dead_at IS NULL AND event_type = $1"
		if err := s.db.QueryRowContext(ctx, q, typ).Scan(&plan); err != nil {
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: estimate: %w", err)
		}
		var p []struct {
			Plan struct {
				Rows float64 `json:"Plan Rows"`
			}
		}
		if err := json.Unmarshal([]byte(plan), &p); err != nil || len(p) == 0 {
			return PendingFigures{}, fmt.Errorf("sqlstore: pending: estimate: cannot read the plan %q", plan)
		}
		f.ByType[typ] = int64(p[0].Plan.Rows)
		f.Total += int64(p[0].Plan.Rows)
	}
	return f, nil
}
