// Package stockdb is the sqlc code of the example: Queries over a DBTX,
// which a pgx.Tx, *pgx.Conn or *pgxpool.Pool satisfies.
//
// The comments on the query methods come from query.sql, where sqlc
// reads them, so go generate keeps them. sqlc writes no comments on the
// other names; theirs are added by hand and must be added again after
// go generate.
package stockdb
