-- +goose Up
-- The inbox: one row per event a consumer processed, written in the same
-- transaction as the handler's writes. Times are UTC text
-- 'YYYY-MM-DD HH:MM:SS.ffffff', written by the application's clock.
CREATE TABLE IF NOT EXISTS inbox_events (
    id           TEXT NOT NULL PRIMARY KEY,
    topic        TEXT NOT NULL DEFAULT '',
    event_type   TEXT NOT NULL DEFAULT '',
    processed_at TEXT NOT NULL
);

-- Purge walks the oldest rows.
CREATE INDEX IF NOT EXISTS inbox_events_processed_idx
    ON inbox_events (processed_at);
