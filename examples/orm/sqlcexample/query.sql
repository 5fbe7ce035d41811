-- name: CreateStock :exec
INSERT INTO stocks (sku, qty) VALUES ($1, $2);

-- name: GetStock :one
SELECT sku, qty FROM stocks WHERE sku = $1;

-- name: SetStockQty :execrows
UPDATE stocks SET qty = $2 WHERE sku = $1;
