-- +goose Up
-- The inbox: one row per event a consumer processed, written in the same
-- transaction as the handler's writes. Times are the application's clock
-- in UTC (DATETIME has no zone).
CREATE TABLE IF NOT EXISTS inbox_events (
    id           VARCHAR(64)  NOT NULL,
    topic        VARCHAR(255) NOT NULL DEFAULT '',
    event_type   VARCHAR(255) NOT NULL DEFAULT '',
    processed_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (id),
    KEY inbox_events_processed_idx (processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
