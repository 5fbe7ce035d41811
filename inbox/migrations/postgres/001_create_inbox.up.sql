-- +goose Up
-- The inbox: one row per event a consumer processed, written in the same
-- transaction as the handler's writes. Times are the application's clock
-- (UTC).
CREATE TABLE IF NOT EXISTS inbox_events (
    id           VARCHAR(64)  PRIMARY KEY,
    topic        VARCHAR(255) NOT NULL DEFAULT '',
    event_type   VARCHAR(255) NOT NULL DEFAULT '',
    processed_at TIMESTAMPTZ  NOT NULL
);

-- Purge walks the oldest rows.
CREATE INDEX IF NOT EXISTS inbox_events_processed_idx
    ON inbox_events (processed_at);
