-- name: CreateStock :exec
-- CreateStock inserts a stock row.
INSERT INTO stocks (sku, qty) VALUES ($1, $2);

-- name: GetStock :one
-- GetStock returns the stock row of a SKU, or pgx.ErrNoRows if none has it.
SELECT sku, qty FROM stocks WHERE sku = $1;

-- name: SetStockQty :execrows
-- SetStockQty sets the qty of a SKU and returns the number of rows
-- updated: 0 when no row has the SKU.
UPDATE stocks SET qty = $2 WHERE sku = $1;
