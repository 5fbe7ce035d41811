package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// Membership is how long a live relay has been a member of the table's
// relays, and how long it stays one without renewing, both on the
// database's clock.
type Membership struct {
	Name string
	// Since is how long ago the relay joined (its row in <table>_relays
	// was made). A relay that died and came back under the same name
	// (WithRelayName) within a day keeps its first join.
	Since time.Duration
	// ExpiresIn is how long the relay counts as live without renewing:
	// when it passes, its partitions may be taken over.
	ExpiresIn time.Duration
}

// Memberships reads, in one statement, the live relays of the table (as
// Relays counts them) by name, with when each joined and when its
// membership expires, compared with the database's clock in the same
// statement. The table must be at the schema version that records joins
// (run Migrate).
func (s *Store) Memberships(ctx context.Context) ([]Membership, error) {
	now := s.d.dbNow()
	q := "SELECT owner, " + s.sx.timeCol("joined_at") + ", " + s.sx.timeCol("seen_until") + ", " + s.sx.timeCol(now) +
		" FROM " + s.t.Sibling(relaysSuffix) + " WHERE seen_until > " + now + " ORDER BY owner"
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: relay memberships: %w", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		var m Membership
		var joined, seen, dbNow dbTime
		if err := rows.Scan(&m.Name, &joined, &seen, &dbNow); err != nil {
			return nil, fmt.Errorf("sqlstore: relay memberships: %w", err)
		}
		m.Since = max(dbNow.Sub(joined.Time), 0)
		m.ExpiresIn = max(seen.Sub(dbNow.Time), 0)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: relay memberships: %w", err)
	}
	return out, nil
}
