CREATE TABLE stocks (
  sku text PRIMARY KEY,
  qty integer NOT NULL
);
