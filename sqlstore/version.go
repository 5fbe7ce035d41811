package sqlstore

import (
	"context"
	"fmt"
)

// LatestVersion returns the schema version Migrate brings a table of
// dialect d to: the number of its newest migration.
func LatestVersion(d Dialect) (int, error) {
	ms, err := migrationsFor(d)
	if err != nil {
		return 0, err
	}
	return ms[len(ms)-1].version, nil
}

// Version returns the schema version the table is at, as recorded by
// Migrate in <table>_migrations. A table never migrated (no migrations
// table) is an error from the database.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+s.t.migrations()).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlstore: read the schema version from %s: %w", s.t.migrations(), err)
	}
	return v, nil
}
