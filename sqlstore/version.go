package sqlstore

import (
	"context"
	"fmt"
)

// LatestVersion returns the schema version Migrate brings a table of
// dialect d to: the number of its newest migration.
func LatestVersion(d Dialect) (int, error) {
	ms, err := ddl.Migrations(d)
	if err != nil {
		return 0, err
	}
	return ms[len(ms)-1].Version, nil
}

// Version returns the schema version the table is at, as recorded by
// Migrate in <table>_migrations. A table never migrated (no migrations
// table) is an error from the database.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM "+s.t.MigrationsTable()).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlstore: read the schema version from %s: %w", s.t.MigrationsTable(), err)
	}
	return v, nil
}
