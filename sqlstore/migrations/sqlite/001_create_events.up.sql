-- +goose Up
-- The outbox table. One row per event; synced_at IS NULL means pending.
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', written by the
-- application's clock: they sort in time order and SQLite's date
-- functions (julianday, unixepoch) read them.
CREATE TABLE IF NOT EXISTS outbox_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    topic           TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL DEFAULT '',
    payload         BLOB    NOT NULL,
    headers         TEXT    NULL,
    created_at      TEXT    NOT NULL,
    synced_at       TEXT    NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NULL,
    next_attempt_at TEXT    NOT NULL,
    claim_token     TEXT    NULL,
    locked_until    TEXT    NULL,
    dead_at         TEXT    NULL
);

-- Claims walk the pending events in save order.
CREATE INDEX IF NOT EXISTS outbox_events_pending_idx
    ON outbox_events (seq)
    WHERE synced_at IS NULL AND dead_at IS NULL;

-- Per-aggregate order.
CREATE INDEX IF NOT EXISTS outbox_events_aggregate_idx
    ON outbox_events (aggregate_id, seq);

-- Statistics by event type.
CREATE INDEX IF NOT EXISTS outbox_events_type_idx
    ON outbox_events (event_type);
