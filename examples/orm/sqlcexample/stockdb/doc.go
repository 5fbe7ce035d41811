// Package stockdb is the sqlc code of the example: Queries over a DBTX,
// which a pgx.Tx, *pgx.Conn or *pgxpool.Pool satisfies.
package stockdb
