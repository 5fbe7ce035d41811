package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
)

// database is the service's connection with what differs between
// databases: the placeholder style (through sqlx.Rebind) and how to lock a
// row for the rest of a transaction.
type database struct {
	*sqlx.DB
	driver string // "sqlite", "pgx" or "mysql"
	stock  string // table names
	resv   string
}

// q rewrites a query written with ? placeholders for the driver, and puts
// the table names in: {stock} and {reservations}.
func (d *database) q(query string) string {
	query = strings.NewReplacer("{stock}", d.stock, "{reservations}", d.resv).Replace(query)
	return d.Rebind(query)
}

// forUpdate is the clause that locks the rows a SELECT reads until the
// transaction ends. SQLite has none and needs none: it runs one writing
// transaction at a time (the service begins them IMMEDIATE).
func (d *database) forUpdate() string {
	if d.driver == "sqlite" {
		return ""
	}
	return " FOR UPDATE"
}

// insertStockIfAbsent is an INSERT that does nothing, and reports no row
// affected, when the stock row already exists.
func (d *database) insertStockIfAbsent() string {
	const ins = "INSERT INTO {stock} (store_id, product_id, quantity, updated_at) VALUES (?, ?, ?, ?)"
	if d.driver == "mysql" {
		return d.q(ins + " ON DUPLICATE KEY UPDATE store_id = store_id")
	}
	return d.q(ins + " ON CONFLICT (store_id, product_id) DO NOTHING")
}

// createTables creates the business tables if they do not exist. The
// events table is the outbox's: sqlstore's Migrate creates it.
func (d *database) createTables(ctx context.Context) error {
	text, integer, ts := "VARCHAR(255)", "BIGINT", "TIMESTAMP"
	switch d.driver {
	case "sqlite":
		text, integer, ts = "TEXT", "INTEGER", "TIMESTAMP"
	case "pgx":
		ts = "TIMESTAMPTZ"
	case "mysql":
		ts = "DATETIME(6)"
	}
	stmts := []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	store_id   %[2]s NOT NULL,
	product_id %[2]s NOT NULL,
	quantity   %[3]s NOT NULL,
	updated_at %[4]s NOT NULL,
	PRIMARY KEY (store_id, product_id)
)`, d.stock, text, integer, ts),
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	id         %[2]s NOT NULL PRIMARY KEY,
	store_id   %[2]s NOT NULL,
	product_id %[2]s NOT NULL,
	quantity   %[3]s NOT NULL,
	created_at %[4]s NOT NULL
)`, d.resv, text, integer, ts),
	}
	if d.driver == "pgx" {
		// Instances started together would race: two concurrent CREATE
		// TABLE IF NOT EXISTS of one table can fail on Postgres with a
		// duplicate key in its catalog. A transaction-scoped advisory
		// lock makes them take turns.
		tx, err := d.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("create business tables: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", d.stock); err != nil {
			return fmt.Errorf("create business tables: lock: %w", err)
		}
		for _, s := range stmts {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("create business tables: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("create business tables: %w", err)
		}
		return nil
	}
	for _, s := range stmts {
		if _, err := d.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create business tables: %w", err)
		}
	}
	return nil
}
